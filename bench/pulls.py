"""PR step benchmark: how long ``open_pull_request`` takes per job, next to its floor.

    python -m bench.pulls [--jobs 30]

Runs in this process against the local fake forge of the test suite (GitHub's REST API and
git smart HTTP through ``git http-backend``, token required), on the embedded store. Each
job first runs for real (fake ``claude`` writes one file, the run succeeds with
``pr_status: pending``); then the PR step is timed: commit the leftovers, count commits,
push over HTTP with the token, find the PR, open it, record it, remove the worktree.

The floor is what any PR step must do, measured on the same forge: one ``git push`` of a
fresh one-commit branch plus one ``POST /repos/{owner}/{repo}/pulls`` with httpx.

Prints a table, then one line ``BENCH_JSON {...}``. Exits 1 if a PR did not open.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agenticore.config import Settings
from agenticore.forges import git_auth_env
from agenticore.jobs import JobStore
from agenticore.models import JobSpec, PrStatus
from agenticore.profiles import job_from_spec
from agenticore.pulls import PullRequestStep
from agenticore.runner import JobRunner
from bench.pipeline import pct
from tests.conftest import FORGE_TOKEN, forge_settings
from tests.fake_forge import FakeForge
from tests.helpers import FAKE_CLAUDE, GIT_IDENTITY, make_remote

PROJECT = "acme/widgets"


def measure_step(settings: Settings, repo_url: str, jobs: int) -> tuple[list[float], int]:
    """Seconds per PR step, and how many opened."""
    store, runner, step = JobStore(settings), JobRunner(settings), PullRequestStep(settings)
    timings, opened = [], 0
    for n in range(jobs):
        task = f"Add note {n}\n@fake write notes/{n}.md note {n}\n@fake result Added note {n}."
        job = job_from_spec(settings, JobSpec(task=task, repo_url=repo_url, auto_pr=True))
        store.create(job)
        runner.run(job.id, worker="bench")
        started = time.perf_counter()
        done = step.run(job.id)
        timings.append(time.perf_counter() - started)
        opened += done.pr_status is PrStatus.OPENED
    return timings, opened


def measure_floor(settings: Settings, forge: FakeForge, root: Path, jobs: int) -> list[float]:
    """Seconds per bare ``git push`` of a fresh one-commit branch plus one create call."""
    repo_url = f"{forge.url}/{PROJECT}.git"
    work = root / "floor"
    subprocess.run(["git", "clone", "-q", str(forge.git_root / f"{PROJECT}.git"), str(work)],
                   check=True)  # fmt: skip
    env = git_auth_env(settings, repo_url)
    headers = {"Authorization": f"token {FORGE_TOKEN}"}
    timings = []
    with httpx.Client(base_url=forge.url, headers=headers) as http:
        for n in range(jobs):
            branch = f"floor/{n}"
            subprocess.run(["git", "checkout", "-q", "-b", branch, "main"], cwd=work, check=True)
            (work / f"floor-{n}.md").write_text(f"floor {n}\n")
            subprocess.run(["git", "add", "-A"], cwd=work, check=True)
            subprocess.run(["git", *GIT_IDENTITY, "commit", "-q", "-m", f"floor {n}"],
                           cwd=work, check=True)  # fmt: skip
            started = time.perf_counter()
            subprocess.run(["git", "push", "-q", repo_url, f"{branch}:{branch}"],
                           cwd=work, check=True, env=_with(env))  # fmt: skip
            pull = {"title": f"floor {n}", "head": branch, "base": "main"}
            response = http.post(f"/repos/{PROJECT}/pulls", json=pull)
            response.raise_for_status()
            timings.append(time.perf_counter() - started)
    return timings


def _with(extra: dict[str, str]) -> dict[str, str]:
    return dict(os.environ) | {"GIT_TERMINAL_PROMPT": "0"} | extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=30, help="PR steps to time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="agenticore-bench-pr-") as tmp:
        root = Path(tmp)
        make_remote(root / "forge" / "acme", "widgets")
        with FakeForge(root / "forge", token=FORGE_TOKEN) as forge:
            settings = Settings(
                home=root / "home",
                claude_bin=str(FAKE_CLAUDE),
                allow_local_repos=True,
                **forge_settings(forge),
            )
            repo_url = f"{forge.url}/{PROJECT}.git"
            step, opened = measure_step(settings, repo_url, args.jobs)
            floor = measure_floor(settings, forge, root, args.jobs)
    rows = [("PR step (commit+push+find+open+record+cleanup)", step),
            ("floor (git push + one create call)", floor)]  # fmt: skip
    print(f"{'':50} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in rows:
        p50, p99 = pct(values, 50), pct(values, 99)
        mean = sum(values) / len(values)
        print(f"{name:50} {(p50 or 0) * 1e3:8.1f} {(p99 or 0) * 1e3:8.1f} {mean * 1e3:8.1f}")
    payload = {
        "jobs": args.jobs,
        "opened": opened,
        "pr_step_p50_ms": round((pct(step, 50) or 0) * 1e3, 1),
        "pr_step_p99_ms": round((pct(step, 99) or 0) * 1e3, 1),
        "floor_p50_ms": round((pct(floor, 50) or 0) * 1e3, 1),
        "floor_p99_ms": round((pct(floor, 99) or 0) * 1e3, 1),
    }
    print("BENCH_JSON " + json.dumps(payload, sort_keys=True), flush=True)
    return 0 if opened == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
