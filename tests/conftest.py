"""Session-wide real services: one Redis server and, per backend, one API and one worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agenticore.apikeys import KeyStore, Role
from agenticore.config import Settings
from tests.fake_forge import FakeForge
from tests.helpers import (
    FAKE_CLAUDE,
    PrivateRedis,
    SlowGit,
    free_port,
    make_remote,
    make_slow_git,
    pid_alive,
    redis_pings,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``AGENTICORE_TEST_REDIS_URL`` if set, else our own redis-server on a free port."""
    given = os.environ.get("AGENTICORE_TEST_REDIS_URL")
    if given:
        yield given
        return
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not on PATH; install it or set AGENTICORE_TEST_REDIS_URL")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_for(lambda: redis_pings(client), timeout=10, what="redis-server")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process see ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICORE_")}
    env.pop("CLAUDECODE", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env | settings.to_env()


FORGE_TOKEN = "ghp_fakeTokenThatMustNeverLeak0123456789"


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[FakeForge]:
    """A local forge serving ``acme/widgets`` (GitHub API) and ``gl/group/proj`` (GitLab API)
    over git smart HTTP; everything needs ``FORGE_TOKEN``."""
    root = tmp_path / "forge"
    make_remote(root / "acme", "widgets")
    make_remote(root / "gl" / "group", "proj")
    with FakeForge(root, token=FORGE_TOKEN) as server:
        yield server


def forge_settings(forge: FakeForge) -> dict[str, Any]:
    """Settings that point repos on ``forge`` at its APIs, with the token and quick retries."""
    return {
        "forges": {
            f"{forge.url}/": {"provider": "github", "api_url": forge.url, "token": FORGE_TOKEN},
            f"{forge.url}/gl/": {
                "provider": "gitlab",
                "api_url": f"{forge.url}/api/v4",
                "token": FORGE_TOKEN,
            },
        },
        "github_write_interval_seconds": 0,
        "pr_retry_backoff_seconds": 0.2,
        "pr_retry_backoff_max_seconds": 1,
        "public_url": "https://agenticore.example",
    }


@pytest.fixture
def make_settings(tmp_path: Path, redis_url: str) -> Callable[..., Settings]:
    """Settings for one test: its own home and, with Redis, its own key prefix."""

    def factory(backend: str = "embedded", **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "home",
            "claude_bin": str(FAKE_CLAUDE),
            "allow_local_repos": True,
            "kill_grace_seconds": 2,
            "redis_key_prefix": f"agtest-{uuid.uuid4().hex[:10]}",
        }
        if backend == "redis":
            values["redis_url"] = redis_url
        return Settings(**(values | overrides))

    return factory


@pytest.fixture(params=["redis", "embedded"])
def settings(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    """Runs the test once against Redis and once against the embedded file store."""
    return make_settings(request.param)


@dataclass
class Fleet:
    backend: str
    settings: Settings
    env: dict[str, str]
    api_url: str
    http: httpx.Client
    worker: subprocess.Popen[bytes]
    logs: Path
    admin_key: str  # sent by ``http``; AGENTICORE_API_KEY in ``env`` for the CLI

    def submit(self, **spec: Any) -> dict[str, Any]:
        response = self.http.post("/jobs", json=spec)
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        return body

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_worker_ready(self, log: Path) -> None:
        wait_for(lambda: b" ready." in log.read_bytes(), timeout=60, what="the worker")

    def replace_worker(self) -> None:
        """Starts a new worker in place of one that died (the old one must be gone)."""
        log = self.logs / f"worker-{free_port()}.log"
        self.worker = start_worker(self.env, log)
        self.wait_worker_ready(log)

    def add_worker(self, name: str, **overrides: str) -> subprocess.Popen[bytes]:
        """Starts another worker on the fleet's broker, store and HOME, as another node's
        would run: its own name and, from ``overrides``, settings of its own (e.g.
        ``worktree_root``). The caller stops it."""
        env = self.env | {"AGENTICORE_WORKER_NAME": name}
        env |= {f"AGENTICORE_{k.upper()}": v for k, v in overrides.items()}
        log = self.logs / f"worker-{name}.log"
        worker = start_worker(env, log)
        self.wait_worker_ready(log)
        return worker

    def agent_pid(self, job_id: str) -> int | None:
        """The job's live agent process, from the file record (every backend writes it)."""
        record = json.loads((self.settings.jobs_dir / f"{job_id}.json").read_text())
        pid: int | None = record.get("agent_pid")
        return pid if pid and pid_alive(pid) else None

    def start_job(self, task: str) -> str:
        """Submits a job and returns its id once a worker runs it."""
        job_id: str = self.submit(task=task)["id"]
        wait_for(lambda: self.job(job_id)["status"] == "running", timeout=30, what="job start")
        return job_id

    def wait_until_final(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        final = {"succeeded", "failed", "cancelled", "timed_out", "dead"}
        return wait_for(
            lambda: job if (job := self.job(job_id))["status"] in final else None,
            timeout=timeout,
            interval=0.2,
            what=f"job {job_id} to end",
        )


@contextmanager
def running_fleet(backend: str, home: Path, redis_url: str, **overrides: Any) -> Iterator[Fleet]:
    """A real API (uvicorn) and a real prefork Celery worker on their own home and keys."""
    port = free_port()
    values: dict[str, Any] = {
        "home": home,
        "redis_url": redis_url if backend == "redis" else None,
        "redis_key_prefix": f"agtest-{uuid.uuid4().hex[:10]}",
        "claude_bin": str(FAKE_CLAUDE),
        "allow_local_repos": True,
        "kill_grace_seconds": 2,
        "max_parallel_jobs": 2,
        "port": port,
        "api_url": f"http://127.0.0.1:{port}",
        "worker_name": f"test-{backend}",
        "retry_backoff_seconds": 0.5,
        "retry_backoff_max_seconds": 2,
        # high enough that crash tests on the shared fleet never open it
        "breaker_threshold": 50,
        # a killed worker's leases lapse quickly
        "lease_seconds": 3,
        # fleets run side by side: each worker serves its metrics on a free port
        "worker_metrics_port": 0,
    }
    settings = Settings(**(values | overrides))
    _, admin_key = KeyStore(settings).create("test-admin", Role.ADMIN)
    env = settings_env(settings) | {"AGENTICORE_API_KEY": admin_key}
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    worker = start_worker(env, logs / "worker.log")
    api = start_api(env, port, logs / "api.log")
    http = httpx.Client(base_url=settings.api_url, timeout=30, headers=bearer(admin_key))
    fleet = Fleet(backend, settings, env, settings.api_url, http, worker, logs, admin_key)
    try:
        wait_for(lambda: _healthy(http), timeout=30, what="the API")
        fleet.wait_worker_ready(logs / "worker.log")
        yield fleet
    finally:
        http.close()
        for proc in (api, fleet.worker):
            proc.send_signal(signal.SIGTERM)
        for proc in (api, fleet.worker):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# what the fake agent reports through, let through to agents by ``fleet_on``
AGENT_REPORTS = {"FAKE_CLAUDE_STARTS_FILE": "agent-starts", "FAKE_CLAUDE_RUNS_FILE": "agent-runs"}


@contextmanager
def fleet_on(
    tmp_path: Path, *, aof: bool = False, **overrides: Any
) -> Iterator[tuple[Fleet, PrivateRedis]]:
    """A fleet on its own Redis (``tmp_path/redis``, home ``tmp_path/home``). Every agent
    start is a line in ``tmp_path/agent-starts``; every run's start and successful end
    one in ``tmp_path/agent-runs`` (see the fake's header)."""
    server = PrivateRedis(tmp_path / "redis", aof=aof)
    server.start()
    settings = {"agent_env_allow": list(AGENT_REPORTS)} | overrides
    try:
        with pytest.MonkeyPatch.context() as patch:
            for variable, name in AGENT_REPORTS.items():
                patch.setenv(variable, str(tmp_path / name))
            with running_fleet("redis", tmp_path / "home", server.url, **settings) as fleet:
                yield fleet, server
    finally:
        server.stop()


def restart(server: PrivateRedis, fleet: Fleet) -> None:
    """Redis back. The worker rode it out: kombu's Redis transport would end the worker on
    the closed channel (``workers.transport`` keeps it up)."""
    server.start()
    time.sleep(1)
    assert fleet.worker.poll() is None, "the worker died with the Redis connection"


@pytest.fixture(scope="session", params=["redis", "embedded"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Fleet]:
    """One fleet per backend, shared by the whole session."""
    home = tmp_path_factory.mktemp(f"fleet-{request.param}")
    with running_fleet(request.param, home, redis_url) as fleet:
        yield fleet


@pytest.fixture(params=["redis", "embedded"])
def own_fleet(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    """A fleet of the test's own, for tests that stop, kill or reconfigure it. Settings come
    from ``@pytest.mark.fleet_settings(...)``; leases are short so lost jobs move fast."""
    marker = request.node.get_closest_marker("fleet_settings")
    overrides = {"lease_seconds": 3} | (marker.kwargs if marker else {})
    with running_fleet(request.param, tmp_path, redis_url, **overrides) as fleet:
        yield fleet


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agenticore.cli", "worker", "--loglevel", "info"],
        env=env, cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def start_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agenticore.cli", "serve", "--port", str(port)],
        env=env, cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


@contextmanager
def extra_api(fleet: Fleet, **overrides: str) -> Iterator[httpx.Client]:
    """A second API on the fleet's broker and store, with other settings (e.g. limits)."""
    port = free_port()
    env = fleet.env | {f"AGENTICORE_{k.upper()}": v for k, v in overrides.items()}
    api = start_api(env, port, fleet.logs / f"api-{port}.log")
    base_url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base_url, timeout=30, headers=bearer(fleet.admin_key))
    try:
        wait_for(lambda: _healthy(http), timeout=30, what="the extra API")
        yield http
    finally:
        http.close()
        api.terminate()
        api.wait(timeout=20)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def slow_git_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SlowGit:
    """A git that can be slowed on request, first on the PATH of the fleets the test starts."""
    (tmp_path / "git").mkdir()
    slow_git = make_slow_git(tmp_path / "git")
    monkeypatch.setenv("PATH", f"{slow_git.bin_dir}{os.pathsep}{os.environ['PATH']}")
    return slow_git
