"""Every digest buildml computes: file contents, Merkle trees and typed, versioned records.

Digests are xxh3-128 (fast, not collision-resistant against a malicious writer; see
cache/DESIGN.md). Each record's pre-image starts with SCHEMA and its record type, so
bumping SCHEMA retires every old cache entry at once.
"""

from __future__ import annotations

import json
import os

import xxhash

SCHEMA = "buildml/1"
CHUNK = 1 << 20


def digest_bytes(data: bytes) -> str:
    """Digest of a byte string."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_file(path) -> str:
    """Digest of a file's contents, read in chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def copy_and_digest(src, dst) -> str:
    """Copy src to dst (created exclusively) and return the digest of the bytes copied."""
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


def fsync_dir(path) -> None:
    """Make a rename inside `path` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
