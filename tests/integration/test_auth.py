"""API keys and roles on real API processes, the `agenticore keys` commands, and Flower."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agenticore.apikeys import KeyStore, Role
from tests.conftest import REPO_ROOT, Fleet, bearer, extra_api
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.integration


@contextmanager
def client_as(fleet: Fleet, role: Role, name: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client on the fleet's API holding a new key with ``role``."""
    _, key = KeyStore(fleet.settings).create(name or f"test-{role.value}", role)
    with httpx.Client(base_url=fleet.api_url, timeout=30, headers=bearer(key)) as http:
        yield http


def cli(fleet: Fleet, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenticore.cli", *args],
        env=fleet.env | {"COLUMNS": "200"} | env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def start_hanging(http: httpx.Client) -> str:
    response = http.post("/jobs", json={"task": "@fake hang"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_given_no_key_a_bad_key_or_a_revoked_key_then_401_with_a_bearer_challenge(
    fleet: Fleet,
) -> None:
    store = KeyStore(fleet.settings)
    record, revoked_key = store.create("revoked", Role.ADMIN)
    store.revoke(record.id)  # never verified, so no API process has it cached
    with httpx.Client(base_url=fleet.api_url, timeout=30) as anonymous:
        answers = [
            anonymous.get("/jobs"),
            anonymous.get("/jobs", headers=bearer("agk_0123456789ab_not-a-real-key-at-all")),
            anonymous.get("/jobs", headers={"Authorization": "Basic dXNlcjpwdw=="}),
            anonymous.post("/jobs", json={"task": "x"}, headers=bearer(revoked_key)),
            anonymous.get("/status", headers=bearer(revoked_key)),
        ]

    assert [r.status_code for r in answers] == [401] * 5
    assert all(r.headers["WWW-Authenticate"] == "Bearer" for r in answers)


def test_given_no_key_then_401_comes_before_anything_reads_the_body(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.api_url, timeout=30) as anonymous:
        answers = [
            anonymous.post(
                "/jobs", content=b"{not json", headers={"content-type": "application/json"}
            ),
            anonymous.post("/jobs", content=b"x" * (fleet.settings.max_body_bytes + 1)),
            anonymous.post("/jobs", json={"task": ""}),
            anonymous.post("/jobs/nope/cancel"),
            anonymous.get("/no-such-route"),
        ]

    assert [r.status_code for r in answers] == [401] * 5, [r.text for r in answers]


def test_given_no_key_then_probes_and_api_docs_stay_open(fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.api_url, timeout=30) as anonymous:
        codes = {path: anonymous.get(path).status_code for path in
                 ("/healthz", "/readyz", "/docs", "/openapi.json")}  # fmt: skip

    assert codes == {"/healthz": 200, "/readyz": 200, "/docs": 200, "/openapi.json": 200}


def test_given_a_viewer_then_it_reads_but_may_not_submit_cancel_or_retry(fleet: Fleet) -> None:
    with client_as(fleet, Role.VIEWER) as viewer:
        reads = [viewer.get(p).status_code for p in ("/jobs", "/profiles", "/status", "/dlq")]
        submit = viewer.post("/jobs", json={"task": "hello"})
        # no such job: the role is refused before anything is looked up
        cancel = viewer.post("/jobs/no-such-job/cancel")
        retry = viewer.post("/jobs/no-such-job/retry")
        keys = viewer.get("/keys")

    assert reads == [200, 200, 200, 200]
    assert [submit.status_code, cancel.status_code, retry.status_code] == [403, 403, 403]
    assert "needs the operator role" in submit.json()["detail"]
    assert keys.status_code == 403


def test_given_two_operators_then_each_acts_only_on_its_own_jobs_and_an_admin_on_all(
    fleet: Fleet,
) -> None:
    with (
        client_as(fleet, Role.OPERATOR, "alice") as alice,
        client_as(fleet, Role.OPERATOR, "bob") as bob,
    ):
        first, second = start_hanging(alice), start_hanging(alice)
        job = alice.get(f"/jobs/{first}").json()
        bob_cancel = bob.post(f"/jobs/{first}/cancel")
        bob_retry = bob.post(f"/jobs/{first}/retry")
        bob_missing = bob.post("/jobs/no-such-job/cancel")
        alice_cancel = alice.post(f"/jobs/{first}/cancel")
        admin_cancel = fleet.http.post(f"/jobs/{second}/cancel")
        admin_retry = fleet.http.post(f"/jobs/{second}/retry")

    assert job["submitted_by"]["name"] == "alice" and len(job["submitted_by"]["id"]) == 12
    assert bob_cancel.status_code == 403 and "another key" in bob_cancel.json()["detail"]
    assert bob_retry.status_code == 403
    assert bob_missing.status_code == 404  # an operator may cancel: the lookup follows
    assert alice_cancel.status_code == 200 and alice_cancel.json()["status"] == "cancelled"
    assert admin_cancel.status_code == 200 and admin_cancel.json()["status"] == "cancelled"
    assert admin_retry.status_code == 409  # allowed, but only dead jobs are retried


def test_given_a_session_then_only_its_owner_or_an_admin_may_resume_it(fleet: Fleet) -> None:
    with (
        client_as(fleet, Role.OPERATOR, "owner") as owner,
        client_as(fleet, Role.OPERATOR, "other") as other,
    ):
        created = owner.post("/jobs", json={"task": "@fake result first", "wait": True})
        session = created.json()["session_id"]
        resume = {"task": "@fake result again", "session_id": session, "wait": True}
        stranger = other.post("/jobs", json=resume)
        by_owner = owner.post("/jobs", json=resume)
        by_admin = fleet.http.post("/jobs", json=resume)
        unknown = other.post("/jobs", json=resume | {"session_id": str(uuid.uuid4())})

    assert created.status_code == 200 and session
    assert stranger.status_code == 403 and "belongs to another key" in stranger.json()["detail"]
    assert by_owner.status_code == 200 and by_owner.json()["status"] == "succeeded"
    assert by_admin.status_code == 200 and by_admin.json()["status"] == "succeeded"
    assert by_admin.json()["submitted_by"]["name"] == "test-admin"
    assert unknown.status_code == 403 and "no recorded owner" in unknown.json()["detail"]


def test_given_an_operator_then_the_idempotency_key_is_its_own(fleet: Fleet) -> None:
    with client_as(fleet, Role.OPERATOR, "a") as a, client_as(fleet, Role.OPERATOR, "b") as b:
        body = {"task": "@fake result once", "idempotency_key": f"same-{uuid.uuid4()}"}
        first = a.post("/jobs", json=body)
        again = a.post("/jobs", json=body)
        other = b.post("/jobs", json=body)

    assert first.json()["id"] == again.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    assert other.json()["submitted_by"]["name"] == "b"


def test_given_an_admin_then_keys_are_managed_over_rest(fleet: Fleet) -> None:
    created = fleet.http.post("/keys", json={"name": "rest-made", "role": "viewer"})
    key_id, key = created.json()["id"], created.json()["key"]
    listed = fleet.http.get("/keys").json()["data"]
    with httpx.Client(base_url=fleet.api_url, timeout=30, headers=bearer(key)) as viewer:
        before = viewer.get("/jobs").status_code
        revoked = fleet.http.delete(f"/keys/{key_id}")
        # the same API process drops its cached verdict at once; others within the cache time
        after = viewer.get("/jobs").status_code if fleet.backend == "embedded" else None
    bad_role = fleet.http.post("/keys", json={"name": "x", "role": "root"})
    unknown = fleet.http.delete("/keys/0123456789ab")

    assert created.status_code == 201 and key.startswith(f"agk_{key_id}_")
    assert key_id in [k["id"] for k in listed] and key not in json.dumps(listed)
    assert before == 200 and revoked.json()["revoked"] is not None
    assert after in (401, None)
    assert bad_role.status_code == 422 and unknown.status_code == 404


def test_given_the_keys_commands_then_create_list_and_revoke_work_on_the_store(
    fleet: Fleet,
) -> None:
    created = cli(fleet, "keys", "create", "--name", "script", "--role", "operator")
    as_json = cli(fleet, "keys", "create", "--name", "json", "--role", "viewer", "--json")
    key = created.stdout.strip().splitlines()[-1]
    listed = cli(fleet, "keys", "list")
    listed_json = json.loads(cli(fleet, "keys", "list", "--json").stdout)

    assert created.returncode == 0 and key.startswith("agk_")
    assert set(json.loads(as_json.stdout)) == {"id", "key"}
    assert listed.returncode == 0 and "script" in listed.stdout
    assert key not in listed.stdout and json.loads(as_json.stdout)["key"] not in listed.stdout
    assert {"id", "name", "role", "created", "revoked"} <= set(listed_json[0])
    assert all(k["key"] not in json.dumps(listed_json) for k in [json.loads(as_json.stdout)])

    with extra_api(fleet, api_key_cache_seconds="1") as api:
        by_key = api.get("/jobs", headers=bearer(key))
        revoked = cli(fleet, "keys", "revoke", key.split("_")[1])
        wait_for(
            lambda: api.get("/jobs", headers=bearer(key)).status_code == 401,
            timeout=30,
            what="the revoked key to be refused",
        )
    refused = cli(fleet, "jobs", AGENTICORE_API_KEY=key)

    assert by_key.status_code == 200
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert refused.returncode == 2 and "the API refused the key" in refused.stderr


def test_given_bad_keys_usage_then_exit_2_with_a_message(fleet: Fleet) -> None:
    outs = [
        cli(fleet, "keys", "create", "--name", "x", "--role", "root"),
        cli(fleet, "keys", "create", "--name", "", "--role", "viewer"),
        cli(fleet, "keys", "create", "--name", "a\x07b", "--role", "viewer"),
        cli(fleet, "keys", "revoke", "0123456789ab"),
    ]

    assert [o.returncode for o in outs] == [2, 2, 2, 2]
    assert "unknown role" in outs[0].stderr and "empty" in outs[1].stderr
    assert "control characters" in outs[2].stderr and "no API key" in outs[3].stderr
    assert all("Traceback" not in o.stderr for o in outs)


def test_given_a_viewer_key_then_the_cli_says_the_api_refused_it(fleet: Fleet) -> None:
    _, viewer = KeyStore(fleet.settings).create("cli-viewer", Role.VIEWER)

    refused = cli(fleet, "run", "hello", AGENTICORE_API_KEY=viewer)
    allowed = cli(fleet, "jobs", AGENTICORE_API_KEY=viewer)

    assert refused.returncode == 2 and "the API refused the key" in refused.stderr
    assert "operator role" in refused.stderr and "Traceback" not in refused.stderr
    assert allowed.returncode == 0


def test_given_auth_disabled_then_serve_refuses_a_public_address_and_loopback_is_open(
    fleet: Fleet,
) -> None:
    out = cli(
        fleet, "serve", "--host", "0.0.0.0", "--port", str(free_port()),
        AGENTICORE_AUTH_DISABLED="true",
    )  # fmt: skip
    with (
        extra_api(fleet, auth_disabled="true") as api,
        httpx.Client(base_url=api.base_url, timeout=30) as anonymous,
    ):
        listed = anonymous.get("/jobs")

    assert out.returncode == 2 and "AUTH_DISABLED" in out.stderr and "0.0.0.0" in out.stderr
    assert listed.status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("fleet", ["redis"], indirect=True)
def test_given_flower_with_basic_auth_then_its_api_wants_the_credentials(fleet: Fleet) -> None:
    port, credentials = free_port(), f"watcher:{uuid.uuid4().hex}"
    env = fleet.env | {"AGENTICORE_FLOWER_BASIC_AUTH": credentials}
    flower = subprocess.Popen(
        [sys.executable, "-m", "agenticore.cli", "flower", "--port", str(port)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            def answers() -> httpx.Response | None:
                try:
                    return http.get("/api/workers")
                except httpx.HTTPError:
                    return None

            anonymous = wait_for(answers, timeout=60, what="Flower")
            user, password = credentials.split(":")
            authorized = http.get("/api/workers", auth=(user, password))
            wrong = http.get("/api/workers", auth=(user, "wrong"))
        argv = (Path("/proc") / str(flower.pid) / "cmdline").read_bytes().decode()
    finally:
        flower.terminate()
        try:
            flower.wait(timeout=20)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait()

    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert authorized.status_code == 200
    assert "flower" in argv and password not in argv  # credentials travel in the environment


def test_given_no_basic_auth_then_flower_refuses_a_public_address(fleet: Fleet) -> None:
    out = cli(fleet, "flower", "--address", "0.0.0.0", "--port", str(free_port()))

    assert out.returncode == 2 and "FLOWER_BASIC_AUTH" in out.stderr
    assert "Traceback" not in out.stderr
