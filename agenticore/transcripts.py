"""A transcript file that keeps its tail: an agent that talks for hours (or loops) cannot
fill the disk, and what is kept is the end, where a run's failure shows."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from agenticore.files import atomic_write_bytes, open_append

__all__ = ["CappedFile"]


class CappedFile:
    """An append-only private file of at most ``cap`` bytes (None: no cap). Past the cap,
    the oldest half is dropped, whole lines at a time, behind a marker line saying how
    many bytes went. Written through, a write at a time: when this process is killed, what
    the agent said is on disk (a job handed on reads its predecessor's result there)."""

    def __init__(self, path: Path, cap: int | None) -> None:
        self.path = path
        self.cap = cap
        self.dropped = 0
        self._handle = open_append(path)
        self._size = self._handle.tell()

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._handle.flush()
        self._size += len(data)
        if self.cap is not None and self._size > self.cap:
            self._keep_tail(self.cap // 2)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> CappedFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _keep_tail(self, keep: int) -> None:
        self._handle.flush()
        with self.path.open("rb") as source:
            source.seek(max(0, self._size - keep))
            tail = source.read()
        tail = tail[tail.find(b"\n") + 1 :]  # from the first whole line
        self.dropped += self._size - len(tail)
        marker = (
            b'{"type":"agenticore","subtype":"transcript_truncated","dropped_bytes":%d}\n'
            % self.dropped
        )
        self._handle.close()
        atomic_write_bytes(self.path, marker + tail, durable=False)
        self._handle = open_append(self.path)
        self._size = self._handle.tell()
