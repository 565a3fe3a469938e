"""What the API lets in: the same request twice (Idempotency-Key) and too many (429)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Fleet, extra_api

pytestmark = pytest.mark.integration


def test_given_an_idempotency_key_when_the_request_repeats_then_the_same_job_comes_back(
    fleet: Fleet,
) -> None:
    key = {"Idempotency-Key": f"deploy-{fleet.backend}-1"}

    first = fleet.http.post("/jobs", json={"task": "@fake result once"}, headers=key)
    again = fleet.http.post("/jobs", json={"task": "@fake result once"}, headers=key)
    by_field = fleet.http.post(
        "/jobs", json={"task": "@fake result once", "idempotency_key": key["Idempotency-Key"]}
    )

    assert first.status_code == 202
    assert again.json()["id"] == first.json()["id"] == by_field.json()["id"]
    assert fleet.wait_until_final(first.json()["id"])["status"] == "succeeded"
    tasks = [j["task"] for j in fleet.http.get("/jobs", params={"limit": 200}).json()["data"]]
    assert tasks.count("@fake result once") == 1, "never a second job for one key"


def test_given_concurrent_requests_with_one_key_then_exactly_one_job_exists(fleet: Fleet) -> None:
    key = {"Idempotency-Key": f"race-{fleet.backend}"}

    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda _: fleet.http.post("/jobs", json={"task": "@fake result race"}, headers=key),
                range(16),
            )
        )

    assert {r.status_code for r in responses} <= {200, 202}
    assert len({r.json()["id"] for r in responses}) == 1


def test_given_a_header_and_a_field_that_differ_then_422(fleet: Fleet) -> None:
    response = fleet.http.post(
        "/jobs", json={"task": "x", "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )

    assert response.status_code == 422 and "differ" in response.text


def test_given_a_burst_past_max_queue_depth_then_429s_and_every_accepted_job_finishes(
    fleet: Fleet,
) -> None:
    with extra_api(fleet, max_queue_depth="50", retry_after_seconds="7") as api:

        def submit(n: int) -> tuple[int, str, str | None]:
            r = api.post("/jobs", json={"task": f"@fake sleep 0.2\n@fake result burst {n}"})
            job_id = r.json()["id"] if r.status_code == 202 else ""
            return r.status_code, job_id, r.headers.get("retry-after") or r.text

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(submit, range(300)))

    codes = [code for code, _, _ in outcomes]
    assert set(codes) <= {202, 429}
    assert codes.count(429) > 0, "the queue must have filled up"
    refused = [extra for code, _, extra in outcomes if code == 429]
    assert all(value == "7" for value in refused), "429s carry Retry-After"
    accepted = [job_id for code, job_id, _ in outcomes if code == 202]
    jobs = [fleet.wait_until_final(job_id, timeout=180) for job_id in accepted]
    assert [job["status"] for job in jobs] == ["succeeded"] * len(accepted)
