"""kombu's ``filesystem://`` transport with atomic message writes.

The stock transport creates a message file and then writes into it; a consumer that
lists the folder in between moves and reads an empty file, fails to decode it and the
worker dies with the message gone. Writing to a hidden temp name and renaming it into
place means a consumer only ever sees whole messages.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import suppress
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

__all__ = ["Channel", "Transport"]


class Channel(filesystem.Channel):
    # kombu's own filesystem Channel already narrows AbstractChannel._put this way
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        # a leading dot keeps the partial file out of _get's "<stamp>_<id>.<queue>.msg" match
        fd, partial = tempfile.mkstemp(dir=folder, prefix=".", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
            os.replace(partial, os.path.join(folder, name))
        except OSError as exc:
            with suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
