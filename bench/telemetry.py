"""What tracing costs: dispatch throughput and sync-job latency, telemetry off and on.

    python -m bench.telemetry [--jobs 150] [--sync 40] [--rounds 2] [--concurrency 2]
                              [--baseline GIT_REV]

One run on this machine, on a private ``redis-server``. Each round starts a fresh stack
(API + prefork worker, the fake agent answering at once) per mode: telemetry **off** (no
``OTEL_*`` variables), **on** (``OTEL_TRACES_EXPORTER=otlp`` to an OTLP/HTTP sink in this
process, which decodes and counts the spans) and, with ``--baseline REV``, **base**: the
code of that git revision (``git archive``, e.g. the commit before tracing came in), no
``OTEL_*`` either. Modes alternate within each round, and their order rotates from round to
round, so drift on a shared machine hits all alike; the spread between the rounds of one
mode is the noise to judge by.

Per stack:

1. dispatch: with no worker running yet, ``--jobs`` ``POST /jobs`` from a few threads as
   fast as the API answers (each one stores the job and publishes its message): jobs/s;
2. the worker starts and runs that backlog (not timed);
3. sync: ``--sync`` jobs with ``"wait": true`` (no repo), one after the other: p50 and p99
   of the request's wall time (the API polls the record every 250 ms, so this moves in
   steps), and of the job's own ``created_at`` -> ``finished_at`` (same host, same clock).

Figures are medians over the rounds. First, in this process, the per-job cost of our own
tracing calls (the spans, context and ``TRACEPARENT`` helpers a job goes through), off and
on (a batch processor whose exporter drops everything): what "off costs nothing" means.

Prints a table, then one line ``BENCH_JSON {...}``. Exits 1 if any job did not succeed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from agenticore import telemetry
from agenticore.apikeys import KeyStore, Role
from agenticore.config import Settings
from bench.pipeline import (
    FAKE_CLAUDE,
    REPO_ROOT,
    TASK,
    BenchError,
    Services,
    child_env,
    free_port,
    pct,
    redis_server,
    wait_for,
)
from tests.fake_collector import FakeCollector

SUBMITTERS = 4
METRICS = [
    ("dispatch_jobs_per_s", "dispatch jobs/s"),
    ("sync_ms_p50", "sync request p50 ms"),
    ("sync_ms_p99", "sync request p99 ms"),
    ("sync_job_ms_p50", "sync job p50 ms"),
    ("sync_job_ms_p99", "sync job p99 ms"),
]


class Stack:
    """API and worker on a fresh home, with telemetry off or on."""

    def __init__(
        self, redis_url: str, args: argparse.Namespace, otel: dict[str, str], code: Path
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="agenticore-bench-otel-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        port = free_port()
        self.settings = Settings(
            home=self.tmp / "home",
            redis_url=redis_url,
            redis_key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
            claude_bin=str(FAKE_CLAUDE),
            max_parallel_jobs=args.concurrency,
            port=port,
            api_url=f"http://127.0.0.1:{port}",
            worker_name=f"bench-otel-{uuid.uuid4().hex[:6]}",
        )
        self.code = code  # the tree whose API and worker run (cwd and PYTHONPATH first)
        self.env = child_env(self.settings, otel)
        self.env["PYTHONPATH"] = str(code)
        self.args = args
        self.services = Services()
        _, key = KeyStore(self.settings).create("bench", Role.OPERATOR)
        self.http = httpx.Client(
            base_url=self.settings.api_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
            limits=httpx.Limits(max_connections=SUBMITTERS + 2),
        )
        self.failed = 0

    def measure(self) -> dict[str, Any]:
        me = [sys.executable, "-m", "agenticore.cli"]
        try:
            self.services.start("api", [*me, "serve", "--port", str(self.settings.port)],
                                self.env, self.logs, cwd=self.code)  # fmt: skip
            wait_for(self._healthy, timeout=60, what="the API", services=self.services)
            self._post({"task": TASK})  # warm-up: connections, first import paths
            dispatch = self._dispatch(self.args.jobs)
            worker = self.services.start(
                "worker", [*me, "worker", "--concurrency", str(self.args.concurrency)],
                self.env, self.logs, cwd=self.code,
            )  # fmt: skip
            wait_for(lambda: b" ready." in worker.log.read_bytes(), timeout=90,
                     what="the worker", services=self.services)  # fmt: skip
            self._drain(self.args.jobs + 1)
            sync = [self._sync() for _ in range(self.args.sync)]
            walls, runs = [wall for wall, _ in sync], [run for _, run in sync]
            return {
                "dispatch_jobs_per_s": round(self.args.jobs / dispatch, 1),
                "sync_ms_p50": round(pct(walls, 50) or 0.0, 1),
                "sync_ms_p99": round(pct(walls, 99) or 0.0, 1),
                "sync_job_ms_p50": round(pct(runs, 50) or 0.0, 1),
                "sync_job_ms_p99": round(pct(runs, 99) or 0.0, 1),
            }
        finally:
            self.http.close()
            self.services.stop_all()
            if not self.failed:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/jobs", json=body)
        if response.status_code not in (200, 202):
            raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
        job: dict[str, Any] = response.json()
        return job

    def _dispatch(self, n: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            list(pool.map(lambda _: self._post({"task": TASK}), range(n)))
        return time.perf_counter() - started

    def _drain(self, n: int) -> None:
        def done() -> bool:
            waiting = [self.http.get("/jobs", params={"status": s, "limit": 1}).json()["count"]
                       for s in ("queued", "running")]  # fmt: skip
            return not any(waiting)

        wait_for(done, timeout=600, what=f"{n} jobs to run", services=self.services)
        failed = self.http.get("/jobs", params={"status": "failed", "limit": 200}).json()
        self.failed += failed["count"]

    def _sync(self) -> tuple[float, float]:
        """The request's wall time and the job's own (created -> finished), in ms."""
        started = time.perf_counter()
        job = self._post({"task": TASK, "wait": True})
        elapsed = (time.perf_counter() - started) * 1000
        if job["status"] != "succeeded":
            self.failed += 1
            return elapsed, elapsed
        created, finished = (datetime.fromisoformat(job[k]) for k in ("created_at", "finished_at"))
        return elapsed, (finished - created).total_seconds() * 1000


def helper_cost(n: int = 20000) -> dict[str, float]:
    """Microseconds per job of the tracing calls one job makes (a run with a repo and a PR
    step), with tracing off and on; the instrumentations' own spans are not in it."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    stored = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

    def one_job() -> None:
        telemetry.carrier()  # the record's trace context
        with telemetry.attached(stored):  # the send
            pass
        with telemetry.span("repo.fetch", {"agenticore.repo_url": "https://x/y.git"}):
            pass
        with telemetry.span("job.worktree", {"agenticore.job_id": "j"}):
            pass
        with telemetry.span("agent.run", {"agenticore.job_id": "j"}) as run:
            with telemetry.span("job.materialize", {"agenticore.profile": "default"}):
                pass
            telemetry.agent_env()
            telemetry.record_outcome(run, {"agenticore.status": "succeeded", "x": None})
        with telemetry.attached(stored):  # the PR step's send
            pass
        with telemetry.span("job.pr_step") as step:
            telemetry.record_outcome(step, {"agenticore.pr_status": "opened"})

    def per_job() -> float:
        started = time.perf_counter()
        for _ in range(n):
            one_job()
        return (time.perf_counter() - started) / n * 1e6

    telemetry.install(None)
    off = per_job()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=n * 8))
    telemetry.install(provider)
    try:
        on = per_job()
    finally:
        telemetry.install(None)
        provider.shutdown()
    return {"helpers_us_per_job_off": round(off, 2), "helpers_us_per_job_on": round(on, 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    helpers = helper_cost()
    print(f"our tracing calls per job: {helpers['helpers_us_per_job_off']} µs off, "
          f"{helpers['helpers_us_per_job_on']} µs on", flush=True)  # fmt: skip
    with FakeCollector(keep_spans=False) as sink:  # counts what it receives, keeps nothing
        on = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
            "OTEL_SERVICE_NAME": "agenticore-bench",
        }
        rounds, failed = _rounds(args, on)
    summary = _summary(rounds, args) | helpers
    return summary | {"failed_jobs": failed, "spans_exported": sink.count}


def _rounds(args: argparse.Namespace, on: dict[str, str]) -> tuple[dict[str, Any], int]:
    outer = Services()
    scratch = Path(tempfile.mkdtemp(prefix="agenticore-bench-otel-"))
    modes: list[tuple[str, dict[str, str], Path]] = [("off", {}, REPO_ROOT), ("on", on, REPO_ROOT)]
    if args.baseline:
        modes.insert(0, ("base", {}, _checkout(args.baseline, scratch / "base")))
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _, _ in modes}
    failed = 0
    try:
        with redis_server(scratch, outer) as redis_url:
            for number in range(args.rounds):
                turn = number % len(modes)  # each mode takes each place in the order
                for mode, otel, code in modes[turn:] + modes[:turn]:
                    print(f"round {number + 1}/{args.rounds}: {mode}", flush=True)
                    stack = Stack(redis_url, args, otel, code)
                    rounds[mode].append(stack.measure())
                    failed += stack.failed
    finally:
        outer.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    return rounds, failed


def _checkout(revision: str, into: Path) -> Path:
    """The tree of ``revision`` of this repository, unpacked into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", revision],
                             capture_output=True, check=False)  # fmt: skip
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _summary(rounds: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobs": args.jobs, "sync_jobs": args.sync, "rounds": args.rounds,
        "concurrency": args.concurrency,
    }  # fmt: skip
    for metric, _ in METRICS:
        for mode, results in rounds.items():
            values = [r[metric] for r in results]
            middle = statistics.median(values)
            out[f"{metric}_{mode}"] = round(middle, 1)
            out[f"{metric}_{mode}_rounds"] = values
            out[f"{metric}_{mode}_noise_pct"] = round((max(values) - min(values)) / middle * 100, 1)
        off = out[f"{metric}_off"]
        out[f"{metric}_on_vs_off_pct"] = round((out[f"{metric}_on"] - off) / off * 100, 1)
        if "base" in rounds:
            base = out[f"{metric}_base"]
            out[f"{metric}_off_vs_base_pct"] = round((off - base) / base * 100, 1)
    return out


def print_table(r: dict[str, Any]) -> None:
    modes = [m for m in ("base", "off", "on") if f"dispatch_jobs_per_s_{m}" in r]
    print(f"\n{'':22}" + "".join(f"{m:>9}{m + ' ±':>9}" for m in modes)
          + f"{'off/base':>10}{'on/off':>9}")  # fmt: skip
    for metric, label in METRICS:
        cells = "".join(f"{r[f'{metric}_{m}']:>9}{r[f'{metric}_{m}_noise_pct']:>8}%" for m in modes)
        versus = f"{r[f'{metric}_off_vs_base_pct']:>9}%" if "base" in modes else f"{'':>10}"
        print(f"{label:22}{cells}{versus}{r[f'{metric}_on_vs_off_pct']:>8}%")
    print(
        f"(medians of {r['rounds']} rounds; ± is the spread between rounds of a mode; spans "
        f"exported with telemetry on: {r['spans_exported']}; failed jobs: {r['failed_jobs']})"
    )
    print(f"our tracing calls per job: {r['helpers_us_per_job_off']} µs off, "
          f"{r['helpers_us_per_job_on']} µs on\n")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.telemetry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=150, help="jobs dispatched per stack")
    parser.add_argument("--sync", type=int, default=40, help="wait:true jobs per stack")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument("--concurrency", type=int, default=2, help="worker concurrency")
    parser.add_argument("--baseline", help="also run this git revision's code (no telemetry)")
    args = parser.parse_args(argv)
    if min(args.jobs, args.sync, args.rounds, args.concurrency) < 1:
        parser.error("--jobs, --sync, --rounds and --concurrency must be positive")
    try:
        result = run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    print_table(result)
    print("BENCH_JSON " + json.dumps(result, sort_keys=True), flush=True)
    return 1 if result["failed_jobs"] else 0


if __name__ == "__main__":
    sys.exit(main())
