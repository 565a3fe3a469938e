"""A real worker's and a real API's log files never show a secret, whoever logged the line
(Celery, uvicorn or us)."""

from __future__ import annotations

import stat
import uuid

import pytest

from tests.conftest import Fleet
from tests.helpers import wait_for
from workers.app import RUN_JOB, make_celery

pytestmark = pytest.mark.integration


def fresh_token() -> str:
    return "ghp_" + uuid.uuid4().hex[:16] + "LoggedTokenX0123456"


def logs_of(fleet: Fleet, name: str) -> str:
    # a test that replaced the worker left its log under another name
    return "".join(p.read_text(errors="replace") for p in fleet.logs.glob(f"{name}*.log"))


def test_given_a_task_message_carrying_a_token_then_the_worker_log_masks_it(
    fleet: Fleet,
) -> None:
    token = fresh_token()
    task_id = f"leak-{token}"
    celery = make_celery(fleet.settings)

    # Celery logs the task id when it receives it, we log it when we refuse the spec
    celery.send_task(RUN_JOB, args=[{"task": "x", "timeout_seconds": token}], task_id=task_id)
    wait_for(
        lambda: "run_job 'leak-***' refused" in logs_of(fleet, "worker"),
        timeout=30,
        what="the worker to refuse the message",
    )

    log = logs_of(fleet, "worker")
    assert token not in log
    assert "[leak-***]" in log, "Celery's own lines went through the filter too"


def test_given_a_request_path_carrying_a_token_then_the_api_access_log_masks_it(
    fleet: Fleet,
) -> None:
    token = fresh_token()

    response = fleet.http.get(f"/jobs/{token}", params={"access_token": token})
    wait_for(lambda: "GET /jobs/***" in logs_of(fleet, "api"),
             timeout=15, what="the access log line")  # fmt: skip

    assert response.status_code in (401, 404)
    assert token not in logs_of(fleet, "api")


def test_given_a_running_fleet_then_its_private_folders_are_the_worker_users_alone(
    fleet: Fleet,
) -> None:
    job = fleet.wait_until_final(fleet.submit(task="@fake result ok")["id"])
    home = fleet.settings.home
    private = [home / name for name in ("jobs", "run", "locks", "celery", "keys")]
    private += [*(home / "celery").glob("*"), home / "jobs" / job["id"]]

    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in private if p.exists()}

    assert {"jobs", "run", job["id"]} <= modes.keys()
    assert {name: mode for name, mode in modes.items() if mode != 0o700} == {}
    assert stat.S_IMODE(home.stat().st_mode) & 0o066 == 0, "HOME: others may not list it"
    record = home / "jobs" / f"{job['id']}.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
