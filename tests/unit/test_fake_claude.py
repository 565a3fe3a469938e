"""Tests of the fake ``claude`` CLI used as a test double (tests/fake_claude/claude).

Every test runs the script as a subprocess with an argv list, in given/when/then style.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "fake_claude" / "claude"
STREAM = ["--output-format", "stream-json", "--verbose"]
SESSION_ID = "0b6c5e8e-3c1f-4d0a-9a59-2f8a1d7e4c11"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no CLAUDECODE, a private CLAUDE_CONFIG_DIR."""
    clean = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}
    clean["CLAUDE_CONFIG_DIR"] = str(tmp_path / "config")
    return clean


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def run_fake(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 10
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAKE_CLAUDE), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def events_of(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def transcript_path(env: dict[str, str], cwd: Path, session_id: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]", "-", str(cwd))
    return Path(env["CLAUDE_CONFIG_DIR"]) / "projects" / slug / f"{session_id}.jsonl"


def read_lines_until(
    proc: subprocess.Popen[bytes], predicate: Any, timeout: float = 5
) -> list[str]:
    """Read stdout lines of a running process until predicate(line) is true."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    lines: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            lines.append(raw.decode())
            if predicate(lines[-1]):
                return lines
    raise AssertionError(f"expected line not seen; got {lines!r}")


@contextmanager
def running_fake(
    args: list[str], cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A fake started in the background; killed and closed whatever the test does."""
    proc = subprocess.Popen(
        [str(FAKE_CLAUDE), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def pid_is_gone(pid: int, timeout: float = 3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie waiting for its new parent to reap it is dead too
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


# --- CLI surface -----------------------------------------------------------------


def test_given_the_script_then_it_is_an_executable_python3_script() -> None:
    assert os.access(FAKE_CLAUDE, os.X_OK)
    assert FAKE_CLAUDE.read_text().startswith("#!/usr/bin/env python3\n")


def test_given_version_flag_when_run_then_prints_fake_version(workdir: Path, env: dict) -> None:
    for flag in ("--version", "-v"):
        proc = run_fake(flag, cwd=workdir, env=env)
        assert proc.returncode == 0
        assert proc.stdout.strip() == "2.1.0 (Claude Code) [fake]"


def test_given_help_flag_when_run_then_prints_usage(workdir: Path, env: dict) -> None:
    proc = run_fake("--help", cwd=workdir, env=env)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: claude")


def test_given_unknown_option_when_run_then_commander_error(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hello", "--x", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert "error: unknown option '--x'" in proc.stderr
    assert proc.stdout == ""


def test_given_value_option_without_value_then_argument_missing(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hello", "--model", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert "error: option '--model <model>' argument missing" in proc.stderr


def test_given_stream_json_without_verbose_then_usage_error(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hello", "--output-format", "stream-json", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert (
        "Error: When using --print, --output-format=stream-json requires --verbose" in proc.stderr
    )


def test_given_claudecode_env_when_run_then_refuses(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hello", cwd=workdir, env={**env, "CLAUDECODE": "1"})
    assert proc.returncode == 1
    assert "Error: Claude Code cannot be launched inside another Claude Code session." in (
        proc.stderr
    )


def test_given_no_print_flag_then_interactive_mode_unsupported(workdir: Path, env: dict) -> None:
    proc = run_fake("hello", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert "interactive mode is not supported" in proc.stderr


INPUT_MISSING = (
    "Error: Input must be provided either through stdin or as a prompt argument when using --print"
)


def prompt_of_session(env: dict[str, str], cwd: Path) -> str:
    """The prompt the fake worked on: the first user message of its session transcript."""
    first = json.loads(transcript_path(env, cwd, SESSION_ID).read_text().splitlines()[0])
    assert first["type"] == "user"
    content: str = first["message"]["content"]
    return content


def test_given_no_prompt_and_empty_stdin_then_input_must_be_provided(
    workdir: Path, env: dict
) -> None:
    # given: /dev/null, then a pipe closed without a byte, then only blank lines
    for given in (None, b"", b"\n  \n"):
        # when
        proc = subprocess.run(
            [str(FAKE_CLAUDE), "-p"],
            cwd=workdir,
            env=env,
            input=given,
            stdin=subprocess.DEVNULL if given is None else None,
            capture_output=True,
            timeout=10,
        )
        # then
        assert proc.returncode == 1
        assert INPUT_MISSING in proc.stderr.decode()
        assert proc.stdout == b""


def test_given_no_prompt_and_a_terminal_stdin_then_errors_without_reading_it(
    workdir: Path, env: dict
) -> None:
    # given: stdin is a terminal nobody types into (reading it would hang)
    leader, follower = pty.openpty()
    try:
        # when
        proc = subprocess.run(
            [str(FAKE_CLAUDE), "-p"],
            cwd=workdir,
            env=env,
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=10,
        )
    finally:
        os.close(leader)
        os.close(follower)
    # then
    assert proc.returncode == 1
    assert INPUT_MISSING in proc.stderr


def test_given_no_prompt_operand_then_the_prompt_is_read_from_stdin_until_eof(
    workdir: Path, env: dict
) -> None:
    # given: a multibyte prompt written in two parts; the directive is in the second
    prompt = "Résumé: 日本語のテスト\n" + "@fake result read to the end\n"
    proc = subprocess.Popen(
        [str(FAKE_CLAUDE), "-p", "--session-id", SESSION_ID, *STREAM],
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # when
    try:
        assert proc.stdin is not None
        proc.stdin.write(prompt.encode()[:9])
        proc.stdin.flush()
        stdout, stderr = proc.communicate(prompt.encode()[9:], timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # then
    assert proc.returncode == 0, stderr
    assert events_of(stdout.decode())[-1]["result"] == "read to the end"
    assert prompt_of_session(env, workdir) == prompt


def test_given_a_dash_prompt_after_double_dash_then_it_is_the_prompt(
    workdir: Path, env: dict
) -> None:
    proc = run_fake(
        "-p", "--session-id", SESSION_ID, *STREAM, "--", "- fix the typo", cwd=workdir, env=env
    )

    assert proc.returncode == 0, proc.stderr
    assert events_of(proc.stdout)[-1]["subtype"] == "success"
    assert prompt_of_session(env, workdir) == "- fix the typo"


def test_given_a_flag_as_prompt_after_double_dash_then_it_is_a_prompt_not_a_flag(
    workdir: Path, env: dict
) -> None:
    proc = run_fake(
        "-p",
        "--session-id",
        SESSION_ID,
        *STREAM,
        "--",
        "--dangerously-skip-permissions",
        cwd=workdir,
        env=env,
    )

    assert proc.returncode == 0, proc.stderr
    assert events_of(proc.stdout)[0]["permissionMode"] == "default"
    assert prompt_of_session(env, workdir) == "--dangerously-skip-permissions"


def test_given_a_flag_as_prompt_operand_without_double_dash_then_it_is_the_flag(
    workdir: Path, env: dict
) -> None:
    # the hazard of passing a task as an operand: the CLI takes it for an option
    proc = subprocess.run(
        [str(FAKE_CLAUDE), "-p", *STREAM, "--dangerously-skip-permissions"],
        cwd=workdir,
        env=env,
        input=b"@fake result ok",
        capture_output=True,
        timeout=10,
    )

    assert proc.returncode == 0, proc.stderr
    assert events_of(proc.stdout.decode())[0]["permissionMode"] == "bypassPermissions"


def test_given_a_dash_operand_without_double_dash_then_it_is_an_unknown_option(
    workdir: Path, env: dict
) -> None:
    proc = run_fake("-p", "- fix the typo", cwd=workdir, env=env)

    assert proc.returncode == 1
    assert "error: unknown option '- fix the typo'" in proc.stderr
    assert proc.stdout == ""


def test_given_invalid_permission_mode_then_error(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hi", "--permission-mode", "yolo", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert "argument 'yolo' is invalid" in proc.stderr


def test_given_equals_form_options_then_they_are_applied(workdir: Path, env: dict) -> None:
    proc = run_fake(
        "-p",
        "hi",
        "--output-format=stream-json",
        "--verbose",
        "--model=opus",
        "--permission-mode=bypassPermissions",
        "--disallowedTools=WebFetch,WebSearch",
        cwd=workdir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    init = events_of(proc.stdout)[0]
    assert init["model"] == "claude-opus-4-5"
    assert init["permissionMode"] == "bypassPermissions"
    assert "WebFetch" not in init["tools"] and "Write" in init["tools"]


def test_given_double_dash_then_dash_prompt_is_positional(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "--output-format", "json", "--", "--not-an-option", cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["subtype"] == "success"


# --- sessions -------------------------------------------------------------------


def test_given_invalid_session_id_then_error(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hi", "--session-id", "not-a-uuid", cwd=workdir, env=env)
    assert proc.returncode == 1
    assert "Error: Invalid session ID. Must be a valid UUID." in proc.stderr


def test_given_session_id_and_resume_then_error(workdir: Path, env: dict) -> None:
    proc = run_fake(
        "-p", "hi", "--session-id", SESSION_ID, "--resume", SESSION_ID, cwd=workdir, env=env
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error:")


def test_given_unknown_resume_id_then_no_conversation_found(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "hi", "--resume", SESSION_ID, cwd=workdir, env=env)
    assert proc.returncode == 1
    assert f"No conversation found with session ID: {SESSION_ID}" in proc.stderr


def test_given_finished_session_when_resumed_then_same_id_and_transcript_grows(
    workdir: Path, env: dict
) -> None:
    # given: a first run with an explicit session id
    first = run_fake(
        "-p", "@fake result one", "--session-id", SESSION_ID, *STREAM, cwd=workdir, env=env
    )
    assert first.returncode == 0, first.stderr
    transcript = transcript_path(env, workdir, SESSION_ID)
    lines_after_first = len(transcript.read_text().splitlines())
    assert all(e["session_id"] == SESSION_ID for e in events_of(first.stdout))
    # when
    second = run_fake("-p", "@fake result two", "-r", SESSION_ID, *STREAM, cwd=workdir, env=env)
    # then
    assert second.returncode == 0, second.stderr
    events = events_of(second.stdout)
    assert events[0]["session_id"] == SESSION_ID
    assert events[-1]["session_id"] == SESSION_ID and events[-1]["result"] == "two"
    assert len(transcript.read_text().splitlines()) > lines_after_first


def test_given_session_id_already_used_then_error(workdir: Path, env: dict) -> None:
    assert run_fake("-p", "hi", "--session-id", SESSION_ID, cwd=workdir, env=env).returncode == 0
    proc = run_fake("-p", "hi", "--session-id", SESSION_ID, cwd=workdir, env=env)
    assert proc.returncode == 1
    assert "already in use" in proc.stderr


# --- output ---------------------------------------------------------------------


def test_given_plain_task_naming_a_file_when_stream_json_then_full_event_sequence(
    workdir: Path, env: dict
) -> None:
    # when
    proc = run_fake("-p", "Add a CONTRIBUTING.md for newcomers", *STREAM, cwd=workdir, env=env)
    # then: exit 0 and one JSON object per line
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    events = [json.loads(line) for line in lines]
    init, result = events[0], events[-1]
    assert (init["type"], init["subtype"]) == ("system", "init")
    session_id = init["session_id"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", session_id
    )
    assert init["cwd"] == str(workdir)
    assert init["model"] == "claude-sonnet-4-5"
    assert init["permissionMode"] == "default"
    assert "Write" in init["tools"] and "Bash" in init["tools"]
    assert init["mcp_servers"] == [] and init["apiKeySource"] == "none"
    assert init["claude_code_version"] == "2.1.0"
    # then: assistant tool_use Write, user tool_result, final assistant text
    middle = events[1:-1]
    assert [e["type"] for e in middle] == ["assistant", "assistant", "user", "assistant"]
    tool_use = middle[1]["message"]["content"][0]
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "Write"
    assert tool_use["id"].startswith("toolu_")
    assert middle[0]["message"]["id"].startswith("msg_")
    assert set(middle[0]["message"]["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    tool_result = middle[2]["message"]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == tool_use["id"]
    assert all(e["session_id"] == session_id for e in events)
    # then: the result event
    assert result["type"] == "result" and result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["num_turns"] == 2
    assert "CONTRIBUTING.md" in result["result"]
    assert result["total_cost_usd"] > 0
    assert set(result["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    assert isinstance(result["duration_ms"], int) and isinstance(result["duration_api_ms"], int)
    assert result["permission_denials"] == [] and "terminal_reason" in result
    assert "errors" not in result
    # then: side effects
    assert (workdir / "CONTRIBUTING.md").read_text().startswith("# Contributing")
    assert transcript_path(env, workdir, session_id).is_file()


def test_given_task_without_file_name_when_text_output_then_agent_notes(
    workdir: Path, env: dict
) -> None:
    proc = run_fake("-p", "Think about the architecture", cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Created AGENT_NOTES.md with notes about the task.\n"
    assert "Think about the architecture" in (workdir / "AGENT_NOTES.md").read_text()


def test_given_json_output_then_only_the_result_object(workdir: Path, env: dict) -> None:
    proc = run_fake(
        "-p", "@fake result hello world", "--output-format", "json", cwd=workdir, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    result = json.loads(proc.stdout)
    assert result["type"] == "result" and result["result"] == "hello world"


def test_given_partial_messages_then_stream_events_precede_assistant(
    workdir: Path, env: dict
) -> None:
    proc = run_fake(
        "-p", "@fake result hi", *STREAM, "--include-partial-messages", cwd=workdir, env=env
    )
    assert proc.returncode == 0, proc.stderr
    types = [e["type"] for e in events_of(proc.stdout)]
    assert types.index("stream_event") < types.index("assistant")
    assert types[-1] == "result"


def test_given_mcp_config_file_then_servers_listed_in_init(
    workdir: Path, env: dict, tmp_path: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"gh": {"command": "gh-mcp"}}}))
    proc = run_fake("-p", "hi", *STREAM, "--mcp-config", str(config), cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert events_of(proc.stdout)[0]["mcp_servers"] == [{"name": "gh", "status": "connected"}]


# --- directives -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_given_git_repo_when_write_and_commit_then_file_is_committed(
    workdir: Path, env: dict
) -> None:
    # given
    subprocess.run(["git", "init", "-q", str(workdir)], check=True, env=env)
    prompt = "Do it\n@fake write docs/a.txt hello\\nworld\n@fake commit Add a.txt"
    # when
    proc = run_fake("-p", prompt, *STREAM, cwd=workdir, env=env)
    # then
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "docs" / "a.txt").read_text() == "hello\nworld"
    log = subprocess.run(
        ["git", "log", "--format=%s", "--name-only"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Add a.txt" in log.stdout and "docs/a.txt" in log.stdout
    tools = [
        block["name"]
        for e in events_of(proc.stdout)
        if e["type"] == "assistant"
        for block in e["message"]["content"]
        if block["type"] == "tool_use"
    ]
    assert tools == ["Write", "Bash"]
    assert events_of(proc.stdout)[-1]["num_turns"] == 3


def test_given_append_directive_then_text_is_appended(workdir: Path, env: dict) -> None:
    (workdir / "log.txt").write_text("a\n")
    proc = run_fake("-p", "@fake append log.txt b\\n", cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "log.txt").read_text() == "a\nb\n"


def test_given_fail_directive_then_error_during_execution(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake fail boom happened", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 1
    result = events_of(proc.stdout)[-1]
    assert result["subtype"] == "error_during_execution" and result["is_error"] is True
    assert result["errors"] == ["boom happened"]
    assert "result" not in result


def test_given_auth_error_directive_then_success_subtype_with_is_error(
    workdir: Path, env: dict
) -> None:
    proc = run_fake("-p", "@fake auth-error", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 1
    result = events_of(proc.stdout)[-1]
    assert result["subtype"] == "success" and result["is_error"] is True
    assert result["result"] == "Invalid API key · Please run /login"


def test_given_crash_directive_then_exit_code_and_no_result(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake result never\n@fake crash 3", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 3
    assert "fatal: simulated crash" in proc.stderr
    assert all(e["type"] != "result" for e in events_of(proc.stdout))


def test_given_bigline_directive_then_single_line_over_64_kib(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake bigline 70000", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    big = [line for line in proc.stdout.splitlines() if len(line) > 65536]
    assert len(big) == 1
    event = json.loads(big[0])
    assert event["type"] == "assistant"
    assert len(event["message"]["content"][0]["text"]) == 70000


def test_given_noise_and_stderr_directives_then_raw_lines_emitted(workdir: Path, env: dict) -> None:
    prompt = "@fake noise this is not json\n@fake stderr warn: something"
    proc = run_fake("-p", prompt, *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "this is not json" in lines
    assert json.loads(lines[0])["type"] == "system" and json.loads(lines[-1])["type"] == "result"
    assert "warn: something" in proc.stderr


def test_given_turns_beyond_max_turns_then_error_max_turns(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake turns 5", "--max-turns", "2", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 1
    events = events_of(proc.stdout)
    assert sum(e["type"] == "assistant" for e in events) == 2
    result = events[-1]
    assert result["subtype"] == "error_max_turns" and result["is_error"] is True
    assert result["num_turns"] == 2 and "result" not in result and result["errors"]


def test_given_turns_within_max_turns_then_success(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake turns 2", "--max-turns", "3", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    assert events_of(proc.stdout)[-1]["num_turns"] == 3


def test_given_cost_directive_then_total_cost_and_budget_enforced(workdir: Path, env: dict) -> None:
    ok = run_fake("-p", "@fake cost 0.25", "--output-format", "json", cwd=workdir, env=env)
    assert ok.returncode == 0 and json.loads(ok.stdout)["total_cost_usd"] == 0.25
    budget = ["--max-budget-usd", "1", "--output-format", "json"]
    over = run_fake("-p", "@fake cost 2.5", *budget, cwd=workdir, env=env)
    assert over.returncode == 1
    result = json.loads(over.stdout)
    assert result["subtype"] == "error_max_budget_usd" and result["is_error"] is True


def test_given_env_directive_then_tool_result_reports_values(workdir: Path, env: dict) -> None:
    env = {**env, "VISIBLE_VAR": "yes"}
    env.pop("ABSENT_VAR", None)
    prompt = "@fake env VISIBLE_VAR\n@fake env ABSENT_VAR"
    proc = run_fake("-p", prompt, *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    results = [
        block["content"]
        for e in events_of(proc.stdout)
        if e["type"] == "user"
        for block in e["message"]["content"]
    ]
    assert results == ["VISIBLE_VAR=yes", "ABSENT_VAR=<unset>"]


def test_given_unknown_directive_then_error_before_any_output(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake teleport now", *STREAM, cwd=workdir, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "teleport" in proc.stderr


def test_given_starts_file_env_then_start_is_recorded(
    workdir: Path, env: dict, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.log"
    before = time.time()
    proc = run_fake("-p", "hi", cwd=workdir, env={**env, "FAKE_CLAUDE_STARTS_FILE": str(starts)})
    assert proc.returncode == 0, proc.stderr
    stamp, pid = starts.read_text().split()
    assert before <= float(stamp) <= time.time() and int(pid) > 0


def test_given_sleep_directive_then_run_takes_that_long(workdir: Path, env: dict) -> None:
    proc = run_fake("-p", "@fake sleep 0.2", "--output-format", "json", cwd=workdir, env=env)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["duration_ms"] >= 200


# --- signals --------------------------------------------------------------------


def test_given_hanging_run_with_child_when_sigterm_then_143_no_result_child_killed(
    workdir: Path, env: dict
) -> None:
    # given: a run that spawned a child and then hangs
    with running_fake(["-p", "@fake spawn 30\n@fake hang", *STREAM], workdir, env) as proc:
        lines = read_lines_until(proc, lambda line: "spawned pid" in line)
        child_pid = int(re.search(r"spawned pid (\d+)", lines[-1]).group(1))  # type: ignore[union-attr]
        # when
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=5)
        rest = proc.stdout.read().decode() if proc.stdout else ""
    # then
    assert returncode == 143
    assert all(e["type"] != "result" for e in events_of("\n".join(lines) + rest))
    assert pid_is_gone(child_pid)


def test_given_run_killed_by_sigterm_when_resumed_then_session_continues(
    workdir: Path, env: dict
) -> None:
    # given: a session terminated mid-run
    with running_fake(
        ["-p", "@fake hang", "--session-id", SESSION_ID, *STREAM], workdir, env
    ) as proc:
        read_lines_until(proc, lambda line: '"subtype":"init"' in line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 143
    # when
    resumed = run_fake("-p", "go on", "--resume", SESSION_ID, *STREAM, cwd=workdir, env=env)
    # then
    assert resumed.returncode == 0, resumed.stderr
    assert events_of(resumed.stdout)[-1]["session_id"] == SESSION_ID


def test_given_ignore_sigterm_when_sigterm_then_keeps_running_until_sigkill(
    workdir: Path, env: dict
) -> None:
    with running_fake(
        ["-p", "@fake ignore-sigterm\n@fake noise ready\n@fake hang", *STREAM], workdir, env
    ) as proc:
        read_lines_until(proc, lambda line: line == "ready")  # SIGTERM is ignored by now
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.3)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL


def test_given_hanging_run_when_sigint_then_exit_130(workdir: Path, env: dict) -> None:
    with running_fake(["-p", "@fake hang", *STREAM], workdir, env) as proc:
        read_lines_until(proc, lambda line: '"subtype":"init"' in line)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 130
