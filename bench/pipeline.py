"""Pipeline benchmark: submit -> agent start latency and jobs/s, next to the floor.

    python -m bench.pipeline [--jobs 200] [--concurrency 4] [--backend redis|embedded|both]

Everything runs on this machine, started and stopped by the benchmark: a private
``redis-server`` (redis backend only), a temporary ``AGENTICORE_HOME``, the API
(``agenticore serve``), a job worker (``agenticore worker``) and, for the floor, a second
worker serving the no-op task of ``bench/noop.py`` on its own queue. The agent is the fake
``claude`` of the test suite, told to answer at once (``@fake result ok``), so the figures
are Agenticore's own overhead.

Per backend, in order:

1. floor: one bare process spawn (``true``, and the fake agent itself), then a no-op Celery
   task round trip on the same broker, one at a time and all at once;
2. warm-up: ``concurrency`` jobs, not counted;
3. idle: ``--serial`` jobs one at a time (each submitted when the previous one ended), the
   per-job latency without queueing, the figure to compare with the floor;
4. burst: ``--jobs`` jobs submitted as fast as a few threads can, then waited for. Their
   submit -> start latency is mostly time spent queued behind earlier jobs.

Clocks: submit times are ``time.time()`` in this process, just before each POST; pickup and
finish are the job record's ``started_at``/``finished_at`` (the worker's ``datetime.now``,
same host, same wall clock); spawn is the mtime of ``jobs/<id>/stderr.log``, which the
supervisor creates immediately before ``Popen``; agent start is the mtime of the session
folder the agent creates under ``agents/<id>/.claude/projects/`` as its first file, moments
after it starts (the fake's ``FAKE_CLAUDE_STARTS_FILE`` lines carry no job id, so they are
used to count starts and to check that proxy). File mtimes are the kernel's coarse clock:
they lag ``time.time()`` by up to one tick (~4 ms).

Prints a table, then one line ``BENCH_JSON {...}``. Exits 1 if any job did not succeed.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from celery.exceptions import TimeoutError as CeleryTimeout
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agenticore.apikeys import KeyStore, Role
from agenticore.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_CLAUDE = REPO_ROOT / "tests" / "fake_claude" / "claude"
FAKE_ARGS = ["-p", "@fake result ok", "--output-format", "stream-json", "--verbose"]
TASK = "@fake result ok"
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
NOOP_TASK = "bench.noop"  # bench/noop.py; sent by name, as the API sends jobs
NOOP_QUEUE = "bench-noop"
SUBMITTERS = 4
STOP_TIMEOUT = 20.0
CPU_PARTS = ("api", "worker", "agents", "redis", "bench_client")

# wide enough for the table when the output is a pipe or a file
console = Console(width=None if sys.stdout.isatty() else 120)
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark could not run (as opposed to: it ran and jobs failed)."""


# -- small helpers ------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Percentile ``q`` (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def epoch(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


# -- processes ----------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Services:
    """Every process the benchmark started; ``stop_all`` ends them, newest first."""

    running: list[Service] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], logs: Path, cwd: Path = REPO_ROOT
    ) -> Service:
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        service = Service(name, proc, log)
        self.running.append(service)
        return service

    def check(self) -> None:
        for service in self.running:
            code = service.proc.poll()
            if code is not None:
                raise BenchError(
                    f"{service.name} exited with {code}; last lines of {service.log}:\n"
                    f"{service.tail()}"
                )

    def stop(self, service: Service) -> None:
        _terminate([service.proc])
        self.running.remove(service)

    def stop_all(self) -> None:
        _terminate([s.proc for s in reversed(self.running)])
        self.running.clear()


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str, services: Services) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check()
        result = probe()
        if result:
            return result
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


def child_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    """The environment that makes a child process see ``settings`` (as tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTICORE_")}
    env.pop("CLAUDECODE", None)
    env |= settings.to_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env | extra


@contextmanager
def redis_server(workdir: Path, services: Services) -> Iterator[str]:
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise BenchError(
            "redis-server is not on PATH: install Redis (e.g. apt-get install redis-server) "
            "or run with --backend embedded"
        )
    port = free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    service = services.start("redis", argv, os.environ.copy(), workdir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(pings, timeout=15, what="redis-server", services=services)
        yield url
    finally:
        client.close()
        if service in services.running:
            services.stop(service)


# -- the benchmark of one backend ---------------------------------------------------------


@dataclass
class JobTiming:
    submitted: float
    record: dict[str, Any]
    pickup: float | None = None
    spawn: float | None = None
    agent: float | None = None
    finished: float | None = None


class Bench:
    def __init__(
        self,
        backend: str,
        args: argparse.Namespace,
        redis_url: str | None,
        redis_pid: int | None = None,
    ) -> None:
        self.backend = backend
        self.redis_pid = redis_pid
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix=f"agenticore-bench-{backend}-"))
        self.home = self.tmp / "home"
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.starts_file = self.tmp / "agent-starts.txt"
        port = free_port()
        tag = uuid.uuid4().hex[:8]
        self.settings = Settings(
            home=self.home,
            redis_url=redis_url,
            redis_key_prefix=f"bench-{tag}",
            claude_bin=str(FAKE_CLAUDE),
            allow_local_repos=True,
            max_parallel_jobs=args.concurrency,
            port=port,
            api_url=f"http://127.0.0.1:{port}",
            worker_name=f"bench-{backend}-{tag}",
            # the fake agent reports its starts there; agents get only allow-listed names
            agent_env_allow=["FAKE_CLAUDE_STARTS_FILE"],
        )
        self.env = child_env(self.settings, {"FAKE_CLAUDE_STARTS_FILE": str(self.starts_file)})
        self.services = Services()
        # the API wants a key; an operator's, as a real submitter would hold
        _, key = KeyStore(self.settings).create("bench", Role.OPERATOR)
        self.http = httpx.Client(
            base_url=self.settings.api_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=SUBMITTERS + 2),
        )
        self.failed: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        try:
            self._start()
            floor = self._floor()
            pipeline = self._pipeline()
            return {"backend": self.backend} | pipeline | floor | self._log_findings()
        finally:
            self.http.close()
            self.services.stop_all()

    def _start(self) -> None:
        me = [sys.executable, "-m", "agenticore.cli"]
        c = str(self.args.concurrency)
        worker = self.services.start(
            "worker",
            [*me, "worker", "--concurrency", c, "--loglevel", "info"],
            self.env,
            self.logs,
        )
        noop = self.services.start(
            "noop-worker",
            [sys.executable, "-m", "celery", "-A", "bench.noop", "worker", "-l", "info",
             "-Q", NOOP_QUEUE, "-c", c, "-n", f"noop-{self.settings.worker_name}@%h",
             "--pool", "prefork"],
            self.env, self.logs,
        )  # fmt: skip
        self.services.start(
            "api", [*me, "serve", "--port", str(self.settings.port)], self.env, self.logs
        )

        def healthy() -> bool:
            try:
                return self.http.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, what="the API /healthz", services=self.services)
        for service in (worker, noop):
            wait_for(
                lambda s=service: b" ready." in s.log.read_bytes(),  # type: ignore[misc]
                timeout=90,
                what=f"the {service.name} to be ready",
                services=self.services,
            )
        self.noop_worker = noop

    # -- floor -----------------------------------------------------------------------------

    def _floor(self) -> dict[str, Any]:
        console.log(f"{self.backend}: floor: bare spawns")
        spawn_dir = self.tmp / "spawn"
        spawn_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}
        env["CLAUDE_CONFIG_DIR"] = str(spawn_dir / ".claude")
        env.pop("FAKE_CLAUDE_STARTS_FILE", None)
        true_exe = shutil.which("true") or "/bin/true"
        n = self.args.spawns
        spawn_true = _time_runs([true_exe], n, spawn_dir, env)
        # the worker execs the script (its shebang finds python3 on PATH); also time it
        # under this interpreter directly, which skips PATH lookup and any pyenv shim
        spawn_fake = _time_runs([str(FAKE_CLAUDE), *FAKE_ARGS], n, spawn_dir, env)
        spawn_fake_py = _time_runs(
            [sys.executable, str(FAKE_CLAUDE), *FAKE_ARGS], n, spawn_dir, env
        )

        from workers.app import make_celery

        console.log(f"{self.backend}: floor: no-op Celery round trips")
        celery = make_celery(self.settings)
        # the file result backend is polled: poll it often so polling is not the floor
        poll = 0.005

        def call() -> Any:
            return celery.send_task(NOOP_TASK, queue=NOOP_QUEUE)

        try:
            for _ in range(5):  # warm-up: connections, pools, pub/sub
                call().get(timeout=60, interval=poll)
            rtts = []
            for _ in range(self.args.noop):
                t0 = time.perf_counter()
                call().get(timeout=60, interval=poll)
                rtts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pending = [call() for _ in range(self.args.noop)]
            for result in pending:
                result.get(timeout=120, interval=poll)
            burst = time.perf_counter() - t0
        except CeleryTimeout:
            self.services.check()  # a dead worker explains it best
            raise BenchError("a no-op task got no result within its timeout") from None
        finally:
            celery.close()
        self.services.stop(self.noop_worker)  # idle or not, it should not share the CPU
        return {
            "noop_rtt_ms_p50": ms(pct(rtts, 50)),
            "noop_rtt_ms_p99": ms(pct(rtts, 99)),
            "noop_per_s": round(self.args.noop / burst, 1),
            "spawn_true_ms_p50": ms(pct(spawn_true, 50)),
            "spawn_fake_claude_ms_p50": ms(pct(spawn_fake, 50)),
            "spawn_fake_claude_py_ms_p50": ms(pct(spawn_fake_py, 50)),
            "floor_latency_ms": ms(pct(rtts, 50) + pct(spawn_fake, 50)),  # type: ignore[operator]
        }

    # -- pipeline --------------------------------------------------------------------------

    def _pipeline(self) -> dict[str, Any]:
        c = self.args.concurrency
        console.log(f"{self.backend}: warm-up: {c} jobs")
        self._burst(c)
        serial = min(self.args.serial, self.args.jobs)
        console.log(f"{self.backend}: idle: {serial} jobs, one at a time")
        idle = [self._one(timeout=60) for _ in range(serial)]
        console.log(f"{self.backend}: burst: {self.args.jobs} jobs at concurrency {c}")
        started = time.time()
        cpu_before = self._cpu()
        burst = self._burst(self.args.jobs)
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in self._cpu().items()}
        console.log(f"{self.backend}: burst done in {time.time() - started:.1f}s")
        starts = self._agent_starts()
        out: dict[str, Any] = {
            "jobs": self.args.jobs,
            "concurrency": c,
            "warmup_jobs": c,
            "serial_jobs": serial,
        }
        out |= _latencies("", burst)
        out |= _latencies("idle_", idle)
        first_submit = min(t.submitted for t in burst)
        ends = [t.finished for t in burst if t.finished is not None]
        wall = max(ends) - first_submit if ends else None
        out["wall_s"] = round(wall, 3) if wall else None
        out["jobs_per_s"] = round(len(burst) / wall, 2) if wall else None
        out["submit_per_s"] = round(len(burst) / (self._last_submit_end - first_submit), 1)
        out["post_ms_p50"] = ms(pct(self._post_seconds, 50))
        out["post_ms_p99"] = ms(pct(self._post_seconds, 99))
        expected = c + serial + len(burst)
        out["agent_starts_counted"] = len(starts)
        out["agent_starts_expected"] = expected
        # sanity of the agent-start proxy: how long before the session folder's mtime did the
        # nearest start line of the fake fall (exact clock, but only nearest, not matched)
        lags = []
        for timing in burst + idle:
            if timing.agent is not None:
                i = bisect.bisect_right(starts, timing.agent + 0.004)
                if i:
                    lags.append(timing.agent - starts[i - 1])
        out["agent_start_proxy_lag_ms_p50"] = ms(pct(lags, 50))
        out["attempts_max"] = max(t.record.get("attempts") or 0 for t in burst + idle)
        out["failed_jobs"] = len(self.failed)
        # CPU seconds the burst cost (wall clock above is first submit -> last finish)
        for name, seconds in cpu.items():
            out[f"cpu_{name}_ms_per_job"] = round(seconds * 1000 / len(burst), 2)
        if wall:
            out["cpu_busy_cores"] = round(sum(cpu.values()) / wall, 2)
        return out

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far: API, worker (Celery processes), agents (what the worker's
        processes spawned), redis, and this process (submitters and pollers)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {"bench_client": usage.ru_utime + usage.ru_stime}
        by_name = {s.name: s.proc.pid for s in self.services.running}
        if self.redis_pid:
            out["redis"] = sum(_proc_cpu(self.redis_pid))
        if "api" in by_name:
            out["api"] = sum(_tree_cpu(by_name["api"]))
        if "worker" in by_name:
            main = by_name["worker"]
            own, reaped = _proc_cpu(main)
            worker, agents = own + reaped, 0.0
            for child in _children(main):  # the prefork pool
                own, reaped = _proc_cpu(child)
                worker += own
                agents += reaped + sum(sum(_tree_cpu(pid)) for pid in _children(child))
            out["worker"], out["agents"] = worker, agents
        return out

    def _agent_starts(self) -> list[float]:
        try:
            lines = self.starts_file.read_text().split()
        except FileNotFoundError:
            return []
        return sorted(float(x) for x in lines[::2])

    def _one(self, timeout: float) -> JobTiming:
        body = {"task": self.args.task, "wait": True, "wait_timeout_seconds": timeout}
        submitted = time.time()
        response = self.http.post("/jobs", json=body, timeout=timeout + 30)
        if response.status_code not in (200, 202):
            raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
        record = response.json()
        if record["status"] not in TERMINAL:
            record = self._wait_terminal([record["id"]], timeout)[0]
        return self._timing(submitted, record)

    def _burst(self, n: int) -> list[JobTiming]:
        submitted: list[tuple[float, float, str]] = []
        lock = threading.Lock()

        def submit(_: int) -> None:
            t0 = time.time()
            response = self.http.post("/jobs", json={"task": self.args.task})
            t1 = time.time()
            if response.status_code not in (200, 202):
                raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
            with lock:
                submitted.append((t0, t1, response.json()["id"]))

        with ThreadPoolExecutor(SUBMITTERS) as pool:
            list(pool.map(submit, range(n)))
        submitted.sort()
        self._last_submit_end = max(t1 for _, t1, _ in submitted)
        self._post_seconds = [t1 - t0 for t0, t1, _ in submitted]
        records = self._wait_terminal([job_id for *_, job_id in submitted], self.args.timeout)
        return [self._timing(t0, rec) for (t0, _, _), rec in zip(submitted, records, strict=True)]

    def _wait_terminal(self, ids: list[str], timeout: float) -> list[dict[str, Any]]:
        """Polls the oldest unfinished job only: one cheap GET per poll, whatever N is."""
        deadline = time.monotonic() + timeout
        records: list[dict[str, Any]] = []
        for job_id in ids:
            while True:
                response = self.http.get(f"/jobs/{job_id}")
                response.raise_for_status()
                record = response.json()
                if record["status"] in TERMINAL:
                    records.append(record)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{len(ids) - len(records)} of {len(ids)} jobs still unfinished after "
                        f"{timeout:.0f}s (job {job_id} is {record['status']})"
                    )
                self.services.check()
                time.sleep(0.1)
        return records

    def _timing(self, submitted: float, record: dict[str, Any]) -> JobTiming:
        timing = JobTiming(submitted, record)
        if record["status"] != "succeeded":
            self.failed.append(record)
        timing.pickup = epoch(record.get("started_at"))
        timing.finished = epoch(record.get("finished_at"))
        job_dir = self.home / "jobs" / record["id"]
        with suppress(OSError):
            stderr = (job_dir / "stderr.log").stat()
            if stderr.st_size == 0:  # untouched since the supervisor created it
                timing.spawn = stderr.st_mtime
        agent_home = self.home / "agents" / record["id"]
        sessions = sorted((agent_home / ".claude" / "projects").glob("*"))
        if len(sessions) == 1:
            timing.agent = sessions[0].stat().st_mtime
        return timing

    def _log_findings(self) -> dict[str, Any]:
        counts = {}
        for name in ("worker", "api"):
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            counts[f"{name}_log_warnings"] = sum(
                1 for line in text.splitlines() if "WARNING" in line or "ERROR" in line
            )
        return counts


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of one process; zeros if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(x) for x in (task / "children").read_text().split()]
    return pids


def _tree_cpu(pid: int) -> tuple[float, float]:
    own, reaped = _proc_cpu(pid)
    for child in _children(pid):
        child_own, child_reaped = _tree_cpu(child)
        own, reaped = own + child_own, reaped + child_reaped
    return own, reaped


def _time_runs(argv: list[str], n: int, cwd: Path, env: dict[str, str]) -> list[float]:
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)  # warm
    seconds = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - t0)
    return seconds


def _latencies(prefix: str, timings: list[JobTiming]) -> dict[str, Any]:
    spans = {
        "submit_to_pickup": ("submitted", "pickup"),
        "submit_to_spawn": ("submitted", "spawn"),
        "submit_to_agent_start": ("submitted", "agent"),
        "submit_to_finish": ("submitted", "finished"),
        "pickup_to_spawn": ("pickup", "spawn"),
        "spawn_to_agent_start": ("spawn", "agent"),
        "agent_start_to_finish": ("agent", "finished"),
    }
    out: dict[str, Any] = {}
    for name, (a, b) in spans.items():
        values = [
            getattr(t, b) - getattr(t, a)
            for t in timings
            if getattr(t, a) is not None and getattr(t, b) is not None
        ]
        out[f"{prefix}{name}_ms_p50"] = ms(pct(values, 50))
        out[f"{prefix}{name}_ms_p99"] = ms(pct(values, 99))
    return out


# -- output -------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def print_table(r: dict[str, Any]) -> None:
    table = Table(
        title=f"Agenticore pipeline, backend={r['backend']}, {r['jobs']} jobs, "
        f"concurrency {r['concurrency']} ({os.cpu_count()} CPUs)",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("p50", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("clock / note", style="dim")

    def row(label: str, key: str, note: str) -> None:
        table.add_row(
            label, _fmt(r.get(f"{key}_ms_p50"), " ms"), _fmt(r.get(f"{key}_ms_p99"), " ms"), note
        )

    table.add_section()
    table.add_row(f"[bold]burst: {r['jobs']} jobs submitted at once", "", "", "")
    row("  POST /jobs", "post", "time.time() around the request, 4 submitter threads")
    row("  submit -> pickup", "submit_to_pickup", "record started_at (worker wall clock)")
    row("  submit -> spawn", "submit_to_spawn", "stderr.log mtime (fs clock, ~4 ms ticks)")
    row("  submit -> agent start", "submit_to_agent_start", "agent's session dir mtime (fs)")
    row("  submit -> finished", "submit_to_finish", "record finished_at")
    row("  pickup -> spawn", "pickup_to_spawn", "per-job worker overhead before Popen")
    row("  spawn -> agent start", "spawn_to_agent_start", "interpreter start of the fake")
    row("  agent start -> finished", "agent_start_to_finish", "agent run + recording the end")
    table.add_row(
        "  end-to-end throughput",
        _fmt(r["jobs_per_s"], " jobs/s"),
        "",
        f"{r['jobs']} / (last finished_at - first submit) = {r['wall_s']} s",
    )
    table.add_row("  submit rate", _fmt(r["submit_per_s"], " jobs/s"), "", "POSTs accepted")
    parts = {n: r[f"cpu_{n}_ms_per_job"] for n in CPU_PARTS if f"cpu_{n}_ms_per_job" in r}
    table.add_row(
        "  CPU time per job",
        _fmt(round(sum(parts.values()), 1), " ms"),
        "",
        ", ".join(f"{n} {v:.0f}" for n, v in parts.items())
        + f"; {_fmt(r.get('cpu_busy_cores'))} cores busy",
    )
    table.add_section()
    table.add_row(f"[bold]idle: {r['serial_jobs']} jobs one at a time", "", "", "")
    row("  submit -> pickup", "idle_submit_to_pickup", "no queueing: compare with noop RTT")
    row("  submit -> spawn", "idle_submit_to_spawn", "")
    row("  submit -> agent start", "idle_submit_to_agent_start", "compare with floor below")
    row("  pickup -> spawn", "idle_pickup_to_spawn", "")
    row("  submit -> finished", "idle_submit_to_finish", "")
    table.add_section()
    table.add_row("[bold]floor (same broker, same run)", "", "", "")
    row("  no-op Celery task round trip", "noop_rtt", "serial send_task().get(), perf_counter")
    table.add_row("  no-op Celery tasks, all at once", _fmt(r["noop_per_s"], " /s"), "", "")
    table.add_row("  spawn `true`", _fmt(r["spawn_true_ms_p50"], " ms"), "", "subprocess.run")
    table.add_row(
        "  spawn fake claude (exec script)",
        _fmt(r["spawn_fake_claude_ms_p50"], " ms"),
        "",
        "as the worker runs it: shebang, PATH python3",
    )
    table.add_row(
        "  spawn fake claude (sys.executable)",
        _fmt(r["spawn_fake_claude_py_ms_p50"], " ms"),
        "",
        "",
    )
    table.add_row(
        "  floor latency", _fmt(r["floor_latency_ms"], " ms"), "", "noop RTT p50 + fake spawn p50"
    )
    table.add_section()
    table.add_row("failed jobs", str(r["failed_jobs"]), "", f"max attempts {r['attempts_max']}")
    table.add_row(
        "agent starts (starts file)",
        f"{r['agent_starts_counted']}/{r['agent_starts_expected']}",
        "",
        f"proxy lag p50 {_fmt(r['agent_start_proxy_lag_ms_p50'], ' ms')}",
    )
    table.add_row(
        "WARNING/ERROR log lines",
        f"worker {r['worker_log_warnings']}",
        "",
        f"api {r['api_log_warnings']}",
    )
    console.print(table)


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=200, help="burst size (quick: --jobs 20)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency")
    parser.add_argument("--backend", choices=["redis", "embedded", "both"], default="redis")
    parser.add_argument("--serial", type=int, default=20, help="idle jobs, one at a time")
    parser.add_argument("--noop", type=int, default=200, help="no-op Celery tasks")
    parser.add_argument("--spawns", type=int, default=50, help="bare spawns per command")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the burst")
    parser.add_argument("--task", default=TASK, help="the fake agent's instructions")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.noop < 1 or args.spawns < 1:
        parser.error("--jobs, --concurrency, --noop and --spawns must be positive")
    return args


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so `finally` tears everything down
    backends = ["redis", "embedded"] if args.backend == "both" else [args.backend]
    results: dict[str, dict[str, Any]] = {}
    outer = Services()
    benches: list[Bench] = []
    redis_dir = Path(tempfile.mkdtemp(prefix="agenticore-bench-redis-"))
    try:
        with redis_server(redis_dir, outer) if "redis" in backends else _no_redis() as redis_url:
            for backend in backends:
                redis_pid = next((s.proc.pid for s in outer.running if s.name == "redis"), None)
                if backend == "redis":
                    bench = Bench(backend, args, redis_url, redis_pid)
                else:
                    bench = Bench(backend, args, None)
                benches.append(bench)
                results[backend] = bench.run()
    except BenchError as exc:
        console.print("[red]benchmark failed:[/]", escape(str(exc)))
        for bench in benches:
            console.print(f"logs kept in {bench.logs}")
        return 2
    finally:
        outer.stop_all()
        shutil.rmtree(redis_dir, ignore_errors=True)
    failed = sum(r["failed_jobs"] for r in results.values())
    for bench in benches:
        if args.keep or bench.failed:
            console.print(f"{bench.backend}: logs and job records kept in {bench.tmp}")
            for record in bench.failed[:5]:
                console.print(
                    f"  job {record['id']} {record['status']}: {escape(str(record.get('error')))}"
                )
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    for result in results.values():
        print_table(result)
    if len(results) == 1:
        payload: dict[str, Any] = next(iter(results.values()))
    else:
        payload = {"backend": "both", "failed_jobs": failed, **results}
    print("BENCH_JSON " + json.dumps(payload, sort_keys=True), flush=True)
    return 1 if failed else 0


@contextmanager
def _no_redis() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
