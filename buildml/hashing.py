"""Every digest buildml computes: file contents, Merkle trees and typed, versioned records.

Digests are xxh3-128 (fast, not collision-resistant against a malicious writer; see
buildml/CACHING.md). Each record's pre-image starts with SCHEMA and its record type, so
bumping SCHEMA retires every old cache entry at once.
"""

from __future__ import annotations

import json
import os

import xxhash

try:
    import mmap
except ImportError:  # pragma: no cover  (platforms without mmap read in chunks)
    mmap = None

SCHEMA = "buildml/1"
RACY_NS = 2_000_000_000  # a file changed this close to its stat being recorded is re-hashed, not trusted (git's racy timestamps)
CHUNK = 1 << 20
MMAP_MIN = 512 << 10  # below this one read() is as fast (measured: benchmarks/README.md)
MMAP_WINDOW = 64 << 20  # mapped at a time (a multiple of the page size)
_MMAP_FLAGS = getattr(mmap, "MAP_SHARED", 0)  # MAP_POPULATE measured slower with 2 threads (page faults come 64 KiB at a time)


def digest_bytes(data: bytes) -> str:
    """Digest of a byte string."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_file(path) -> str:
    """Digest of a file's contents: small files in one read, large ones through mmap (no copy into Python)."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size >= MMAP_MIN and mmap is not None:
            try:
                return _digest_mmap(f.fileno(), size)
            except (OSError, ValueError):  # shrank meanwhile, or a file system that cannot map
                f.seek(0)
        return _digest_read(f)


def _digest_read(f) -> str:
    data = f.read(MMAP_MIN)
    more = f.read(CHUNK)
    if not more:
        return xxhash.xxh3_128_hexdigest(data)
    h = xxhash.xxh3_128(data)  # larger than it was: stream the rest
    h.update(more)
    while chunk := f.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _digest_mmap(fd: int, size: int) -> str:
    """Hash size bytes through read-only mapped windows: no copy into Python, one window mapped at a time.
    A file truncated by another process while mapped raises SIGBUS (see CACHING.md, Hashing)."""
    h = xxhash.xxh3_128()
    for offset in range(0, size, MMAP_WINDOW):
        with mmap.mmap(fd, min(MMAP_WINDOW, size - offset), flags=_MMAP_FLAGS, prot=mmap.PROT_READ,
                       offset=offset) as window:
            h.update(window)
    return h.hexdigest()


def copy_and_digest(src, dst) -> str:
    """Copy src (a path, or an fd, which is closed) to dst (created exclusively); return the digest of the bytes copied."""
    h = xxhash.xxh3_128()
    with open(src, "rb", buffering=0) as fin, open(dst, "xb", buffering=0) as fout:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fin.readinto(buf):
            h.update(view[:n])
            fout.write(view[:n])
    return h.hexdigest()


def canonical_json(value) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_record(kind: str, body) -> str:
    """Digest of a typed record, e.g. digest_record("Action", {...})."""
    return digest_bytes(canonical_json([SCHEMA, kind, body]))


def tree_digest(entries) -> str:
    """Merkle digest of (relative path, executable, digest) entries, order-independent."""
    return digest_record("Tree", sorted([p, bool(x), d] for p, x, d in entries))


def is_executable(mode: int) -> bool:
    return bool(mode & 0o111)
