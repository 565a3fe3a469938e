"""Input limits in the library itself, whatever the entry point: task size in bytes, and
ids and names that become paths."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agenticore.config import Settings
from agenticore.errors import InvalidRequest, ProfileNotFound
from agenticore.jobs import JobStore
from agenticore.models import JobSpec
from agenticore.profiles import carry_session, job_from_spec, load_profile


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(max_task_bytes=1000)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_given_the_default_limit_then_60000_four_byte_characters_make_a_job(
    make_settings: Callable[..., Settings],
) -> None:
    task = "😀" * 60_000  # 240,000 bytes

    job = job_from_spec(make_settings(), JobSpec(task=task))

    assert job.task == task


def test_given_a_task_over_max_task_bytes_then_the_error_counts_bytes_not_characters(
    settings: Settings,
) -> None:
    task = "😀" * 250 + "x"  # 251 characters, 1001 bytes

    with pytest.raises(InvalidRequest, match=r"task is 1001 bytes \(UTF-8\); the limit is 1000"):
        job_from_spec(settings, JobSpec(task=task))

    assert job_from_spec(settings, JobSpec(task="😀" * 250)).task  # exactly 1000 bytes


@pytest.mark.parametrize("job_id", ["../../etc/x", "a/b", ".hidden", "x" * 65])
def test_given_a_caller_chosen_id_that_is_a_path_then_no_job_is_made_and_nothing_written(
    settings: Settings, job_id: str
) -> None:
    with pytest.raises(InvalidRequest, match="job ids use"):
        job_from_spec(settings, JobSpec(task="x"), job_id)

    assert JobStore(settings).find(job_id) is None
    assert files_under(settings.home) == []


@pytest.mark.parametrize("name", ["default\n", "../default", "default/..", "."])
def test_given_a_profile_name_that_is_no_folder_name_then_it_is_not_found(
    settings: Settings, name: str
) -> None:
    with pytest.raises(ProfileNotFound):
        load_profile(settings, name)


@pytest.mark.parametrize("session", ["*", "../../x", "*/../*", str(uuid.uuid4()) + "\n", ""])
def test_given_a_session_id_that_is_no_uuid_then_carry_session_refuses_before_globbing(
    settings: Settings, tmp_path: Path, session: str
) -> None:
    # a transcript the glob "*" would find, were the id not checked
    other = settings.jobs_dir / "other" / ".claude" / "projects" / "p" / "secret.jsonl"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    config_dir = tmp_path / "config"

    with pytest.raises(InvalidRequest, match="session_id must be a UUID"):
        carry_session(settings, session, config_dir, tmp_path / "cwd", ran_it=lambda _: True)

    assert not config_dir.exists()


def test_given_a_uuid_session_with_no_transcript_then_carry_session_finds_none(
    settings: Settings, tmp_path: Path
) -> None:
    assert not carry_session(
        settings, str(uuid.uuid4()), tmp_path / "c", tmp_path / "cwd", ran_it=lambda _: True
    )
