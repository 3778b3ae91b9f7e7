"""Byte progress of long transfers (remote cache downloads, external data), reported as Transfer events."""

from __future__ import annotations

import threading
import time

from buildml.events import Transfer

EVERY_S = 0.2  # at most five reports a second per transfer
LARGE_DIR_FILES = 1_000  # a directory of this many files is hashed, staged and stored with progress shown


class Progress:
    """Counts bytes (and files, where asked) of one transfer and emits throttled Transfer events, closing with
    finish(). quiet_below: no event at all until that many files were counted (a small directory says nothing),
    so a caller need not know in advance whether a directory is large."""

    def __init__(self, emit, what: str, total: int | None = None, label=None, total_files: int | None = None,
                 quiet_below: int = 0):
        self.emit, self.what, self.total, self.label = emit, what, total, label
        self.total_files, self.quiet_below = total_files, quiet_below
        self.done = 0
        self.files = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, n: int, files: int = 0) -> None:
        with self._lock:
            self.done += n
            self.files += files
            if self.files < self.quiet_below:
                return
            now = time.monotonic()
            if now - self._last < EVERY_S:
                return
            self._last = now
            event = self._event(self.done, self.total, self.files, self.total_files, now)
        self.emit(event)

    def finish(self) -> None:
        """The closing event: the bytes (and files) actually counted (the total becomes that when it was unknown);
        nothing when the transfer stayed below quiet_below files, as it then showed nothing to close."""
        with self._lock:
            if self.files < self.quiet_below:
                return
            total = self.total if self.total is not None else self.done
            total_files = self.total_files if self.total_files is not None else self.files
            event = self._event(self.done, total, self.files, total_files, time.monotonic())
        self.emit(event)

    def _event(self, done, total, files, total_files, now) -> Transfer:
        counting = self.quiet_below or self.total_files is not None or files
        return Transfer(self.what, done, total, self.label, files if counting else None,
                        total_files if counting else None, round(now - self.started, 3))


def files_progress(transfer, what: str, label=None, total: int | None = None, total_files: int | None = None):
    """A Progress counting the files of a large directory, from transfer (the session's
    transfer(what, total, label, **counting) factory), or None: without transfer, or for fewer than LARGE_DIR_FILES
    files. With total_files unknown it says nothing until LARGE_DIR_FILES files were counted."""
    if transfer is None or (total_files is not None and total_files < LARGE_DIR_FILES):
        return None
    return transfer(what, total, label, total_files=total_files,
                    quiet_below=LARGE_DIR_FILES if total_files is None else 0)


def folders(paths, most: int = 3) -> str:
    """The top folders of workspace paths, most files first ("data/, images/ (+2 more)"), to name a large
    directory in a progress row; '' when every path is at the top."""
    counts: dict = {}
    for path in paths:
        top, sep, _ = path.partition("/")
        if sep:
            counts[top] = counts.get(top, 0) + 1
    tops = sorted(counts, key=lambda t: (-counts[t], t))
    more = f" (+{len(tops) - most} more)" if len(tops) > most else ""
    return ", ".join(f"{t}/" for t in tops[:most]) + more


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
