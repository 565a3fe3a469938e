"""GitLab merge requests (gitlab.com or self-hosted, via ``api_url``) over its REST API v4."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from agenticore.config import Settings
from agenticore.errors import ForgeError
from agenticore.forges import Forge
from agenticore.providers.base import Proposal, PullRequest, refused, unreachable
from agenticore.redaction import redact_url

__all__ = ["GitLabProvider"]

_DRAFT = "Draft: "


class GitLabProvider:
    def __init__(self, settings: Settings, forge: Forge) -> None:
        self.forge = forge
        headers = {"PRIVATE-TOKEN": forge.token.get_secret_value()} if forge.token else {}
        self.http = httpx.Client(
            base_url=f"{forge.api_url}/projects/{quote(forge.project, safe='')}",
            headers=headers,
            timeout=settings.forge_timeout_seconds,
        )

    def find(self, head: str) -> PullRequest | None:
        found = self._call("list merge requests", "GET", "/merge_requests",
                           params={"source_branch": head, "state": "all"})  # fmt: skip
        requests = sorted(found, key=lambda mr: mr["state"] != "opened")
        return _public(requests[0]) if requests else None

    def create(self, proposal: Proposal) -> PullRequest:
        body = {
            "source_branch": proposal.head,
            "target_branch": proposal.base,
            "title": _title(proposal),
            "description": proposal.body,
        }
        return _public(self._call("open a merge request", "POST", "/merge_requests", json=body))

    def update(self, number: int, proposal: Proposal) -> PullRequest:
        body = {"title": _title(proposal), "description": proposal.body}
        return _public(self._call("update the merge request", "PUT",
                                  f"/merge_requests/{number}", json=body))  # fmt: skip

    def add_labels(self, number: int, labels: list[str]) -> None:
        self._call("add labels", "PUT", f"/merge_requests/{number}",
                   json={"add_labels": ",".join(labels)})  # fmt: skip

    def request_reviewers(self, number: int, reviewers: list[str]) -> None:
        ids = [self._user_id(name) for name in reviewers]
        self._call("request reviewers", "PUT", f"/merge_requests/{number}",
                   json={"reviewer_ids": ids})  # fmt: skip

    def close(self) -> None:
        self.http.close()

    def _user_id(self, username: str) -> int:
        users = self._call("look up a reviewer", "GET", f"{self.forge.api_url}/users",
                           params={"username": username})  # fmt: skip
        if not users:
            raise ForgeError(f"GitLab has no user {username!r} to request a review from",
                             repo=redact_url(self.forge.repo_url), status=404)  # fmt: skip
        return int(users[0]["id"])

    def _call(self, action: str, method: str, path: str, **kwargs: Any) -> Any:
        repo = redact_url(self.forge.repo_url)
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable("GitLab", action, exc, repo=repo) from None
        if response.is_error:
            raise refused(
                "GitLab", action, self.forge.project,
                status=response.status_code, reason=_reason(response),
                headers=response.headers, repo=repo,
            )  # fmt: skip
        return response.json()


def _title(proposal: Proposal) -> str:
    return f"{_DRAFT}{proposal.title}" if proposal.draft else proposal.title


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    message = data.get("message") or data.get("error") if isinstance(data, dict) else data
    return str(message or "")


def _public(data: dict[str, Any]) -> PullRequest:
    return PullRequest(number=int(data["iid"]), url=str(data["web_url"]),
                       open=data.get("state") == "opened")  # fmt: skip
