"""The arithmetic an autoscaler sizes the workers by."""

from __future__ import annotations

import pytest

from agenticore.scaling import Demand


@pytest.mark.parametrize(
    ("waiting", "running", "held", "per_worker", "desired"),
    [
        (0, 0, 0, 3, 0),  # nothing to do: the autoscaler's minimum holds the floor
        (37, 6, 0, 3, 15),  # ceil(43 / 3)
        (0, 5, 0, 2, 3),  # running jobs alone keep their workers: no scale-in on agents
        (0, 1, 4, 2, 3),  # deferred and held jobs count as in flight
        (1, 0, 0, 10, 1),
    ],
)
def test_given_waiting_running_and_held_jobs_then_the_desired_workers_cover_them_all(
    waiting: int, running: int, held: int, per_worker: int, desired: int
) -> None:
    demand = Demand(waiting=waiting, running=running, held=held)

    assert demand.in_flight == running + held
    assert demand.total == waiting + running + held
    assert demand.desired_workers(per_worker) == desired
