"""File and directory digests behind the persistent stat cache.

A file is re-read only when its (size, mtime_ns, ctime_ns, inode) changed. A file modified
within RACY_NS of being hashed is not cached ("racy timestamp", as git documents): a second
write in the same clock tick would otherwise go unnoticed.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from buildml.hashing import RACY_NS, digest_file, is_executable

PARALLEL_BYTES = 8 << 20  # hash in threads when at least this much must be read


class FileDigest(NamedTuple):
    """A file's content digest, size and executable bit."""

    digest: str
    size: int
    executable: bool


class Hasher:
    """Digests files by absolute path, consulting and updating a State's stat cache."""

    def __init__(self, state, threads: int | None = None):
        self.state = state
        self.threads = threads or min(8, (os.cpu_count() or 2))
        self.reads = 0  # files actually read (cache misses), for tests and benchmarks
        self.seen: dict = {}  # path -> the stat signature its digest was taken at (for buildml/noop.py)
        self.digested: dict = {}  # path -> the digest this build used (noop.py vouches for a racy file by it)

    def file(self, path: str, st: os.stat_result | None = None) -> FileDigest:
        """Digest of one regular file (path is absolute)."""
        st = st or os.stat(path)
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        self.seen[path] = sig
        cached = self.state.file_entry(path)
        if cached is not None and tuple(cached[:4]) == sig:
            self.digested[path] = cached[4]
            return FileDigest(cached[4], st.st_size, is_executable(st.st_mode))
        self.digested[path] = digest = digest_file(path)
        self.reads += 1
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            self.state.record_file(path, (*sig, digest))
        return FileDigest(digest, st.st_size, is_executable(st.st_mode))

    def files(self, paths: list[str], stats: dict | None = None, progress=None) -> dict[str, FileDigest]:
        """Digests of many files, in the order of `paths`; cache misses are hashed in parallel when that pays.
        stats: {path: os.stat_result} already taken in this build (a directory walk), so nothing is stat'ed twice.
        progress: a store/progress.Progress counting each file and its bytes as its digest is known."""
        stats = stats or {}
        count = progress.add if progress is not None else (lambda n, files: None)
        entry = self.state.file_entry
        result, misses = {}, []
        for p in paths:
            st = stats.get(p) or os.stat(p)
            sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            cached = entry(p)
            if cached is not None and cached[:4] == sig:
                self.seen[p] = sig
                self.digested[p] = cached[4]
                result[p] = FileDigest(cached[4], st.st_size, is_executable(st.st_mode))
                count(st.st_size, 1)
            else:
                misses.append((p, st))
        if sum(st.st_size for _, st in misses) >= PARALLEL_BYTES and len(misses) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.threads) as pool:
                for (p, _), fd in zip(misses, pool.map(lambda m: self.file(*m), misses)):
                    result[p] = fd
                    count(fd.size, 1)
        else:
            for p, st in misses:
                result[p] = fd = self.file(p, st)
                count(fd.size, 1)
        return {p: result[p] for p in paths}
