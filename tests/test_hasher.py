"""The hasher: stat cache hits skip reads, racy files are re-read, parallel hashing keeps paths and digests paired."""

import os
import time

from buildml.engine.hasher import Hasher
from buildml.hashing import RACY_NS
from buildml.hashing import digest_file
from buildml.engine.state import State


def old(path, seconds=10):
    t = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(t, t))


def test_unchanged_file_is_not_reread(tmp_path):
    """Once recorded, a file whose stat is unchanged is served from the stat cache (persisted in sqlite)."""
    f = tmp_path / "a.txt"
    f.write_text("hello")
    old(f)
    time.sleep(RACY_NS / 1e9)  # ctime is now old enough to trust
    state = State(tmp_path / "state")
    h = Hasher(state)
    first = h.file(str(f))
    state.flush()
    h2 = Hasher(State(tmp_path / "state"))
    assert h2.file(str(f)) == first and h2.reads == 0


def test_racy_file_is_reread(tmp_path):
    """A file modified just before it was hashed is not trusted from the cache."""
    f = tmp_path / "a.txt"
    f.write_text("one")
    h = Hasher(State(tmp_path / "state"))
    h.file(str(f))
    h.file(str(f))
    assert h.reads == 2


def test_parallel_misses_keep_order_and_pairing(tmp_path):
    """Hashing a mix of cached and new big files returns each path's own digest, in input order."""
    paths = []
    for i in range(6):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(os.urandom(3 << 20) + bytes([i]))
        paths.append(str(p))
    for p in paths[:3]:
        old(p)
    time.sleep(RACY_NS / 1e9)
    h = Hasher(State(tmp_path / "state"))
    h.files(paths[:3])  # cache the first half
    for p in paths[3:]:
        open(p, "ab").write(b"x")  # the rest are fresh misses (>= 8 MB together: hashed in parallel)
    result = h.files(paths)
    assert list(result) == paths
    assert all(result[p].digest == digest_file(p) for p in paths)
