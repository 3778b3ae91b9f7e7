"""Byte progress of long transfers (remote cache downloads, external data), reported as Transfer events."""

from __future__ import annotations

import threading
import time

from buildml.events import Transfer

EVERY_S = 0.2  # at most five reports a second per transfer


class Progress:
    """Counts bytes of one transfer and emits throttled Transfer events, closing with finish()."""

    def __init__(self, emit, what: str, total: int | None = None, label=None):
        self.emit, self.what, self.total, self.label = emit, what, total, label
        self.done = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < EVERY_S:
                return
            self._last = now
            done = self.done
        self.emit(Transfer(self.what, done, self.total, self.label))

    def finish(self) -> None:
        """The closing event: the bytes actually counted (the total becomes that when it was unknown)."""
        total = self.total if self.total is not None else self.done
        self.emit(Transfer(self.what, self.done, total, self.label))


def fsspec_callback(progress: Progress | None):
    """An fsspec Callback feeding progress with the bytes of every file of a (multi-file) transfer."""
    from fsspec.callbacks import Callback, NoOpCallback

    if progress is None:
        return NoOpCallback()

    class FileBytes(Callback):
        def relative_update(self, inc=1):
            progress.add(inc)

        def absolute_update(self, value):
            progress.add(max(0, value - (self.value or 0)))
            self.value = value

    class Files(Callback):
        def branched(self, path_1, path_2, **kwargs):
            return FileBytes()

        def branch(self, path_1, path_2, kwargs):  # older fsspec spelling
            kwargs["callback"] = FileBytes()

    return Files()
