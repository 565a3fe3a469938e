"""Input limits at the HTTP edge, on a real API process: 413 for large bodies before any
parsing, 422 for long tasks and control characters, and nothing written for any refusal."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.unit.api.conftest import SecuredApi, secured_api

SMALL_LIMIT = 4096


@pytest.fixture(scope="module")
def small_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApi]:
    """MAX_BODY_BYTES = 4 KiB, so an oversized body is cheap to send."""
    with secured_api(tmp_path_factory.mktemp("small"), max_body_bytes=SMALL_LIMIT) as api:
        yield api


@pytest.fixture(scope="module", params=["embedded", "redis"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[SecuredApi]:
    """Default limits (1 MiB bodies, 256 KiB tasks), on each backend."""
    home = tmp_path_factory.mktemp(f"limits-{request.param}")
    with secured_api(home, redis_url if request.param == "redis" else None) as api:
        yield api


def raw_request(api: SecuredApi, head: str, body: bytes = b"") -> bytes:
    """Sends a request exactly as given (no client library in between) and returns what
    the server answers before it closes the connection, without sending anything more."""
    host, port = "127.0.0.1", api.settings.port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def post_head(api: SecuredApi, length_header: str) -> str:
    return (
        "POST /jobs HTTP/1.1\n"
        f"Host: 127.0.0.1:{api.settings.port}\n"
        f"Authorization: Bearer {api.key}\n"
        "Content-Type: application/json\n"
        f"{length_header}\n"
    )


def test_given_a_declared_length_over_the_limit_then_413_before_a_byte_of_body_is_sent(
    small_api: SecuredApi,
) -> None:
    before = small_api.footprint()

    # ten megabytes announced, none sent: only an answer by the header can arrive
    answer = raw_request(small_api, post_head(small_api, "Content-Length: 10000000"))

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    body = rest.partition(b"\r\n\r\n")[2]
    assert json.loads(body) == {"detail": f"request body is larger than {SMALL_LIMIT} bytes"}
    assert small_api.footprint() == before


def test_given_a_chunked_body_that_passes_the_limit_then_413_before_the_body_ends(
    small_api: SecuredApi,
) -> None:
    before = small_api.footprint()
    chunk = b"x" * (SMALL_LIMIT + 1)

    # one chunk past the limit and no final chunk: the server must not wait for the end
    answer = raw_request(
        small_api,
        post_head(small_api, "Transfer-Encoding: chunked"),
        f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert small_api.footprint() == before


def test_given_an_oversized_chunked_body_from_httpx_then_413(small_api: SecuredApi) -> None:
    pieces = [b'{"task": "', b"x" * 3000, b"y" * 3000, b'"}']

    # an iterator has no length, so httpx sends it chunked: no Content-Length to go by
    response = small_api.http.post(
        "/jobs", content=iter(pieces), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json() == {"detail": f"request body is larger than {SMALL_LIMIT} bytes"}
    assert "content-length" not in response.request.headers


def test_given_a_chunked_body_within_the_limit_then_the_app_gets_all_of_it(
    small_api: SecuredApi,
) -> None:
    pieces = [b'{"task": "', b"chunked " * 100, b'"}']

    response = small_api.http.post(
        "/jobs", content=iter(pieces), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 202, response.text
    assert response.json()["task"] == ("chunked " * 100)


def test_given_a_long_multibyte_task_under_the_byte_limit_then_it_is_accepted(
    api: SecuredApi,
) -> None:
    task = "日本語のタスク😀" * 7_500  # 60,000 characters, 225,000 bytes in UTF-8
    body = json.dumps({"task": task}, ensure_ascii=False).encode()

    response = api.http.post("/jobs", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 202, response.text
    assert api.http.get(f"/jobs/{response.json()['id']}").json()["task"] == task


def test_given_a_task_one_byte_over_max_task_bytes_then_422_and_nothing_is_written(
    api: SecuredApi,
) -> None:
    before = api.footprint()
    limit = api.settings.max_task_bytes
    task = "é" * (limit // 2) + "x"  # fewer characters than the limit, one byte more

    response = api.http.post("/jobs", json={"task": task})

    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"task is {limit + 1} bytes (UTF-8); the limit is {limit} (MAX_TASK_BYTES)"
    )
    assert api.footprint() == before


@pytest.mark.parametrize(
    "field", ["base_ref", "profile", "model", "pr_labels", "pr_reviewers", "idempotency_key"]
)
@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f"])
def test_given_a_control_character_in_a_field_then_422_and_nothing_is_written(
    api: SecuredApi, field: str, char: str
) -> None:
    before = api.footprint()
    value = f"name{char}"
    spec = {"task": "x", field: [value] if field.startswith("pr_") else value}

    response = api.http.post("/jobs", json=spec)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]
    assert value not in response.text  # 422s never echo what was sent
    assert api.footprint() == before


def test_given_a_control_character_in_the_repo_url_then_422_and_nothing_is_written(
    api: SecuredApi,
) -> None:
    before = api.footprint()

    response = api.http.post("/jobs", json={"task": "x", "repo_url": "https://h/a\x1b[2J.git"})

    assert response.status_code == 422
    assert "control characters" in response.text
    assert api.footprint() == before


def test_given_a_control_character_in_the_idempotency_header_then_422_and_no_claim(
    api: SecuredApi,
) -> None:
    before = api.footprint()

    # a tab is the one control character HTTP lets into a header value
    response = api.http.post("/jobs", json={"task": "x"}, headers={"Idempotency-Key": "a\tb"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert api.footprint() == before


def test_given_a_job_id_that_is_no_safe_file_name_then_no_file_is_read_for_it(
    api: SecuredApi,
) -> None:
    # a record a safe id could never name: only an unchecked id reaches it
    planted = api.settings.jobs_dir / ".planted.json"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(json.dumps({"id": "planted", "task": "x"}))
    try:
        response = api.http.get("/jobs/.planted")
    finally:
        planted.unlink()

    assert response.status_code == 404
