"""A no-op Celery task on Agenticore's broker: the floor ``bench/pipeline.py`` measures.

Run by the benchmark as ``celery -A bench.noop worker -Q bench-noop``; the configuration is
Agenticore's own (``celeryconfig`` from the ``AGENTICORE_*`` environment), so the round trip
uses the same broker, result backend and serializer settings as real jobs.
"""

from __future__ import annotations

from workers.app import make_celery

__all__ = ["NOOP", "QUEUE", "app", "noop"]

NOOP = "bench.noop"
QUEUE = "bench-noop"

app = make_celery()


@app.task(name=NOOP)
def noop() -> None:
    return None
