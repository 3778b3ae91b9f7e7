"""Content-addressed blobs and action cache in any fsspec location (s3://, gs://, file://, ...).

Layout under the URL: cas/<d[:2]>/<digest> and ac/<k[:2]>/<key>, the same as the local store.
Nothing is ever renamed: blobs are written under their final digest (put-if-absent where the
backend has it), and a manifest is written only after its blobs, so a reader that finds an
entry finds its blobs. Every downloaded blob is checked against its digest before use.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from buildml.errors import CacheCorruption, EnvironmentProblem
from buildml.hashing import digest_bytes, digest_file
from buildml.store.local import BlobMissing, reject
from buildml.trust import Untrusted, check_digest, is_digest, validate_manifest

ATTEMPTS = 3
BACKOFF_S = 0.3
RACE_ATTEMPTS = 4  # re-checks after a lost put-if-absent race (0.3 + 0.6 + 1.2 + 2.4 s at most)
PART_SIZE = 8 << 20  # multipart chunk: big files stream instead of being read whole
CONDITIONAL = ("s3", "s3a", "gs", "gcs")  # backends with put-if-absent
S3_DEFAULTS = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2, "mode": "standard"}}
S3FS_RETRIES = 3  # s3fs's own retries with backoff (its default, 5, makes an outage cost ~6 s per call)
LOOKUP_TIMEOUT_S = 30  # one lookup, retries included (async backends): else a stalled server costs ~15 x read_timeout
MIN_RATE_BPS = 1 << 20  # a download of N known bytes may take LOOKUP_TIMEOUT_S + N / 1 MB/s, retries included


class RemoteUnavailable(EnvironmentProblem):
    """The remote cache could not be reached or refused an operation."""

    def __init__(self, message: str, denied: bool = False, exists: bool = False):
        super().__init__(message, hint="the build continues with the local cache")
        self.denied = denied
        self.exists = exists  # a put-if-absent found the object there (another writer won)


def open_fs(url: str, storage_options: dict):
    """(filesystem, root path) for url; backend imports happen here, not at module import."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # else gcsfs probes gRPC for a minute
    from fsspec.core import url_to_fs

    options = dict(storage_options)
    options.setdefault("skip_instance_cache", True)  # one store per session; never share a stale client
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme in ("s3", "s3a"):
        options.setdefault("config_kwargs", dict(S3_DEFAULTS))
    if scheme in ("gs", "gcs") and os.environ.get("STORAGE_EMULATOR_HOST"):
        options.setdefault("token", "anon")
    try:
        fs, root = url_to_fs(url, **options)
    except ImportError as exc:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        hint = f"pip install 'buildml-cli[{extra}]'" if extra else "install the fsspec backend for this URL"
        raise EnvironmentProblem(f"remote cache {url}: {exc}", hint=hint) from None
    except ValueError as exc:
        raise EnvironmentProblem(f"remote cache URL {url!r} is not usable: {exc}", hint="e.g. s3://bucket/prefix") from None
    if scheme in ("s3", "s3a"):
        fs.retries = S3FS_RETRIES
    return fs, root.rstrip("/")


def url_filesystem(url: str):
    """(fsspec filesystem, path) for any fsspec URL (external data deps); a clear error for a missing backend."""
    import fsspec  # heavy backends load only when a target reads external data

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot open {url}: {exc}",
                                 hint="install the fsspec backend for that scheme (s3fs, gcsfs, adlfs, aiohttp)") from None


def _is_denied(exc: BaseException) -> bool:
    """Permission denied, as s3fs (PermissionError), gcsfs (HttpError code 403) or others say it."""
    return isinstance(exc, PermissionError) or getattr(exc, "code", None) == 403 or \
        getattr(exc, "status", None) == 403 or "AccessDenied" in str(exc)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text and isinstance(exc, TimeoutError):  # fsspec's FSTimeoutError: a lookup ran out of time
        text = "no answer in time (the server stalls)"
    return f"{type(exc).__name__}: {text}"[:200]


class RemoteStore:
    """Blobs and action-cache entries under one fsspec URL; same interface as LocalStore."""

    name = "remote"

    def __init__(self, url: str, storage_options: dict | None = None, warn=None):
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.warn = warn  # message -> None: where a rejected entry is reported (once per key)
        self.rejected: dict = {}  # key -> why its manifest was rejected as corrupt
        self._fs = None
        self._root = ""
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------
    @property
    def fs(self):
        with self._lock:
            if self._fs is None:
                self._fs, self._root = open_fs(self.url, self.storage_options)
            return self._fs

    @property
    def is_file_backend(self) -> bool:
        """True when the backend is a local filesystem (file:// URL)."""
        return "file" in _protocols(self.fs)

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args) with retries and backoff; a missing object raises FileNotFoundError.

        s3fs and gcsfs retry transient errors with backoff themselves: one attempt here is enough.
        """
        attempts = 1 if _protocols(self.fs) & set(CONDITIONAL) else ATTEMPTS
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except FileNotFoundError:
                raise
            except Exception as exc:  # every backend has its own error types
                if _is_denied(exc) or attempt == attempts - 1:
                    raise RemoteUnavailable(f"remote cache {self.url}: {what} failed: {_brief(exc)}",
                                            denied=_is_denied(exc), exists=isinstance(exc, FileExistsError)) from None
                time.sleep(BACKOFF_S * 2 ** attempt)

    def _write(self, what: str, fn, *args, **kwargs):
        """_call for a write: a FileNotFoundError there means the bucket (or container) is missing, an outage of
        the remote, never a missing object (which a read means by it)."""
        try:
            return self._call(what, fn, *args, **kwargs)
        except FileNotFoundError as exc:
            raise RemoteUnavailable(f"remote cache {self.url}: {what} failed: {_brief(exc)}") from None

    def _lookup(self, what: str, fn, *args):
        """A small metadata call (exists, a manifest), bounded in total time where the backend is async."""
        return self._call(what, fn, *args, **({"timeout": LOOKUP_TIMEOUT_S} if getattr(self.fs, "async_impl", False) else {}))

    # -- paths --------------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        """The object key of digest's blob; Untrusted unless digest is a well-formed digest."""
        check_digest(digest, "blob digest")
        return f"{self._fs_root()}/cas/{digest[:2]}/{digest}"

    def action_path(self, key: str) -> str:
        check_digest(key, "action key")
        return f"{self._fs_root()}/ac/{key[:2]}/{key}"

    # -- blobs ---------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self._lookup("checking a blob", self.fs.exists, self.blob_path(digest))

    def missing_blobs(self, digests) -> set:
        """The digests among `digests` the remote lacks (checked concurrently)."""
        digests = sorted(set(digests))
        if not digests:
            return set()
        with ThreadPoolExecutor(min(16, len(digests))) as pool:
            present = list(pool.map(self.has_blob, digests))
        return {d for d, there in zip(digests, present) if not there}

    def put_file(self, src, digest: str, move: bool = False) -> None:
        """Upload the file at src under digest unless the remote has it already."""
        self.put_files([(src, digest)])

    def put_files(self, items, overwrite=()) -> None:
        """Upload (path, digest) pairs the remote lacks (and those in overwrite), concurrently."""
        items = dict((d, str(p)) for p, d in items)
        todo = (self.missing_blobs(set(items) - set(overwrite)) | (set(overwrite) & set(items)))
        if todo:
            self._upload([items[d] for d in sorted(todo)], [self.blob_path(d) for d in sorted(todo)],
                         create=not (set(overwrite) & todo))

    def put_bytes(self, data: bytes) -> str:
        digest = digest_bytes(data)
        if not self.has_blob(digest):
            self._write_bytes(self.blob_path(digest), data)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        try:
            data = self._call("reading a blob", self.fs.cat_file, self.blob_path(digest))
        except FileNotFoundError:
            raise BlobMissing(digest) from None
        if digest_bytes(data) != digest:
            raise CacheCorruption(f"remote cache blob {digest} is corrupt; it was discarded")
        return data

    def download(self, digests, dest_dir, callback=None, nbytes: int | None = None) -> dict:
        """Download blobs into dest_dir concurrently; {digest: local path} for those found (unverified). The local
        paths are dest_dir/<digest>, built here from checked digests only: fsspec does not contain explicit lists.

        callback: an fsspec Callback that receives the bytes of every file (byte progress). nbytes: their
        total size where known, which bounds the time the batch may take on async backends (a stalled
        server otherwise costs retries x read_timeout per attempt: many minutes)."""
        digests = sorted(set(digests))
        if not digests:
            return {}
        paths = {d: os.path.join(str(dest_dir), check_digest(d, "blob digest")) for d in digests}
        try:
            extra = {"callback": callback} if callback is not None else {}
            if nbytes is not None and getattr(self.fs, "async_impl", False):
                extra["timeout"] = LOOKUP_TIMEOUT_S + nbytes / MIN_RATE_BPS
            self._call("downloading blobs", self.fs.get, [self.blob_path(d) for d in digests], [paths[d] for d in digests], **extra)
            return paths
        except FileNotFoundError:
            pass
        found = {}  # a batch stops at its first missing object: one by one, into fresh names
        for d in digests:
            path = paths[d] + ".single"
            try:
                self._call("downloading a blob", self.fs.get_file, self.blob_path(d), path)
                found[d] = path
            except FileNotFoundError:
                continue
        return found

    def fetch_to(self, digest: str, dest) -> None:
        """Download a blob to dest (atomically, verified)."""
        dest = str(dest)
        tmp_dir = os.path.dirname(dest) or "."
        tmp = os.path.join(tmp_dir, f".{os.path.basename(dest)}.buildml-remote-{uuid.uuid4().hex[:8]}")
        try:
            try:
                self._call("downloading a blob", self.fs.get_file, self.blob_path(digest), tmp)
            except FileNotFoundError:
                raise BlobMissing(digest) from None
            if digest_file(tmp) != digest:
                raise CacheCorruption(f"remote cache blob {digest} is corrupt; it was discarded")
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def verify_blob(self, digest: str) -> bool:
        try:
            return self.read_bytes(digest) is not None
        except (BlobMissing, CacheCorruption):
            return False

    # -- action cache -----------------------------------------------------------------
    def get_action(self, key: str) -> dict | None:
        """The manifest stored for key, or None (a malformed entry counts as absent)."""
        try:
            data = self._lookup("reading the action cache", self.fs.cat_file, self.action_path(key))
        except FileNotFoundError:
            return None
        try:
            return validate_manifest(json.loads(data), key)
        except (ValueError, RecursionError):
            return None
        except Untrusted as exc:
            reject(self, key, exc)
            return None

    def has_action(self, key: str) -> bool:
        return self._lookup("checking the action cache", self.fs.exists, self.action_path(key))

    def put_action(self, key: str, manifest: dict, replace: bool = False) -> None:
        """Write the manifest (call only after its blobs are uploaded); an entry there is kept unless replace."""
        clean = {k: v for k, v in manifest.items() if not k.startswith("_")}
        self._write_bytes(self.action_path(key), json.dumps(clean, sort_keys=True).encode(), create=not replace)

    def iter_actions(self):
        yield from self._names("ac")

    def iter_blobs(self):
        yield from self._names("cas")

    def listing(self, sub: str) -> dict[str, tuple[float | None, int]]:
        """{name: (last modified, epoch seconds or None, size)} of the objects under sub ("ac", "cas", "runs");
        names that are not keys are left out (a listing is untrusted)."""
        try:
            found = self._call("listing the cache", self.fs.find, f"{self._fs_root()}/{sub}", detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for path, info in found.items():
            parts = path.rsplit("/", 2)
            name = parts[-1].removesuffix(".json") if sub == "runs" else parts[-1]
            if len(parts) == 3 and is_digest(name) and parts[1] == name[:2]:
                out[name] = (_modified(info), int(info.get("size") or 0))
        return out

    def object_path(self, sub: str, name: str) -> str:
        """Where listing(sub)'s name lives."""
        check_digest(name, "object name")
        return f"{self._fs_root()}/{sub}/{name[:2]}/{name}" + (".json" if sub == "runs" else "")

    def server_time(self) -> float:
        """Now by the backend's clock: the modification time of a marker object written and removed here."""
        path = f"{self._fs_root()}/gc/now-{uuid.uuid4().hex}"
        self._write("writing the cache", self.fs.pipe_file, path, b"")
        try:
            modified = _modified(self._call("reading the cache", self.fs.info, path))
        finally:
            self.delete([path])
        return modified if modified is not None else time.time()

    def delete(self, paths: list[str]) -> None:
        """Remove objects (object_path()s); one already gone is no error."""
        if not paths:
            return
        try:
            self._call("deleting from the cache", self.fs.rm, list(paths))
        except FileNotFoundError:
            pass

    # -- writes -------------------------------------------------------------------------
    def _fs_root(self) -> str:
        _ = self.fs  # opening the filesystem sets _root
        return self._root

    def _names(self, sub: str):
        try:
            found = self._call("listing the cache", self.fs.find, f"{self._fs_root()}/{sub}")
        except FileNotFoundError:
            return
        for path in sorted(found):
            parts = path.rsplit("/", 2)  # a listing is untrusted: only names a key can be built from
            if len(parts) == 3 and is_digest(parts[2]) and parts[1] == parts[2][:2]:
                yield parts[2]

    def _upload(self, lpaths: list, rpaths: list, create: bool) -> None:
        if self.is_file_backend:
            for lpath, rpath in zip(lpaths, rpaths):
                self._write_local(rpath, lambda tmp, src=lpath: self.fs.put_file(src, tmp))
            return
        kwargs = {"chunksize": PART_SIZE} if "s3" in _protocols(self.fs) else {}
        if create and _protocols(self.fs) & set(CONDITIONAL):
            kwargs["mode"] = "create"
        try:
            self._write("uploading blobs", self.fs.put, lpaths, rpaths, **kwargs)
        except RemoteUnavailable as exc:
            if exc.denied or not create or not exc.exists:
                raise
            self._finish_race(lpaths, rpaths, kwargs, exc)

    def _finish_race(self, lpaths: list, rpaths: list, kwargs: dict, failed: RemoteUnavailable) -> None:
        """After a put-if-absent failed: another writer of the same bytes (a concurrent build; every empty log is
        one blob) may have won, or still be writing, and a failed batch may have left others unsent. Upload what is
        still missing, waiting a little for a writer in flight; success once every blob is there."""
        pairs = dict(zip(rpaths, lpaths))
        for attempt in range(RACE_ATTEMPTS):
            missing = self.missing_blobs(r.rsplit("/", 1)[-1] for r in pairs)
            pairs = {r: l for r, l in pairs.items() if r.rsplit("/", 1)[-1] in missing}
            if not pairs:
                return
            time.sleep(BACKOFF_S * 2 ** attempt)
            for rpath, lpath in list(pairs.items()):
                try:
                    self._write("uploading blobs", self.fs.put, [lpath], [rpath], **kwargs)
                except RemoteUnavailable as exc:
                    if exc.denied:
                        raise
        if self.missing_blobs(r.rsplit("/", 1)[-1] for r in pairs):
            raise failed

    def _write_bytes(self, rpath: str, data: bytes, create: bool = True) -> None:
        if self.is_file_backend:
            self._write_local(rpath, lambda tmp: self.fs.pipe_file(tmp, data))
            return
        conditional = create and bool(_protocols(self.fs) & set(CONDITIONAL))
        try:
            self._write("writing the cache", self.fs.pipe_file, rpath, data, **({"mode": "create"} if conditional else {}))
        except RemoteUnavailable as exc:
            if exc.denied or not conditional or not self._call("checking the cache", self.fs.exists, rpath):
                raise

    def _write_local(self, rpath: str, write) -> None:
        """Write through a temporary name and rename: a local file system has an atomic rename."""
        self.fs.makedirs(rpath.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{rpath}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            self._call("writing the cache", write, tmp)
            os.replace(tmp, rpath)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _modified(info: dict) -> float | None:
    """An object's last-modified time from a backend's listing (S3 LastModified, GCS updated, local mtime)."""
    import datetime

    for name in ("LastModified", "last_modified", "updated", "mtime", "modified", "timeCreated", "created"):
        value = info.get(name)
        if isinstance(value, datetime.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)).timestamp()
    return None


def _protocols(fs) -> set:
    proto = fs.protocol
    return set(proto) if isinstance(proto, (tuple, list)) else {proto}
