"""Pull request providers: one module per forge API, one small interface.

``provider_for(settings, forge)`` returns the client for a resolved ``Forge``.
"""

from __future__ import annotations

from agenticore.config import Settings
from agenticore.forges import Forge
from agenticore.providers.base import Proposal, PullRequest, PullRequestProvider
from agenticore.providers.github import GitHubProvider
from agenticore.providers.gitlab import GitLabProvider

__all__ = ["Proposal", "PullRequest", "PullRequestProvider", "provider_for"]


def provider_for(settings: Settings, forge: Forge) -> PullRequestProvider:
    if forge.provider == "gitlab":
        return GitLabProvider(settings, forge)
    return GitHubProvider(settings, forge)
