"""Shared test helpers: real processes, real git, bounded waits."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
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
