"""GitHub (and GitHub Enterprise, via ``api_url``) pull requests through PyGithub."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
from github import Auth, Github, GithubException
from github.PullRequest import PullRequest as GitHubPull

from agenticore.config import Settings
from agenticore.forges import Forge
from agenticore.providers.base import Proposal, PullRequest, refused, unreachable
from agenticore.redaction import redact_url

__all__ = ["GitHubProvider"]


class GitHubProvider:
    def __init__(self, settings: Settings, forge: Forge) -> None:
        self.forge = forge
        self.owner = forge.project.split("/", 1)[0]
        self.client = Github(
            auth=Auth.Token(forge.token.get_secret_value()) if forge.token else None,
            base_url=forge.api_url,
            timeout=int(settings.forge_timeout_seconds),
            retry=None,  # the PR task retries with backoff; a blocked worker helps nobody
            seconds_between_requests=None,
            seconds_between_writes=settings.github_write_interval_seconds or None,
            lazy=True,
        )
        self.repo = self.client.get_repo(forge.project)

    def find(self, head: str) -> PullRequest | None:
        with self._errors("list pull requests"):
            pulls = list(self.repo.get_pulls(state="all", head=f"{self.owner}:{head}"))
        pulls.sort(key=lambda pull: pull.state != "open")  # stable: newest open one first
        return _public(pulls[0]) if pulls else None

    def create(self, proposal: Proposal) -> PullRequest:
        with self._errors("open a pull request"):
            pull = self.repo.create_pull(
                base=proposal.base,
                head=proposal.head,
                title=proposal.title,
                body=proposal.body,
                draft=proposal.draft,
            )
        return _public(pull)

    def update(self, number: int, proposal: Proposal) -> PullRequest:
        with self._errors("update the pull request"):
            pull = self.repo.get_pull(number)
            pull.edit(title=proposal.title, body=proposal.body)
        return _public(pull)

    def add_labels(self, number: int, labels: list[str]) -> None:
        with self._errors("add labels"):
            self.repo.get_issue(number).add_to_labels(*labels)

    def request_reviewers(self, number: int, reviewers: list[str]) -> None:
        teams = [name.split("/", 1)[1] for name in reviewers if "/" in name]
        users = [name for name in reviewers if "/" not in name]
        with self._errors("request reviewers"):
            self.repo.get_pull(number).create_review_request(reviewers=users, team_reviewers=teams)

    def close(self) -> None:
        self.client.close()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        repo = redact_url(self.forge.repo_url)
        try:
            yield
        except GithubException as exc:
            raise refused(
                "GitHub", action, self.forge.project,
                status=exc.status, reason=_reason(exc), headers=exc.headers, repo=repo,
            ) from None  # fmt: skip
        except requests.RequestException as exc:
            raise unreachable("GitHub", action, exc, repo=repo) from None


def _reason(exc: GithubException) -> str:
    """GitHub's message plus the details of a 422 ("A pull request already exists ...")."""
    data = exc.data if isinstance(exc.data, dict) else {}
    details = [e.get("message", "") for e in data.get("errors", []) if isinstance(e, dict)]
    return "; ".join(filter(None, [str(data.get("message") or exc.message or ""), *details]))


def _public(pull: GitHubPull) -> PullRequest:
    return PullRequest(number=pull.number, url=pull.html_url, open=pull.state == "open")
