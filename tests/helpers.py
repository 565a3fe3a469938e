"""Shared test helpers: real processes, real git, bounded waits."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

FAKE_CLAUDE = Path(__file__).resolve().parent / "fake_claude" / "claude"
GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Polls until ``probe`` returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")


def make_remote(root: Path, name: str = "remote", files: dict[str, str] | None = None) -> Path:
    """A bare repo with one commit on ``main`` (and a ``dev`` branch one commit ahead)."""
    work = root / f"{name}-src"
    bare = root / f"{name}.git"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    for rel, text in (files or {"README.md": "# demo\n"}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "checkout", "-q", "-b", "dev")
    (work / "DEV.md").write_text("dev only\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "dev work")
    git(work, "checkout", "-q", "main")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


class TinyDisk:
    """A small tmpfs mounted at ``path`` that can be filled to ENOSPC and emptied again:
    a real full disk, not a patched ``open``. Needs root (mount)."""

    def __init__(self, path: Path, size_kb: int = 512) -> None:
        self.path = path
        self.filler = path / ".filler"
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0711", "tmpfs",
                        str(path)], check=True)  # fmt: skip

    def fill(self) -> None:
        with self.filler.open("ab", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError:
                pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def redis_dump(url: str, prefix: str) -> str:
    """Every value stored under ``prefix``, raw: what a dump of Redis would give away."""
    client = redis.Redis.from_url(url)
    return repr([client.dump(key) for key in client.scan_iter(f"{prefix}:*")])


def redis_pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class PrivateRedis:
    """A redis-server on a fixed port and folder, so a restart comes back at the same URL
    with whatever it kept on disk (nothing, or its AOF)."""

    def __init__(self, folder: Path, *, aof: bool) -> None:
        self.folder = folder
        self.aof = aof
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: redis_pings(client), timeout=10, what="redis-server")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def pause(self, seconds: float) -> None:
        redis.Redis.from_url(self.url).client_pause(int(seconds * 1000), all=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def parent_pid(pid: int) -> int | None:
    """The parent of a live process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def process_environ(pid: int) -> dict[str, str]:
    """A live process's environment; empty if it is gone, a zombie or not readable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is ``pid``'s parent, grandparent, ... (a process whose parent
    died has been adopted by init or a subreaper instead)."""
    current: int | None = pid
    while current is not None and current > 1:
        current = parent_pid(current)
        if current == ancestor:
            return True
    return False


_WRAPPER = """#!/bin/sh
# git, slowed on request: {control}/rule holds "SUBCOMMAND SECONDS [AFTER]": that
# subcommand sleeps first (once AFTER has run, if given); every call is logged in calls
export SLOW_GIT_MARK={mark}
sub=
skip=
for arg in "$@"; do
    if [ -n "$skip" ]; then skip=; continue; fi
    case "$arg" in
        -c) skip=1 ;;
        -*) ;;
        *) sub=$arg; break ;;
    esac
done
echo "$sub" >> {control}/calls 2>/dev/null
if [ -r {control}/rule ]; then
    read -r slow seconds after < {control}/rule
    if [ "$sub" = "$slow" ] && {{ [ -z "$after" ] || grep -qx "$after" {control}/calls; }}; then
        echo $$ >> {control}/started
        sleep "$seconds"
    fi
fi
exec {git} "$@"
"""


@dataclass(frozen=True)
class SlowGit:
    bin_dir: Path
    control: Path
    mark: str

    def slow(self, subcommand: str, seconds: float, after: str | None = None) -> None:
        for name in ("calls", "started"):
            (self.control / name).unlink(missing_ok=True)
        (self.control / "rule").write_text(f"{subcommand} {seconds} {after or ''}\n")

    def wait_started(self) -> int:
        """The pid of the slowed git, once it sleeps; no later call is slowed."""
        started = self.control / "started"
        wait_for(lambda: started.exists() and started.read_text().strip(), timeout=30,
                 what="the slowed git to start")  # fmt: skip
        (self.control / "rule").unlink()
        return int(started.read_text().split()[0])

    def clear(self) -> None:
        (self.control / "rule").unlink(missing_ok=True)

    def marked(self, pid: int) -> bool:
        """Whether ``pid`` is this git (the wrapper, its sleep, the real git after it)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return str(self.bin_dir).encode() in cmdline or f"SLOW_GIT_MARK={self.mark}".encode() in (
            environ
        )


def make_slow_git(root: Path) -> SlowGit:
    """A ``SlowGit`` in ``root``; put its ``bin_dir`` first on the worker's PATH."""
    real = shutil.which("git")
    assert real is not None
    bin_dir, control = root / "bin", root / "control"
    bin_dir.mkdir()
    control.mkdir()
    mark = uuid.uuid4().hex
    wrapper = bin_dir / "git"
    wrapper.write_text(_WRAPPER.format(control=control, mark=mark, git=real))
    wrapper.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return SlowGit(bin_dir, control, mark)
