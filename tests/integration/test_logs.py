"""``LOG_FORMAT=json`` on a real worker and API: JSON lines only, each line about a job
carrying its job id, task id and worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "ghp_" + "JsonLogs" * 4 + "abcd"


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of ``log`` as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_given_json_logs_when_jobs_run_then_every_line_is_json_and_job_lines_name_the_job(
    tmp_path: Path, redis_url: str
) -> None:
    with running_fleet("embedded", tmp_path, redis_url, log_format="json") as fleet:
        ok = fleet.submit(task="@fake result fine")["id"]
        failed = fleet.submit(task=f"@fake fail could not push with {TOKEN}")["id"]
        for job_id in (ok, failed):
            fleet.wait_until_final(job_id)
        worker = json_lines(fleet.logs / "worker.log")  # read while it runs: no shutdown notice
        api = json_lines(fleet.logs / "api.log")

    node = f"agenticore@{fleet.settings.worker_name}"
    for job_id in (ok, failed):
        about = [line for line in worker if job_id in line["message"]]
        assert len(about) >= 3, about  # received, ended, and Celery's succeeded/raised
        assert all(
            (line["job_id"], line["task_id"], line["worker"]) == (job_id, job_id, node)
            for line in about
        ), about
    assert {"time", "level", "logger", "message", "trace_id"} <= set(worker[0])
    assert any(line["logger"] == "uvicorn.access" for line in api)
    assert TOKEN not in (fleet.logs / "worker.log").read_text()
