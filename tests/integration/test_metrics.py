"""Prometheus metrics of a real fleet: the API's /metrics and each worker's own port."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agenticore.apikeys import KeyStore, Role
from agenticore.fleet import WorkerRegistry
from tests.conftest import Fleet, bearer
from tests.helpers import make_remote, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# every metric the issue names, as the text format shows its family
NAMED = {
    "agenticore_jobs_submitted", "agenticore_jobs_finished",
    "agenticore_job_duration_seconds", "agenticore_job_queue_wait_seconds",
    "agenticore_agent_cost_usd", "agenticore_agent_tokens", "agenticore_permits_in_use",
    "agenticore_breaker_open", "agenticore_queue_depth",
    "agenticore_oldest_queued_job_age_seconds", "agenticore_jobs_in_flight",
    "agenticore_repo_clone_seconds", "agenticore_repo_fetch_seconds", "agenticore_pr_steps",
}  # fmt: skip

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


def worker_metrics_url(fleet: Fleet) -> str:
    registry = WorkerRegistry(fleet.settings)
    name = fleet.settings.worker_node_name()
    return wait_for(
        lambda: (record := registry.get(name)) and record.metrics_url,
        timeout=30,
        what="the worker's metrics address",
    )


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and wanted <= set(lbl))


def test_given_no_key_when_metrics_are_asked_then_401_and_a_viewer_key_reads_them(
    fleet: Fleet,
) -> None:
    _, viewer = KeyStore(fleet.settings).create("metrics-viewer", Role.VIEWER)

    anonymous = httpx.get(f"{fleet.api_url}/metrics", timeout=10)
    answer = httpx.get(f"{fleet.api_url}/metrics", headers=bearer(viewer), timeout=10)

    assert anonymous.status_code == 401
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    names, _ = parse(answer.text)
    assert {"agenticore_workers", "agenticore_dead_letter_jobs"} | NAMED <= names


def test_given_one_job_with_a_repo_when_it_runs_then_every_named_metric_shows_and_moves(
    fleet: Fleet, tmp_path: Path
) -> None:
    worker_url = worker_metrics_url(fleet)
    workers = fleet.http.get("/status").json()["workers"]
    assert worker_url in [worker["metrics_url"] for worker in workers], "/status shows it"
    remote = make_remote(tmp_path / "remotes", "metrics")

    def scrape() -> tuple[set[str], Samples, Samples]:
        api_names, api = parse(fleet.http.get("/metrics").text)
        worker_names, worker = parse(httpx.get(worker_url, timeout=10).text)
        return api_names | worker_names, api, worker

    _, api_before, worker_before = scrape()
    job = fleet.submit(task="@fake cost 0.125\nsay hi", repo_url=str(remote), profile="default")
    final = fleet.wait_until_final(job["id"])
    assert final["status"] == "succeeded", final
    names, api_after, worker_after = scrape()

    assert names >= NAMED
    labels = {"profile": "default", "priority": "normal"}
    moved_on_api = total(api_after, "agenticore_jobs_submitted_total", **labels) - total(
        api_before, "agenticore_jobs_submitted_total", **labels
    )
    assert moved_on_api == 1, "the API stored the job"

    def moved(name: str, **labels: str) -> float:
        return total(worker_after, name, **labels) - total(worker_before, name, **labels)

    assert moved("agenticore_jobs_finished_total", status="succeeded", agent="claude") == 1
    assert moved("agenticore_job_duration_seconds_count") == 1
    assert moved("agenticore_job_duration_seconds_sum") > 0
    assert moved("agenticore_job_queue_wait_seconds_count") == 1
    assert moved("agenticore_agent_cost_usd_total") == pytest.approx(0.125)
    assert moved("agenticore_agent_tokens_total", kind="output") > 0
    assert moved("agenticore_repo_clone_seconds_count") == 1, "a new repo is cloned"
    assert total(api_after, "agenticore_jobs_in_flight") >= 0
    assert total(api_after, "agenticore_workers", state="online") >= 1
    assert total(api_after, "agenticore_queue_depth") >= 0


def test_given_the_metrics_port_taken_when_a_worker_starts_then_it_runs_and_warns(
    fleet: Fleet,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        name = f"busy-{fleet.backend}"
        worker = fleet.add_worker(name, worker_metrics_port=str(port))
        try:
            log = (fleet.logs / f"worker-{name}.log").read_text()
            assert worker.poll() is None, "the worker runs on"
            assert f"cannot serve on 127.0.0.1:{port}" in log
        finally:
            worker.terminate()
            worker.wait(timeout=30)
