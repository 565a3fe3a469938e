"""The worker registry: heartbeats and declared states keep a worker's metrics address."""

from __future__ import annotations

from agenticore.config import Settings
from agenticore.fleet import WorkerRegistry


def test_given_a_metrics_address_when_the_worker_beats_and_drains_then_it_stays(
    settings: Settings,
) -> None:
    registry = WorkerRegistry(settings)
    registry.set_state("agenticore@w1", "online")
    registry.set_metrics_url("agenticore@w1", "http://10.0.0.7:9808/metrics")

    registry.beat("agenticore@w1")
    registry.set_state("agenticore@w1", "draining")

    [record] = registry.all()
    assert (record.state, record.metrics_url) == ("draining", "http://10.0.0.7:9808/metrics")
