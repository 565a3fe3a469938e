"""Flower against a real worker, on both brokers: it needs its credentials, sees every job
from the first one on, shows the state each job really ended in, and no secret."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agenticore.monitoring import ensure_flower_auth
from tests.conftest import REPO_ROOT, Fleet
from tests.helpers import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAKE_TOKEN = "ghp_" + "T0ken" * 7 + "abcd"  # the shape of a GitHub token: 36 characters


@dataclass
class Flower:
    http: httpx.Client
    url: str

    def tasks(self) -> dict[str, dict[str, Any]]:
        response = self.http.get("/api/tasks")
        assert response.status_code == 200, response.text
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks

    def task(self, task_id: str, state: str) -> dict[str, Any]:
        return wait_for(
            lambda: task if (task := self.tasks().get(task_id, {})).get("state") == state else None,
            timeout=30,
            interval=0.3,
            what=f"Flower to show {task_id} {state}",
        )


@pytest.fixture(scope="module")
def flower(fleet: Fleet) -> Iterator[Flower]:
    """``agenticore flower`` on a free port watching the fleet, with the basic auth
    ``agenticore up`` generates into ``HOME/flower.auth``."""
    auth = ensure_flower_auth(fleet.settings)
    assert auth is not None and stat.S_IMODE(auth.stat().st_mode) == 0o600
    user, _, password = auth.read_text().strip().partition(":")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agenticore.cli", "flower", "--port", str(port)],
        env=fleet.env, cwd=REPO_ROOT, stdout=(fleet.logs / f"flower-{port}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, auth=(user, password), timeout=10)
    try:
        # its event receiver is connected once it has heard the worker's heartbeat
        wait_for(lambda: _heard(http, fleet), timeout=60, interval=0.5, what="Flower's events")
        yield Flower(http, url)
    finally:
        http.close()
        proc.send_signal(signal.SIGKILL)  # Flower may sit on SIGTERM for tens of seconds
        proc.wait(timeout=10)


def _heard(http: httpx.Client, fleet: Fleet) -> bool:
    try:
        response = http.get("/workers", params={"json": 1})  # from events, not inspect
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and f"@{fleet.settings.worker_name}" in response.text


def test_given_flower_when_its_api_is_asked_without_credentials_then_401_with_them_the_worker(
    flower: Flower, fleet: Fleet
) -> None:
    anonymous = httpx.get(f"{flower.url}/api/workers", timeout=10)
    wrong = httpx.get(f"{flower.url}/api/workers", auth=("admin", "nope"), timeout=10)

    workers = flower.http.get("/api/workers", params={"refresh": 1})

    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert workers.status_code == 200
    assert any(name.endswith(f"@{fleet.settings.worker_name}") for name in workers.json())


def test_given_flower_and_a_worker_on_the_broker_then_kombu_warns_of_no_missing_hostname(
    flower: Flower, fleet: Fleet
) -> None:
    """The embedded broker URL names its host: kombu's "No hostname was supplied" came for
    every connection made from it (the worker's own, Flower's, replies to ``conf``)."""
    flower.http.get("/api/workers", params={"refresh": 1})  # inspect + conf over the broker

    for log in fleet.logs.glob("*.log"):
        assert "No hostname was supplied" not in log.read_text(errors="replace"), log.name


def test_given_jobs_ending_differently_when_flower_lists_them_then_its_states_tell_the_truth(
    flower: Flower, fleet: Fleet
) -> None:
    first = fleet.submit(task=f"Use the token {FAKE_TOKEN} to publish the docs")["id"]
    failed = fleet.submit(task="Break it\n@fake fail the tests did not pass")["id"]
    dead = fleet.submit(task="Crash every time\n@fake crash 3", max_attempts=2)["id"]
    cancelled = fleet.start_job("Wait a while\n@fake sleep 30")
    assert fleet.http.post(f"/jobs/{cancelled}/cancel").status_code == 200
    for job_id in (first, failed, cancelled, dead):
        fleet.wait_until_final(job_id)

    succeeded = flower.task(first, "SUCCESS")
    failure = flower.task(failed, "FAILURE")
    flower.task(cancelled, "REVOKED")
    went_dead = flower.task(dead, "FAILURE")

    assert succeeded["name"] == "agenticore.run_job", "the first job after Flower started"
    error = fleet.job(failed)["error"]
    assert error and failure["exception"] == f"JobFailed({error!r})"
    record = fleet.job(dead)
    assert (
        record["status"] == "dead" and went_dead["exception"] == f"JobFailed({record['error']!r})"
    )
    assert (
        f"job_id={first!r}" in succeeded["args"] and "task='Use the token ***" in succeeded["args"]
    )
    assert FAKE_TOKEN not in flower.http.get("/api/tasks").text


def test_given_a_spec_sent_with_delay_when_flower_shows_it_then_its_args_are_a_summary(
    flower: Flower, fleet: Fleet
) -> None:
    """``run_job.delay(spec)`` from a user's process: the message's argsrepr is set by the
    task class, so the raw spec (and the token in it) never reaches Flower."""
    script = (
        "import sys\n"
        "from workers.tasks import run_job\n"
        "print(run_job.delay({'task': sys.argv[1], 'profile': 'default'}).id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, f"@fake result sent with {FAKE_TOKEN}"],
        env=fleet.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip

    job_id = out.stdout.strip()
    shown = flower.task(job_id, "SUCCESS")

    assert shown["args"] == "(task='@fake result sent with ***' profile='default')"
    assert uuid.UUID(job_id).version == 7, "a time-ordered id: listings sort by it"
    newest = fleet.http.get("/jobs", params={"limit": 1}).json()["data"][0]["id"]
    assert newest == job_id
    assert shown["kwargs"] == "{}"
    assert FAKE_TOKEN not in flower.http.get("/api/tasks").text
