"""Profiles: loading, the agent argv, the per-job config dir."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import InvalidRequest, ProfileNotFound
from agenticore.models import Job, JobSpec
from agenticore.profiles import build_cli_args, list_profiles, load_profile, materialize


def write_profile(settings: Settings, name: str, yml: str, **files: str) -> Path:
    folder = settings.user_profiles_dir / name
    folder.mkdir(parents=True)
    (folder / "profile.yml").write_text(yml)
    for filename, text in files.items():
        (folder / filename.replace("_", ".")).write_text(text)
    return folder


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def test_given_no_user_profiles_then_the_builtin_default_is_there(settings: Settings) -> None:
    profile = load_profile(settings, "default")

    assert [p.name for p in list_profiles(settings)] == ["default"]
    assert profile.permission_mode == "acceptEdits" and profile.claude_md is not None


def test_given_an_unknown_profile_then_the_error_lists_the_available_ones(
    settings: Settings,
) -> None:
    write_profile(settings, "reviewer", "model: opus\n")

    with pytest.raises(
        ProfileNotFound, match="unknown profile 'nope'; available: default, reviewer"
    ):
        load_profile(settings, "nope")
    with pytest.raises(ProfileNotFound):
        load_profile(settings, "../default")


def test_given_a_broken_profile_then_loading_it_explains_and_listing_skips_it(
    settings: Settings,
) -> None:
    write_profile(settings, "broken", "max_turns: many\n")

    with pytest.raises(InvalidRequest, match="profile 'broken' is invalid"):
        load_profile(settings, "broken")
    assert [p.name for p in list_profiles(settings)] == ["default"]


def test_given_a_profile_and_a_job_then_the_argv_carries_every_setting(
    settings: Settings,
) -> None:
    write_profile(
        settings,
        "strict",
        "model: opus\nmax_turns: 5\npermission_mode: plan\nallowed_tools: [Read, 'Bash(ls:*)']\n"
        "disallowed_tools: [Write]\nappend_system_prompt: Be brief.\n",
    )
    job = Job.from_spec(JobSpec(task="Fix it", profile="strict"))
    job = job.model_copy(update={"session_id": "0d6f1c1e-8d7a-4a53-9d0c-2f1b1e0e6a7b"})

    argv = build_cli_args(load_profile(settings, "strict"), job, claude_bin="/bin/claude")

    assert argv[:5] == ["/bin/claude", "-p", "--output-format", "stream-json", "--verbose"]
    pairs = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert pairs == {
        "--model": "opus",
        "--session-id": "0d6f1c1e-8d7a-4a53-9d0c-2f1b1e0e6a7b",
        "--max-turns": "5",
        "--permission-mode": "plan",
        "--allowedTools": "Read,Bash(ls:*)",
        "--disallowedTools": "Write",
        "--append-system-prompt": "Be brief.",
    }


# option names whose next argument is their value; every other argument is a flag
VALUE_OPTIONS = {
    "--output-format", "--model", "--session-id", "--resume", "--max-turns", "--max-budget-usd",
    "--permission-mode", "--allowedTools", "--disallowedTools", "--append-system-prompt",
    "--mcp-config",
}  # fmt: skip
FLAGS = {"-p", "--verbose"}


@pytest.mark.parametrize(
    "task",
    [
        "Fix it",
        "--dangerously-skip-permissions",
        "- fix the typo",
        "-p",
        "--",
        "opus",
        "--model=opus --permission-mode bypassPermissions",
        "日本" * 30_000,
    ],
)
def test_given_any_task_then_the_argv_holds_no_task_and_no_operand(
    settings: Settings, task: str
) -> None:
    # given: a profile with every option, and the same job with a plain task
    write_profile(
        settings,
        "full",
        "model: opus\nmax_turns: 5\npermission_mode: plan\nallowed_tools: [Read]\n"
        "disallowed_tools: [Write]\nappend_system_prompt: Be brief.\n",
    )
    profile = load_profile(settings, "full")
    session = {"session_id": "0d6f1c1e-8d7a-4a53-9d0c-2f1b1e0e6a7b"}
    job = Job.from_spec(JobSpec(task=task, profile="full")).model_copy(update=session)
    plain = Job.from_spec(JobSpec(task="plain", profile="full")).model_copy(update=session)

    # when
    argv = build_cli_args(profile, job, mcp_config=Path("/jobs/x/.mcp.json"))

    # then: the argv does not depend on the task at all (so holds none of it) ...
    assert argv == build_cli_args(profile, plain, mcp_config=Path("/jobs/x/.mcp.json"))
    # ... and after the binary there are only options and their values: no operand
    rest = iter(argv[1:])
    for arg in rest:
        assert arg in FLAGS or arg in VALUE_OPTIONS, f"unexpected operand {arg!r} in {argv}"
        if arg in VALUE_OPTIONS:
            next(rest)


def test_given_a_job_model_and_a_session_to_resume_then_they_override(settings: Settings) -> None:
    job = Job.from_spec(
        JobSpec(task="go", model="haiku", session_id="0d6f1c1e-8d7a-4a53-9d0c-2f1b1e0e6a7b")
    )

    argv = build_cli_args(load_profile(settings, "default"), job, resume=True)

    assert argv[argv.index("--model") + 1] == "haiku"
    assert argv[argv.index("--resume") + 1] == job.session_id
    assert "--session-id" not in argv


def test_given_a_full_profile_when_materialized_then_the_job_config_dir_holds_it(
    settings: Settings,
) -> None:
    mcp = {"mcpServers": {"docs": {"command": "docs-mcp", "args": ["--stdio"]}}}
    write_profile(
        settings,
        "full",
        "model: sonnet\npermission_mode: acceptEdits\nallowed_tools: [Read]\n",
        CLAUDE_md="# Rules\n",
        settings_json=json.dumps({"env": {"FOO": "1"}}),
        mcp_json=json.dumps(mcp),
    )
    job = Job.from_spec(JobSpec(task="x", profile="full"))

    config = materialize(settings, load_profile(settings, "full"), job)

    assert config.config_dir == settings.agent_homes_dir / job.id / ".claude"
    written = json.loads((config.config_dir / "settings.json").read_text())
    assert written == {
        "env": {"FOO": "1"},
        "permissions": {"defaultMode": "acceptEdits", "allow": ["Read"]},
        "model": "sonnet",
    }
    assert (config.config_dir / "CLAUDE.md").read_text() == "# Rules\n"
    assert config.mcp_config == settings.agent_homes_dir / job.id / ".mcp.json"
    assert json.loads(config.mcp_config.read_text()) == mcp


def test_given_budgets_on_the_job_then_the_cli_gets_max_turns_and_max_budget(
    settings: Settings,
) -> None:
    job = Job.from_spec(JobSpec(task="go", max_turns=7, max_cost_usd=1.25))
    job = job.model_copy(update={"session_id": "0d6f1c1e-8d7a-4a53-9d0c-2f1b1e0e6a7b"})

    argv = build_cli_args(load_profile(settings, "default"), job)

    assert argv[argv.index("--max-turns") + 1] == "7"
    assert argv[argv.index("--max-budget-usd") + 1] == "1.25"
