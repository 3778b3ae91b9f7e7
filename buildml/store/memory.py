"""MemoryStore: an in-memory Store (blobs and action cache in dicts) for fast engine tests.

Paths the engine needs on disk (locks, temp dirs, build stats) live under a scratch root; blob_path writes
the blob there on demand, for callers that read a stored file by path (sizes, metrics).
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
from pathlib import Path

from buildml.hashing import digest_bytes
from buildml.store.local import BlobMissing
from buildml.trust import check_digest


class MemoryStore:
    """A Store without a remote tier whose blobs and manifests are kept in memory."""

    name = "memory"
    remote = None
    upload = False
    remote_ok = True
    can_link = False  # blobs live in a dict: sandboxes get copies
    warn = None

    def __init__(self, root=None):
        self.root = Path(root or tempfile.mkdtemp(prefix="buildml-memory-"))
        for sub in ("cas", "ac", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.blobs: dict = {}
        self.actions: dict = {}
        self.rejected: dict = {}
        self._lock = threading.Lock()

    @property
    def local(self) -> "MemoryStore":
        """The local tier: this store itself."""
        return self

    # -- paths ------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        check_digest(digest, "blob digest")
        path = self.root / "cas" / digest
        if digest in self.blobs and not path.exists():
            path.write_bytes(self.blobs[digest])
        return path

    def lock_path(self, key: str) -> Path:
        check_digest(key, "action key")
        return self.root / "locks" / f"{key}.lock"

    def tempdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root / "tmp"))

    # -- blobs --------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    def put_file(self, src, digest: str | None = None, move: bool = False) -> str:
        if isinstance(src, int):
            os.lseek(src, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(src, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        else:
            data = Path(src).read_bytes()
            if move:
                os.unlink(src)
        return self.put_bytes(data)

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        with self._lock:
            self.blobs.setdefault(digest, bytes(data))
        return digest

    def read_bytes(self, digest: str) -> bytes:
        try:
            return self.blobs[digest]
        except KeyError:
            raise BlobMissing(digest) from None

    def fetch_to(self, digest: str, dest) -> None:
        data = self.read_bytes(digest)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.buildml-memory-tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def link_to(self, digest: str, dest) -> None:
        return None  # nothing to link: fetch_to copies

    def verify_blob(self, digest: str) -> bool:
        return digest in self.blobs and digest_bytes(self.blobs[digest]) == digest

    def iter_blobs(self):
        return iter(list(self.blobs))

    # -- action cache ---------------------------------------------------------------
    def get_action(self, key: str) -> dict | None:
        manifest = self.actions.get(key)
        return copy.deepcopy(manifest) if manifest is not None else None

    def has_action(self, key: str) -> bool:
        return key in self.actions

    def put_action(self, key: str, manifest: dict) -> None:
        with self._lock:
            self.actions.setdefault(key, copy.deepcopy({k: v for k, v in manifest.items() if not k.startswith("_")}))

    def tier_of(self, key: str) -> str:
        return "local"

    def iter_actions(self):
        return iter(list(self.actions))


__all__ = ["MemoryStore"]
