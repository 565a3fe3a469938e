"""cgroup v2 memory limits: written where delegated, skipped elsewhere.

The kernel's cgroupfs is stood in for by a directory with the same files, since this
machine has no delegated v2 memory controller.
"""

from __future__ import annotations

import os
from pathlib import Path

from agenticore.cgroups import MemoryCgroup


def fake_cgroupfs(root: Path, controllers: str) -> Path:
    worker = root / "worker"
    worker.mkdir(parents=True)
    (worker / "cgroup.subtree_control").write_text(controllers)
    return worker


def test_given_a_delegated_memory_controller_then_a_limited_child_cgroup_is_made(
    tmp_path: Path,
) -> None:
    worker = fake_cgroupfs(tmp_path, "cpu memory")

    cgroup = MemoryCgroup.create("agenticore-job1", 512, root=tmp_path, own="/worker")

    assert cgroup is not None and cgroup.path == worker / "agenticore-job1"
    assert (cgroup.path / "memory.max").read_text() == str(512 * 1024 * 1024)
    cgroup.add(os.getpid())
    assert (cgroup.path / "cgroup.procs").read_text() == str(os.getpid())


def test_given_memory_events_then_an_oom_kill_is_noticed(tmp_path: Path) -> None:
    fake_cgroupfs(tmp_path, "memory")
    cgroup = MemoryCgroup.create("agenticore-job2", 64, root=tmp_path, own="/worker")
    assert cgroup is not None

    (cgroup.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not cgroup.oom_killed()
    (cgroup.path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert cgroup.oom_killed()


def test_given_no_cgroup_v2_then_create_declines_and_the_watchdog_alone_guards(
    tmp_path: Path,
) -> None:
    assert MemoryCgroup.create("agenticore-job3", 64, root=tmp_path / "absent", own="/") is None
