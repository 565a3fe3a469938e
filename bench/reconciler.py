"""What one reconciler pass costs as the queue and the history grow.

    python -m bench.reconciler [--sizes 100,1000,5000] [--rounds 5]

For each size N, a store holds N queued jobs (sent, waiting in a long queue) and N finished
ones, on Redis (a private ``redis-server``) and embedded (SQLite). A pass should cost the
same at every N: it reads only the running jobs and the due entries of its schedules.
Prints a table, then one line ``BENCH_JSON {...}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from agenticore.config import Settings
from agenticore.jobs import JobStore
from agenticore.models import Job, JobSpec, JobStatus
from agenticore.reconciler import Reconciler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[str, dict[int, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="agenticore-bench-") as tmp,
        redis_server(Path(tmp)) as url,
    ):
        for backend in ("redis", "embedded"):
            results[backend] = {}
            for size in sizes:
                home = Path(tmp) / f"{backend}-{size}"
                settings = Settings(home=home, redis_url=url if backend == "redis" else None,
                                    redis_key_prefix=f"bench-{size}")  # fmt: skip
                fill(settings, size)
                results[backend][size] = pass_ms(settings, args.rounds)
    table = Table(title="one reconciler pass (median ms)")
    table.add_column("backend")
    for size in sizes:
        table.add_column(f"{size} queued + {size} finished", justify="right")
    for backend, by_size in results.items():
        table.add_row(backend, *(f"{by_size[size]:.2f}" for size in sizes))
    Console().print(table)
    print("BENCH_JSON " + json.dumps({"reconciler_pass_ms": results}))


def fill(settings: Settings, size: int) -> None:
    store = JobStore(settings)
    store.rebuild_index()
    for n in range(size):
        queued = store.create(Job.from_spec(JobSpec(task=f"queued {n}")))
        store.mark_sent(queued.id)
        done = store.create(Job.from_spec(JobSpec(task=f"done {n}")))
        store.mark_sent(done.id)
        store.update(done.id, status=JobStatus.CANCELLED)


def pass_ms(settings: Settings, rounds: int) -> float:
    reconciler = Reconciler(settings, lambda job: None)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        reconciler.run_once()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
