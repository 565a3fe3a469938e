"""A small synchronous client for the Agenticore REST API (used by the CLI)."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ApiError", "ApiUnavailable", "Client"]


class ApiError(Exception):
    """The API answered with an error status; ``detail`` is its message."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ApiUnavailable(Exception):
    """The API could not be reached at all."""


class Client:
    def __init__(self, base_url: str, timeout: float = 30.0, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.has_key = bool(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/jobs", json=spec)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}")

    def jobs(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/cancel")

    def diff(self, job_id: str) -> bytes:
        """The unified diff of the job's work against its base, as git printed it."""
        return self._send("GET", f"/jobs/{job_id}/diff").content

    def bundle(self, job_id: str) -> bytes:
        """A git bundle of the job branch's commits past its base."""
        return self._send("GET", f"/jobs/{job_id}/bundle").content

    def profiles(self) -> dict[str, Any]:
        return self._request("GET", "/profiles")

    def fleet_status(self) -> dict[str, Any]:
        """Workers, breakers and the queue (``GET /status``, a viewer key)."""
        return self._request("GET", "/status")

    def ready(self) -> dict[str, Any]:
        return self._request("GET", "/readyz", accept=(200, 503))

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = self._send(method, path, accept=accept, **kwargs).json()
        return body

    def _send(
        self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiUnavailable(
                f"cannot reach the Agenticore API at {self.base_url}: {exc}"
            ) from None
        if response.is_error and response.status_code not in accept:
            raise ApiError(response.status_code, _detail(response))
        return response


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
            for item in detail
        )
    return str(detail)
