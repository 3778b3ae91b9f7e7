"""Content-addressed blob store and action cache in a local directory.

Layout: cas/<d[:2]>/<digest> (read-only blobs), ac/<k[:2]>/<key> (JSON result manifests),
tmp/ (staging for atomic writes), locks/ (one lock file per action key being executed).
Every write goes to tmp/ and is renamed into place, so readers never see a partial entry; every
blob read is checked against its digest. Nothing is fsynced: a blob or manifest that a power cut
tore fails that check (or does not parse) and counts as absent, so the action runs again
(buildml/CACHING.md); an fsync per blob cost more than writing a small file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

from buildml.errors import CacheCorruption, EnvironmentProblem
from buildml.fsutil import remove_tree, silent_unlink as _silent_unlink  # noqa: F401  (remove_tree: callers import it here)
from buildml.hashing import CHUNK, copy_and_digest, digest_bytes, digest_file
from buildml.trust import Untrusted, check_digest, is_digest, validate_manifest


class BlobMissing(Exception):
    """The store has no blob with that digest."""


class ChangedWhileStored(EnvironmentProblem):
    """A file given with its digest held other bytes when it was copied in (edited during the build)."""


def disk_error(exc: OSError, what: str) -> EnvironmentProblem:
    if exc.errno == errno.ENOSPC:
        return EnvironmentProblem(f"no space left on device while {what}",
                                  hint="free disk space or run `buildml cache gc --max-size 10GB`; actions run in the cache directory's tmp/")
    return EnvironmentProblem(f"I/O error while {what}: {exc}")


class LocalStore:
    """Blobs and action-cache entries under one directory."""

    name = "local"
    can_link = True  # blobs are files: a sandbox may hard-link them (link_to)
    remote = None  # a plain local store has no remote tier
    upload = False
    remote_ok = True

    @property
    def local(self) -> "LocalStore":
        """The local tier: this store itself."""
        return self

    def __init__(self, root, warn=None):
        self.root = Path(root)
        self.warn = warn  # message -> None: where a rejected entry is reported (once per key)
        self.rejected: dict = {}  # key -> why its manifest was rejected as corrupt
        self._cas = str(self.root / "cas")
        for sub in ("cas", "ac", "tmp", "locks"):
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EnvironmentProblem(f"cannot create cache directory {self.root / sub}: {exc.strerror}",
                                         hint="set BUILDML_CACHE_DIR to a writable directory") from None

    # -- paths ---------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Where the blob of digest lives; Untrusted unless digest is a well-formed digest."""
        check_digest(digest, "blob digest")
        return self.root / "cas" / digest[:2] / digest

    def action_path(self, key: str) -> Path:
        check_digest(key, "action key")
        return self.root / "ac" / key[:2] / key

    def lock_path(self, key: str) -> Path:
        check_digest(key, "action key")
        return self.root / "locks" / f"{key}.lock"

    def tempdir(self, prefix: str) -> Path:
        """A private directory on the store's file system (so outputs can be renamed in), named with this process's
        owner id so a later build can tell a killed build's leftover from a live one (buildml/leftovers.py)."""
        from buildml.store.leftovers import owner

        return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner(self.root / 'tmp').id}-", dir=self.root / "tmp"))

    # -- blobs ---------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_file(self, src, digest: str | None = None, move: bool = False) -> str:
        """Store a file under its content digest; return the digest.

        Without digest, src (a path, or an fd read from its start and left open) is cloned (FICLONE) or copied
        into a private file and digested from that same pass, so the blob holds exactly the bytes digested and a
        process still holding src open cannot change it. With digest (computed by the caller) src is copied and
        checked, or with move=True renamed in: only for files nothing else can hold (buildml's own downloads and
        logs, the outputs of a removed container).
        """
        if digest is None:
            tmp = None
            try:
                out, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
                try:
                    digest = _clone_or_copy(src, out, tmp)
                finally:
                    os.close(out)
                final = self.blob_path(digest)
                if final.exists():
                    os.unlink(tmp)
                    return digest
                final.parent.mkdir(exist_ok=True)
                self._commit_tmp(tmp, final, mode=0o444)
                return digest
            except OSError as exc:
                if tmp is not None:
                    _silent_unlink(tmp)
                raise disk_error(exc, "storing an output in the cache") from None
        final = self.blob_path(digest)
        if final.exists():
            if move:
                os.unlink(src)
            return digest
        final.parent.mkdir(exist_ok=True)
        try:
            if move:
                os.chmod(src, 0o444)
                try:
                    os.rename(src, final)
                    return digest
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
            tmp = self._tmp_name()
            got = copy_and_digest(src, tmp)
            if got != digest:
                os.unlink(tmp)
                raise ChangedWhileStored(f"file {src} changed while it was being stored", hint="do not edit inputs during a build")
            self._commit_tmp(tmp, final, mode=0o444)
            if move:
                os.unlink(src)
        except OSError as exc:
            raise disk_error(exc, "storing an output in the cache") from None
        return digest

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
        """Copy a blob to dest (atomically, verified) through a temp beside it whose name buildml recognises
        (a concurrent build never displaces it; a killed build's is swept: buildml/leftovers.py)."""
        from buildml.store.leftovers import owner

        src = self.blob_path(digest)
        dest = Path(dest)
        tmp = Path(owner(self.root / "tmp").temp_name(dest))
        try:
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
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            _silent_unlink(tmp)
            raise disk_error(exc, f"writing {dest}") from None

    def link_to(self, digest: str, dest) -> str | None:
        """Hard-link the blob at dest (which must not exist) and check the bytes linked; return the blob's path,
        or None where this file system cannot link (another device, no hard links: copy instead). BlobMissing
        and CacheCorruption as fetch_to. A blob is read-only; one a command made writable gets its mode back."""
        check_digest(digest, "blob digest")
        src = f"{self._cas}/{digest[:2]}/{digest}"  # blob_path as text: this runs once per staged file
        try:
            os.link(src, dest)
        except FileNotFoundError:
            if not os.path.exists(src):
                raise BlobMissing(digest) from None
            raise
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES):
                return None
            raise disk_error(exc, f"writing {dest}") from None
        if digest_file(dest) != digest:
            _silent_unlink(dest)
            self._quarantine(digest)
            raise CacheCorruption(f"cache blob {digest} is corrupt and was removed", hint="rebuild to recreate it")
        if os.stat(dest).st_mode & 0o777 != 0o444:
            os.chmod(dest, 0o444)
        return src

    def verify_blob(self, digest: str) -> bool:
        try:
            return digest_file(self.blob_path(digest)) == digest
        except FileNotFoundError:
            return False

    def _quarantine(self, digest: str) -> None:
        _silent_unlink(self.blob_path(digest))

    # -- action cache ----------------------------------------------------------
    def get_action(self, key: str) -> dict | None:
        """The result manifest stored for key, or None: a malformed entry counts as absent and is reported once."""
        try:
            data = self.action_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return validate_manifest(json.loads(data), key)
        except (ValueError, RecursionError):
            _silent_unlink(self.action_path(key))
            return None
        except Untrusted as exc:
            reject(self, key, exc)
            return None

    def tier_of(self, key: str) -> str:
        """Which tier served the last get_action(key): always "local" here."""
        return "local"

    def has_action(self, key: str) -> bool:
        return self.action_path(key).exists()

    def remove_action(self, key: str) -> None:
        """Forget key's entry (`cache verify --repair`: its blobs are gone or it does not parse)."""
        _silent_unlink(self.action_path(key))
        self.rejected.pop(key, None)

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
        """The keys of the action cache (names that are not digests are never listed)."""
        yield from _names(self.root / "ac")

    def iter_blobs(self):
        """The digests of the blobs (names that are not digests are never listed)."""
        yield from _names(self.root / "cas")

    # -- helpers ----------------------------------------------------------------
    def _tmp_name(self) -> str:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
        os.close(fd)
        os.unlink(name)
        return name

    def _commit_tmp(self, tmp: str, final: Path, mode: int) -> None:
        os.chmod(tmp, mode)
        os.replace(tmp, final)


def _names(top: Path):
    for sub in sorted(top.iterdir()):
        if sub.is_dir() and not sub.is_symlink():
            yield from sorted(e.name for e in sub.iterdir() if is_digest(e.name) and e.name[:2] == sub.name)


def reject(store, key: str, exc: Untrusted) -> None:
    """Count a manifest that failed validation and report it once; it is never acted on (nor deleted here)."""
    first = store.rejected.setdefault(key, exc.message) is exc.message  # atomic: one thread of several warns
    if first and store.warn is not None:
        store.warn(f"{store.name} cache entry {key} is corrupt and was ignored: {exc.message}")


FICLONE = 0x40049409  # linux/fs.h: the new file shares src's extents (btrfs, XFS); EOPNOTSUPP, EXDEV, EINVAL elsewhere


def _clone_or_copy(src, out: int, dst: str) -> str:
    """Clone (or else copy) src, a path or an fd, into dst, the new empty file open as out; return the digest of the
    bytes dst holds: a clone is a snapshot only buildml holds, read back; a copy is digested as it is written."""
    import fcntl

    import xxhash

    fd = os.dup(src) if isinstance(src, int) else os.open(src, os.O_RDONLY)
    try:
        try:
            fcntl.ioctl(out, FICLONE, fd)
        except OSError:
            pass
        else:
            return digest_file(dst)
        h = xxhash.xxh3_128()
        buf = bytearray(min(CHUNK, max(os.fstat(fd).st_size + 1, 1 << 16)))  # small files: no 1 MiB buffer
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            h.update(view[:n])
            done = 0
            while done < n:
                done += os.write(out, view[done:n])
            offset += n
        return h.hexdigest()
    finally:
        os.close(fd)
