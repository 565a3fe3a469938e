"""What the trust boundaries cost: key checks, the agent sandbox, the worker's data-only git.

    python -m bench.security [--rounds 200] [--files 2000]

1. API keys: one argon2id verification (a cache miss), a cached verification, and a real
   ``GET /profiles`` round trip through uvicorn with a key, against the same call with
   ``AUTH_DISABLED`` (loopback), so the per-request cost of auth shows on its own.
2. Agent spawn: ``/bin/true`` started plainly and through the sandbox argv (``unshare`` pid
   namespace + ``setpriv`` to another uid; only when run as root).
3. Collecting a job's work: ``RepoCache.changes`` (adopt the agent's commits, then a private
   index over the worktree's files, run as the job's uid when the worker is root) on a repo
   of ``--files`` files with a few changed, next to a plain ``git status`` there.

Prints a table, then one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from agenticore.apikeys import KeyStore, Role
from agenticore.config import Settings
from agenticore.models import Job, JobSpec
from agenticore.repos import RepoCache
from agenticore.sandbox import AgentIdentity, as_user, resolve_identity, sandboxed

REPO_ROOT = Path(__file__).resolve().parents[1]
console = Console()


def timed(action: Callable[[], object], rounds: int) -> dict[str, float]:
    """Median and p95 of ``rounds`` calls, in milliseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 3),
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def api(settings: Settings) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICORE_")}
    env |= settings.to_env() | {"PYTHONPATH": str(REPO_ROOT)}
    log = settings.home / "api.log"
    argv = [sys.executable, "-m", "agenticore.cli", "serve", "--port", str(settings.port)]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{settings.port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def bench_keys(root: Path, rounds: int) -> dict[str, Any]:
    settings = Settings(home=root / "keys-home", port=free_port())
    store = KeyStore(settings)
    _, key = store.create("bench", Role.VIEWER)
    uncached = KeyStore(settings.model_copy(update={"api_key_cache_seconds": 0}))
    figures: dict[str, Any] = {
        "verify_uncached": timed(lambda: uncached.verify(key), min(rounds, 30)),
        "verify_cached": timed(lambda: store.verify(key), rounds),
    }
    for name, values, headers in (
        ("request_with_key", {}, {"Authorization": f"Bearer {key}"}),
        ("request_auth_disabled", {"auth_disabled": True}, {}),
    ):
        served = settings.model_copy(update={"port": free_port(), **values})
        with api(served) as url, httpx.Client(base_url=url, headers=headers) as client:
            client.get("/profiles").raise_for_status()  # warm: the key is verified once
            figures[name] = timed(lambda c=client: c.get("/profiles"), rounds)  # type: ignore[misc]
    return figures


def bench_spawn(rounds: int) -> dict[str, Any]:
    def run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, start_new_session=True)

    figures: dict[str, Any] = {"plain": timed(lambda: run(["/bin/true"]), rounds)}
    if os.geteuid() == 0:
        nobody = AgentIdentity(65534, 65534, "nobody", isolated=True)
        sandbox_argv = sandboxed(["/bin/true"], nobody)
        figures["sandboxed"] = timed(lambda: run(sandbox_argv), rounds)
    return figures


def bench_collect(root: Path, files: int, rounds: int) -> dict[str, Any]:
    source = root / "src"
    source.mkdir()
    for n in range(files):
        folder = source / f"pkg{n % 50}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{n}.py").write_text(f"VALUE = {n}\n" * 20)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(source)], check=True)
    subprocess.run([*git, "-C", str(source), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(source), "commit", "-q", "-m", "init"], check=True)
    settings = Settings(home=root / "collect-home", allow_local_repos=True)
    cache = RepoCache(settings)
    cache.ensure(str(source))
    workspace = cache.create_workspace(Job.from_spec(JobSpec(task="x", repo_url=str(source))))
    for n in range(5):
        (workspace.path / f"pkg{n}" / f"mod{n}.py").write_text("changed\n")
    # the same question asked the agent's way: plain git status, as the agent
    status = as_user(["git", "-C", str(workspace.path), "status", "--porcelain"],
                     workspace.agent or resolve_identity(settings))  # fmt: skip
    env = os.environ | cache.agent_git_env(workspace)

    def plain_status() -> None:
        subprocess.run(status, check=True, capture_output=True, env=env)

    return {
        "files": files,
        "agents_isolated": resolve_identity(settings).isolated,
        "changes": timed(lambda: cache.changes(workspace), rounds),
        "git_status": timed(plain_status, rounds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agenticore-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)  # as root, agents get uids of their own: measure that mode
        results = {
            "keys": bench_keys(root, args.rounds),
            "spawn": bench_spawn(min(args.rounds, 100)),
            "collect": bench_collect(root, args.files, min(args.rounds, 20)),
        }
    table = Table("what", "median ms", "p95 ms", title="trust boundaries")
    for group, figures in results.items():
        for name, value in figures.items():
            if isinstance(value, dict):
                table.add_row(f"{group}: {name}", str(value["median_ms"]), str(value["p95_ms"]))
    console.print(table)
    print("BENCH_JSON " + json.dumps({"bench": "security", **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
