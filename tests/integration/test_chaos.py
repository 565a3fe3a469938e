"""Chaos: 200 jobs through a SIGKILLed pool process, a SIGKILLed main worker, a Redis
restarted empty, a Redis paused past the lease and a burst of submissions. Every accepted
job ends, no job's agent succeeds twice, and no process or worktree is left behind.

Real processes throughout: the fleet's API and prefork worker, redis-server, the fake
agent CLI. Each fault comes when enough jobs have ended, and every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AGENT_REPORTS, Fleet, fleet_on, restart
from tests.helpers import (
    FAKE_CLAUDE,
    SlowGit,
    descends_from,
    make_remote,
    parent_pid,
    pid_alive,
    process_environ,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

LEASE_SECONDS = 3
TOTAL = 200
FIRST_WAVE = 150
BURST_THREADS = 5
ALL_DONE_WITHIN = 480  # seconds, after the burst
STEP_WITHIN = 120  # seconds for the jobs a fault waits for to end
FINAL = {"succeeded", "failed", "cancelled", "timed_out", "dead"}


REPO_EVERY = 10  # every tenth job works in a worktree of a repo, on a branch of its own


def spec(number: int, remote: Path) -> dict[str, Any]:
    """A job that takes a fraction of a second; one with a repo also leaves a file."""
    task = f"@fake sleep 0.3\n@fake result chaos job {number}"
    if number % REPO_EVERY:
        return {"task": task}
    return {"task": f"@fake write {_file(number)} job {number}\n{task}", "repo_url": str(remote)}


def _file(number: int) -> str:
    return f"chaos-{number}.txt"


class Chaos:
    """The jobs submitted so far and how far the fleet got with them, read from the job
    records (files: they answer while Redis is down or paused)."""

    def __init__(self, fleet: Fleet, remote: Path) -> None:
        self.fleet = fleet
        self.remote = remote
        self.ids: list[str] = []
        self.started = time.monotonic()

    def log(self, what: str) -> None:
        print(f"chaos: {time.monotonic() - self.started:6.1f}s {what}", flush=True)

    def submit(self, numbers: range) -> list[str]:
        return [self.fleet.submit(**spec(n, self.remote))["id"] for n in numbers]

    def statuses(self) -> Counter[str]:
        return Counter(self._record(job_id).get("status", "?") for job_id in self.ids)

    def terminal(self) -> int:
        counts = self.statuses()
        return sum(counts[status] for status in FINAL)

    def wait_terminal(self, count: int, timeout: float) -> None:
        wait_for(lambda: self.terminal() >= count, timeout=timeout, interval=0.2,
                 what=f"{count} jobs ended ({self.statuses()})")  # fmt: skip
        self.log(f"{self.terminal()} ended")

    def _record(self, job_id: str) -> dict[str, Any]:
        try:
            record: dict[str, Any] = json.loads(
                (self.fleet.settings.jobs_dir / f"{job_id}.json").read_text()
            )
        except (OSError, ValueError):
            return {}  # being replaced this instant: read again on the next poll
        return record

    def running_pool_process(self) -> tuple[str, int] | None:
        """A job whose agent started moments ago (so it is mid-run, not printing its result:
        jobs end in step) and the pool process that runs it."""
        for job_id in self.ids:
            agent = self._record(job_id).get("agent_pid")
            if not agent or not pid_alive(agent) or process_age(agent) > 0.1:
                continue
            if pool := pool_process(self.fleet, agent):
                return job_id, pool
        return None


def process_age(pid: int) -> float:
    """Seconds since ``pid`` started (inf if it is gone)."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return float("inf")
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def pool_process(fleet: Fleet, pid: int) -> int | None:
    """The pool process (a child of the main worker) that ``pid`` runs under."""
    while (parent := parent_pid(pid)) is not None:
        if parent == fleet.worker.pid:
            return pid
        pid = parent
    return None


def successful_runs(runs_file: Path) -> Counter[str]:
    """How many times each job's agent ended successfully (the fake's runs file)."""
    lines = runs_file.read_text().splitlines() if runs_file.exists() else []
    return Counter(line.split()[0] for line in lines if line.endswith(" done"))


def orphan_processes(fleet: Fleet, runs_file: Path) -> list[int]:
    """Live processes of this fleet that nothing supervises: a fake agent still running
    after every job ended, or any process of the fleet (pool process, reaper, agent) whose
    parent died and left it adopted outside this test's process tree."""
    orphans = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = process_environ(int(entry.name))
        agent = env.get("FAKE_CLAUDE_RUNS_FILE") == str(runs_file) and _runs(entry, FAKE_CLAUDE)
        ours = env.get("AGENTICORE_HOME") == str(fleet.settings.home)
        if agent or (ours and not descends_from(int(entry.name), os.getpid())):
            orphans.append(int(entry.name))
    return orphans


def _runs(proc: Path, program: Path) -> bool:
    try:
        return str(program).encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def leaked_worktrees(fleet: Fleet, ids: list[str]) -> list[str]:
    root = fleet.settings.worktrees_dir
    return sorted(p.name for p in root.iterdir() if p.name in set(ids)) if root.exists() else []


def test_given_kills_a_redis_loss_a_pause_and_a_burst_then_every_job_ends_once_leaving_nothing(
    tmp_path: Path,
) -> None:
    runs_file = tmp_path / AGENT_REPORTS["FAKE_CLAUDE_RUNS_FILE"]
    settings: dict[str, Any] = {
        "lease_seconds": LEASE_SECONDS,
        "max_parallel_jobs": 4,
        "max_attempts": 5,  # a job a fault interrupted runs again, not dead-lettered
        "retry_backoff_seconds": 0.2,
        "retry_backoff_max_seconds": 1,
    }
    with fleet_on(tmp_path, **settings) as (fleet, server):
        chaos = Chaos(fleet, make_remote(tmp_path))
        chaos.ids += chaos.submit(range(FIRST_WAVE))
        chaos.log(f"{FIRST_WAVE} submitted")

        # given a pool process SIGKILLed while its agent runs
        chaos.wait_terminal(20, STEP_WITHIN)
        job_id, pool = wait_for(chaos.running_pool_process, timeout=30, what="a running agent")
        os.kill(pool, signal.SIGKILL)
        chaos.log(f"pool process {pool} running job {job_id} SIGKILLed")

        # and the main worker SIGKILLed, then a new one started
        chaos.wait_terminal(50, STEP_WITHIN)
        fleet.worker.send_signal(signal.SIGKILL)
        fleet.worker.wait(timeout=10)
        left = len(orphan_processes(fleet, runs_file))  # its pool and their agents, dying
        fleet.replace_worker()
        chaos.log(f"main worker SIGKILLed ({left} of its processes left) and replaced")

        # and Redis restarted with its data lost
        chaos.wait_terminal(80, STEP_WITHIN)
        server.kill()
        restart(server, fleet)
        chaos.log("Redis restarted empty")

        # and Redis paused past the lease
        chaos.wait_terminal(110, STEP_WITHIN)
        pause = 2.5 * LEASE_SECONDS
        server.pause(pause)
        time.sleep(pause)
        chaos.log(f"Redis paused {pause}s")

        # and a burst of the rest from several threads at once
        with ThreadPoolExecutor(BURST_THREADS) as pool_of_threads:
            share = (TOTAL - FIRST_WAVE) // BURST_THREADS
            ranges = [range(FIRST_WAVE + i * share, FIRST_WAVE + (i + 1) * share)
                      for i in range(BURST_THREADS)]  # fmt: skip
            for ids in pool_of_threads.map(chaos.submit, ranges):
                chaos.ids += ids
        chaos.log(f"burst: {len(chaos.ids)} submitted in all")

        # when every job has ended
        chaos.wait_terminal(TOTAL, ALL_DONE_WITHIN)
        jobs = [fleet.job(job_id) for job_id in chaos.ids]
        statuses = Counter(job["status"] for job in jobs)
        done = successful_runs(runs_file)
        duplicates = sum(count - 1 for count in done.values() if count > 1)
        orphans = _settled(lambda: orphan_processes(fleet, runs_file))
        leaked = _settled(lambda: leaked_worktrees(fleet, chaos.ids))

        # then
        terminal = sum(statuses[status] for status in FINAL)
        print(f"chaos: submitted={len(chaos.ids)} terminal={terminal} "
              f"duplicate_successful_runs={duplicates} orphan_processes={len(orphans)} "
              f"leaked_worktrees={len(leaked)}")  # fmt: skip
        attempts = Counter(job["attempts"] for job in jobs)
        starts = runs_file.read_text().count(" start\n")
        print(f"chaos: statuses {dict(statuses)}; attempts {dict(attempts)}; "
              f"agent starts {starts}")  # fmt: skip
        chaos.log("all ended")
        assert len(chaos.ids) == terminal == TOTAL
        assert statuses == {"succeeded": TOTAL}, statuses
        assert duplicates == 0, {job: n for job, n in done.items() if n > 1}
        assert sorted(done) == sorted(chaos.ids), "every succeeded job's agent succeeded once"
        with_repo = [(n, job) for n, job in enumerate(jobs) if job.get("repo_url")]
        assert len(with_repo) == TOTAL // REPO_EVERY
        assert all(job["changed_files"] == [_file(n)] and job["commit_sha"]
                   for n, job in with_repo), "each repo job's work is on its branch"  # fmt: skip
        assert orphans == [], orphans
        assert leaked == [], leaked


def _settled(leftovers: Any, within: float = 15) -> list[Any]:
    """What is still left after up to ``within`` seconds of cleanup (an empty list early)."""
    deadline = time.monotonic() + within
    left: list[Any] = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftovers()
    return left


def test_given_a_pool_process_killed_after_its_agent_succeeded_then_the_success_is_recorded_once(
    tmp_path: Path, slow_git_on_path: SlowGit
) -> None:
    slow_git = slow_git_on_path
    remote = make_remote(tmp_path)
    with fleet_on(tmp_path, lease_seconds=LEASE_SECONDS) as (fleet, _):
        # given an agent that succeeded, whose work is being snapshot when its process dies
        slow_git.slow("write-tree", 20)
        task = "@fake write DONE.md done\n@fake result did it"
        job_id = fleet.submit(task=task, repo_url=str(remote))["id"]
        snapshot = slow_git.wait_started()
        pool = pool_process(fleet, snapshot)
        assert pool is not None
        os.kill(pool, signal.SIGKILL)
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
            if slow_git.marked(pid):
                os.kill(pid, signal.SIGKILL)  # the orphaned snapshot must not run later

        # when its job is handed on
        job = fleet.wait_until_final(job_id, timeout=60)

    # then the next attempt records that success and the agent ran once
    runs = (tmp_path / AGENT_REPORTS["FAKE_CLAUDE_RUNS_FILE"]).read_text().splitlines()
    assert runs == [f"{job_id} start", f"{job_id} done"]
    assert (job["status"], job["attempts"], job["result"]) == ("succeeded", 2, "did it")
    assert job["changed_files"] == ["DONE.md"] and job["commit_sha"]
