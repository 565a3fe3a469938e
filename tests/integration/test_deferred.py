"""A deferred job (a retry's backoff, a held permit) is watched, not resent: on the embedded
broker its countdown sits in the worker's memory, invisible in the broker folder, and the
reconciler must neither send it again nor cut its backoff short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import running_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_given_deferred_jobs_on_the_embedded_broker_then_each_comes_back_once_after_its_backoff(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = tmp_path / "starts"
    monkeypatch.setenv("FAKE_CLAUDE_STARTS_FILE", str(starts))
    settings = {
        "lease_seconds": 1,  # a reconciler pass every half second
        "retry_backoff_seconds": 10,  # a backoff of 5 to 10 s (jitter)
        "retry_backoff_max_seconds": 10,
        "max_attempts": 2,
        "max_parallel_jobs": 3,
        "agent_env_allow": ["FAKE_CLAUDE_STARTS_FILE"],
    }
    with running_fleet("embedded", tmp_path / "home", redis_url, **settings) as fleet:
        ids = [fleet.submit(task="@fake crash 2")["id"] for _ in range(3)]

        jobs = [fleet.wait_until_final(job_id, timeout=60) for job_id in ids]

        log = (fleet.logs / "worker.log").read_text()
        received = {i: len(re.findall(rf"run_job\[{i}\] received", log)) for i in ids}
        assert [job["status"] for job in jobs] == ["dead"] * 3
        assert received == dict.fromkeys(ids, 2), "one delivery per attempt, none resent"
        assert "handed on lost jobs" not in log
        times = sorted(float(line.split()[0]) for line in starts.read_text().splitlines())
        assert len(times) == 6
        assert min(times[3:]) - max(times[:3]) >= 4, "the backoff kept its length"
