"""The ``agenticore`` command against a real API and worker."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from agenticore.config import Settings
from tests.conftest import REPO_ROOT, Fleet, extra_api, settings_env
from tests.helpers import free_port, group_members, wait_for

pytestmark = pytest.mark.integration


def cli(fleet: Fleet, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = fleet.env | {"AGENTICORE_API_URL": fleet.api_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "agenticore.cli", *args],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_given_run_wait_when_the_job_succeeds_then_result_cost_and_session_show_and_exit_0(
    fleet: Fleet,
) -> None:
    out = cli(
        fleet, "run", "Add a CONTRIBUTING.md\n@fake cost 0.42\n@fake result Wrote it.", "--wait"
    )

    assert out.returncode == 0, out.stderr
    assert "succeeded" in out.stdout and "Wrote it." in out.stdout
    assert "$0.4200" in out.stdout and "session" in out.stdout


def test_given_run_wait_json_when_the_job_fails_then_exit_1_with_the_record(fleet: Fleet) -> None:
    out = cli(fleet, "run", "@fake fail tests are red", "--wait", "--json")

    job = json.loads(out.stdout)
    assert out.returncode == 1
    assert job["status"] == "failed" and "tests are red" in job["error"]


def test_given_bad_usage_then_exit_2_with_a_message(fleet: Fleet) -> None:
    unknown_profile = cli(fleet, "run", "x", "--profile", "nope")
    bad_option = cli(fleet, "run", "x", "--frobnicate")
    unknown_job = cli(fleet, "job", "does-not-exist")

    assert unknown_profile.returncode == 2 and "unknown profile 'nope'" in unknown_profile.stderr
    assert bad_option.returncode == 2 and "frobnicate" in bad_option.stderr
    assert unknown_job.returncode == 2 and "not found" in unknown_job.stderr
    assert "Traceback" not in unknown_profile.stderr + bad_option.stderr + unknown_job.stderr


def test_given_jobs_then_list_show_cancel_profiles_and_status_work(fleet: Fleet) -> None:
    submitted = cli(fleet, "run", "@fake hang", "--json")
    job_id = json.loads(submitted.stdout)["id"]
    wait_for(lambda: fleet.job(job_id)["status"] == "running", timeout=30, what="job start")

    listed = cli(fleet, "jobs", "--status", "running", "--json")
    shown = cli(fleet, "job", job_id)
    cancelled = cli(fleet, "cancel", job_id)
    profiles = cli(fleet, "profiles")
    status = cli(fleet, "status")

    assert job_id in [j["id"] for j in json.loads(listed.stdout)["data"]]
    assert job_id in shown.stdout and "running" in shown.stdout
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert "default" in profiles.stdout
    assert status.returncode == 0 and "ready" in status.stdout
    assert fleet.wait_until_final(job_id)["status"] == "cancelled"


def test_given_a_busy_fleet_then_status_shows_workers_breakers_queue_and_the_oldest_wait(
    fleet: Fleet,
) -> None:
    # given: both of the worker's slots taken, and a batch job waiting behind them
    busy = [json.loads(cli(fleet, "run", "@fake hang", "--json").stdout)["id"] for _ in range(2)]
    for job_id in busy:
        wait_for(lambda j=job_id: fleet.job(j)["status"] == "running", timeout=30, what="start")
    waiting = fleet.submit(task="@fake result later", priority="batch")["id"]
    time.sleep(1.5)
    try:
        # when
        shown = cli(fleet, "status")
        data = json.loads(cli(fleet, "status", "--json").stdout)
    finally:
        for job_id in busy:
            cli(fleet, "cancel", job_id)

    # then: the table and the JSON tell the same story
    fleet_status = data
    assert data["ready"] is True and data["broker"] == "ok", "readiness and fleet in one object"
    name = f"agenticore@test-{fleet.backend}"  # other tests may have added workers
    worker = next(w for w in fleet_status["workers"] if w["name"] == name)
    assert shown.returncode == 0, shown.stderr
    assert worker["state"] == "busy" and worker["running"] == 2
    assert re.search(rf"{re.escape(worker['name'])}\s+busy\s+2\s+2\s+\d+s ago", shown.stdout)
    assert datetime.fromisoformat(worker["last_seen"]).tzinfo is not None, "ISO 8601, with zone"
    assert re.search(r"claude\s+closed\s+0", shown.stdout)
    assert fleet_status["queue_depth_by_priority"] == {"interactive": 0, "normal": 0, "batch": 1}
    assert "(interactive 0, normal 0, batch 1)" in shown.stdout
    oldest = fleet_status["oldest_queued_job"]
    assert oldest["id"] == waiting and oldest["age_seconds"] >= 1
    assert f"oldest queued job: {waiting}, waiting" in shown.stdout
    assert fleet.wait_until_final(waiting)["status"] == "succeeded"


def test_given_no_key_then_status_still_tells_readiness_and_shows_no_fleet_details(
    fleet: Fleet,
) -> None:
    env = fleet.env | {"AGENTICORE_API_URL": fleet.api_url, "AGENTICORE_API_KEY": ""}
    out = subprocess.run(
        [sys.executable, "-m", "agenticore.cli", "status"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert out.returncode == 0 and "ready" in out.stdout, out.stderr
    assert "Fleet details unavailable" in out.stdout and "agenticore@" not in out.stdout


def test_given_no_api_then_the_cli_says_how_to_start_it(fleet: Fleet) -> None:
    env_api = f"http://127.0.0.1:{free_port()}"
    out = cli(fleet, "jobs", "--api", env_api)

    assert out.returncode == 1
    assert "cannot reach the Agenticore API" in out.stderr and "agenticore up" in out.stderr


def test_given_agenticore_up_on_the_embedded_default_then_a_job_runs_and_stop_leaves_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    settings = make_settings("embedded", port=port, api_url=f"http://127.0.0.1:{port}")
    env = settings_env(settings)
    up = subprocess.Popen(
        [sys.executable, "-m", "agenticore.cli", "up", "--no-flower"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "agenticore.cli", *args],
                env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
            )  # fmt: skip

        wait_for(lambda: run("status").returncode == 0, timeout=60, what="agenticore up")

        out = run("run", "@fake result hello from up", "--wait", "--json")

        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["result"] == "hello from up"
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=60)[0].decode()
    assert up.returncode == 0, output
    assert "embedded (no Redis)" in output
    # the CLI found its admin key where `up` put it, readable by its owner only
    cli_key = settings.home / "cli.key"
    assert stat.S_IMODE(cli_key.stat().st_mode) == 0o600
    assert "admin key written to" in " ".join(output.split())  # rich wraps long lines
    assert cli_key.read_text().strip() not in output
    assert group_members(up.pid) == [], "API and worker must stop with `up`"


def test_given_a_busy_fleet_then_the_cli_says_so_plainly(fleet: Fleet) -> None:
    with extra_api(fleet, max_queue_depth="1") as api:
        blockers = [fleet.submit(task="@fake hang")["id"] for _ in range(2)]
        waiting = [fleet.submit(task="@fake result waits")["id"] for _ in range(2)]
        out = cli(fleet, "run", "one more", "--api", str(api.base_url))
        for job_id in blockers + waiting:
            fleet.http.post(f"/jobs/{job_id}/cancel")

    assert out.returncode == 1
    assert "the fleet is busy" in out.stderr and "retry in" in out.stderr
    assert "Traceback" not in out.stderr
