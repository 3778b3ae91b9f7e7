"""Content-addressed blob store and action cache in a local directory.

Layout: cas/<d[:2]>/<digest> (read-only blobs), ac/<k[:2]>/<key> (JSON result manifests),
tmp/ (staging for atomic writes), locks/ (one lock file per action key being executed).
Every write goes to tmp/, is fsynced and renamed into place, so readers never see a partial
entry; every blob read is checked against its digest.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import CacheCorruption, EnvironmentProblem
from .hashing import CHUNK, copy_and_digest, digest_bytes, digest_file, fsync_dir


class BlobMissing(Exception):
    """The store has no blob with that digest."""


def disk_error(exc: OSError, what: str) -> EnvironmentProblem:
    if exc.errno == errno.ENOSPC:
        return EnvironmentProblem(f"no space left on device while {what}",
                                  hint="free disk space or run `buildml cache gc --max-size 10GB`; actions run in the cache directory's tmp/")
    return EnvironmentProblem(f"I/O error while {what}: {exc}")


class LocalStore:
    """Blobs and action-cache entries under one directory."""

    name = "local"

    def __init__(self, root):
        self.root = Path(root)
        for sub in ("cas", "ac", "tmp", "locks"):
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EnvironmentProblem(f"cannot create cache directory {self.root / sub}: {exc.strerror}",
                                         hint="set BUILDML_CACHE_DIR to a writable directory") from None

    # -- paths ---------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "cas" / digest[:2] / digest

    def action_path(self, key: str) -> Path:
        return self.root / "ac" / key[:2] / key

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def tempdir(self, prefix: str) -> Path:
        """A private directory on the store's file system (so outputs can be renamed in)."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root / "tmp"))

    # -- blobs ---------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_file(self, src, digest: str, move: bool = False) -> None:
        """Store the file at src under digest (its content digest, computed by the caller)."""
        final = self.blob_path(digest)
        if final.exists():
            if move:
                os.unlink(src)
            return
        final.parent.mkdir(exist_ok=True)
        try:
            if move:
                os.chmod(src, 0o444)
                _fsync_file(src)
                try:
                    os.rename(src, final)
                    fsync_dir(final.parent)
                    return
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
            tmp = self._tmp_name()
            got = copy_and_digest(src, tmp)
            if got != digest:
                os.unlink(tmp)
                raise EnvironmentProblem(f"file {src} changed while it was being stored", hint="do not edit inputs during a build")
            self._commit_tmp(tmp, final, mode=0o444)
            if move:
                os.unlink(src)
        except OSError as exc:
            raise disk_error(exc, "storing an output in the cache") from None

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        final = self.blob_path(digest)
        if not final.exists():
            final.parent.mkdir(exist_ok=True)
            try:
                tmp = self._tmp_name()
                with open(tmp, "xb") as f:
                    f.write(data)
                self._commit_tmp(tmp, final, mode=0o444)
            except OSError as exc:
                raise disk_error(exc, "writing the cache") from None
        return digest

    def read_bytes(self, digest: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(digest) from None
        if digest_bytes(data) != digest:
            self._quarantine(digest)
            raise CacheCorruption(f"cache blob {digest} is corrupt and was removed", hint="rebuild to recreate it")
        return data

    def fetch_to(self, digest: str, dest) -> None:
        """Copy a blob to dest (atomically, verified)."""
        src = self.blob_path(digest)
        dest = Path(dest)
        tmp = dest.parent / f".{dest.name}.buildml-tmp-{os.getpid()}"
        try:
            if tmp.exists():
                tmp.unlink()
            got = copy_and_digest(src, tmp)
        except FileNotFoundError:
            if not src.exists():
                raise BlobMissing(digest) from None
            raise
        except OSError as exc:
            _silent_unlink(tmp)
            raise disk_error(exc, f"writing {dest}") from None
        if got != digest:
            _silent_unlink(tmp)
            self._quarantine(digest)
            raise CacheCorruption(f"cache blob {digest} is corrupt and was removed", hint="rebuild to recreate it")
        os.replace(tmp, dest)

    def verify_blob(self, digest: str) -> bool:
        try:
            return digest_file(self.blob_path(digest)) == digest
        except FileNotFoundError:
            return False

    def _quarantine(self, digest: str) -> None:
        _silent_unlink(self.blob_path(digest))

    # -- action cache ----------------------------------------------------------
    def get_action(self, key: str) -> dict | None:
        """The result manifest stored for key, or None (a malformed entry counts as absent)."""
        try:
            data = self.action_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            manifest = json.loads(data)
        except ValueError:
            _silent_unlink(self.action_path(key))
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        return manifest

    def has_action(self, key: str) -> bool:
        return self.action_path(key).exists()

    def put_action(self, key: str, manifest: dict) -> None:
        final = self.action_path(key)
        final.parent.mkdir(exist_ok=True)
        try:
            tmp = self._tmp_name()
            with open(tmp, "x") as f:
                json.dump(manifest, f, sort_keys=True)
            self._commit_tmp(tmp, final, mode=0o644)
        except OSError as exc:
            raise disk_error(exc, "writing an action-cache entry") from None

    def iter_actions(self):
        for sub in sorted((self.root / "ac").iterdir()):
            for entry in sub.iterdir():
                yield entry.name

    def iter_blobs(self):
        for sub in sorted((self.root / "cas").iterdir()):
            for entry in sub.iterdir():
                yield entry.name

    # -- helpers ----------------------------------------------------------------
    def _tmp_name(self) -> str:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
        os.close(fd)
        os.unlink(name)
        return name

    def _commit_tmp(self, tmp: str, final: Path, mode: int) -> None:
        os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _silent_unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_tree(path) -> None:
    """Remove a directory tree even if it holds read-only files."""
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, 0o755)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=onerror)
