"""The local store in front of a remote one: local first, then remote; fill local on a remote hit; upload after success.

The remote is an accelerator, never a dependency: the first failure to reach it produces one
warning and the rest of the build uses the local store only. A blob from the remote is
verified before it enters the local store; a corrupt one is reported, discarded, never used,
and overwritten by the next upload of a good copy.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from buildml.errors import CacheCorruption, EnvironmentProblem
from buildml.hashing import digest_file
from buildml.store import bandwidth
from buildml.store.remote import RemoteStore, RemoteUnavailable
from buildml.store.local import BlobMissing, remove_tree

REMOTE_ENV = "BUILDML_REMOTE_CACHE"
ADMIT_THREADS = 8


def remote_url(settings, options) -> str | None:
    """--remote-cache, else $BUILDML_REMOTE_CACHE, else cache.remote in buildml.yaml."""
    return getattr(options, "remote_cache", None) or os.environ.get(REMOTE_ENV) or settings.remote_cache or None


def open_store(local, settings, options, warn, progress=None):
    """The local store alone, or tiered over the configured remote. progress(what, total) -> Progress or None."""
    if local.warn is None:
        local.warn = warn  # a rejected (corrupt) local entry is reported here
    url = remote_url(settings, options)
    if not url:
        return local
    upload = getattr(options, "remote_upload", None)
    upload = settings.remote_upload if upload is None else upload
    return TieredStore(local, RemoteStore(url, settings.storage_options, warn), upload, warn, progress)


def _shared_outputs(manifest: dict) -> list:
    """Digests of the outputs a shared entry holds: all but those never uploaded (local_only: cache/push false)."""
    local_only = manifest.get("local_only") or ()
    return [m["digest"] for p, m in manifest.get("outputs", {}).items()
            if not any(p == o or p.startswith(o + "/") for o in local_only)]


def _blobs_of(manifest: dict) -> list:
    return _shared_outputs(manifest) + ([manifest["log"]] if manifest.get("log") else [])


class TieredStore:
    """LocalStore interface over a local store and a remote one."""

    name = "tiered"
    can_link = True  # the local tier's blobs are files (link_to)

    def __init__(self, local, remote: RemoteStore, upload: bool = True, warn=lambda message: None, progress=None):
        self.local, self.remote, self.upload, self.warn = local, remote, upload, warn
        if remote.warn is None:
            remote.warn = warn  # a rejected (corrupt) remote entry is reported once, as a warning
        self.progress = progress or (lambda what, total: None)
        self._lock = threading.Lock()
        self._down = False  # the remote failed once: local only from now on
        self._pending: dict = {}  # key -> manifest found remotely, blobs not yet local
        self._bad_keys: set = set()  # remote entries with a corrupt blob: never offered again
        self._corrupt: set = set()  # remote blobs found corrupt: overwrite them on upload
        self._served_remote: set = set()  # keys whose last get_action was a remote hit

    # -- the local tier's paths, locks, tempdirs and iteration ------------------------
    @property
    def root(self):
        return self.local.root

    @property
    def rejected(self) -> dict:
        return self.local.rejected

    def blob_path(self, digest: str):
        return self.local.blob_path(digest)

    def action_path(self, key: str):
        return self.local.action_path(key)

    def lock_path(self, key: str):
        return self.local.lock_path(key)

    def tempdir(self, prefix: str):
        return self.local.tempdir(prefix)

    def put_file(self, src, digest: str | None = None, move: bool = False) -> str:
        return self.local.put_file(src, digest, move)

    def put_bytes(self, data: bytes) -> str:
        return self.local.put_bytes(data)

    def iter_actions(self):
        return self.local.iter_actions()

    def iter_blobs(self):
        return self.local.iter_blobs()

    # -- remote health ------------------------------------------------------------
    write_denied = False  # the remote refused a write (read-only credentials)

    @property
    def remote_ok(self) -> bool:
        return not self._down

    def _failed(self, exc: EnvironmentProblem, writing: bool = False) -> None:
        message = exc.message if isinstance(exc, RemoteUnavailable) or not exc.hint else f"{exc.message} ({exc.hint})"
        with self._lock:
            if writing and getattr(exc, "denied", False):
                self.write_denied = True
                if self.upload:
                    self.upload = False
                    self.warn(f"{message}; results of this build will not be uploaded")
                return
            if not self._down:
                self._down = True
                self.warn(f"{message}; continuing with the local cache only")

    # -- action cache ---------------------------------------------------------------
    def get_action(self, key: str) -> dict | None:
        manifest = self.local.get_action(key)
        with self._lock:
            self._served_remote.discard(key)
        if manifest is not None or self._down or key in self._bad_keys:
            return manifest
        try:
            manifest = self.remote.get_action(key)
        except EnvironmentProblem as exc:  # RemoteUnavailable, or an unusable URL or backend
            self._failed(exc)
            return None
        if manifest is None:
            return None
        with self._lock:
            self._pending[key] = manifest
            self._served_remote.add(key)
        return manifest

    def tier_of(self, key: str) -> str:
        """Which tier served the last get_action(key): "remote" or "local"."""
        with self._lock:
            return "remote" if key in self._served_remote else "local"

    def has_action(self, key: str) -> bool:
        return self.local.has_action(key)

    def put_action(self, key: str, manifest: dict) -> None:
        """Record locally; then, if uploading, send missing blobs and then the manifest."""
        manifest = {k: v for k, v in manifest.items() if not k.startswith("_")}
        self.local.put_action(key, manifest)
        if self.upload and not self._down:
            self.push(key, manifest)

    def push(self, key: str, manifest: dict | None = None) -> bool:
        """Upload one local entry (blobs first, manifest last); False if the remote is unusable."""
        manifest = manifest or self.local.get_action(key)
        if manifest is None:
            return False
        if not all(self.local.has_blob(d) for d in _shared_outputs(manifest)):
            return False  # never publish an entry whose blobs cannot all be sent
        digests = [d for d in _blobs_of(manifest) if self.local.has_blob(d)]
        force = self._corrupt & set(digests)
        try:
            if not force and self.remote.has_action(key):
                return True  # already shared: its blobs are there too
            self.remote.put_files([(self.local.blob_path(d), d) for d in digests], overwrite=force)
            self.remote.put_action(key, manifest)
        except EnvironmentProblem as exc:  # RemoteUnavailable, or an unusable URL or backend
            self._failed(exc, writing=True)
            return False
        with self._lock:
            self._corrupt -= force
            self._bad_keys.discard(key)
        return True

    def publish(self, key: str, manifest: dict) -> bool:
        """Upload a local entry that may replace the remote's (a record that grows, not a result); when uploading."""
        if not self.upload or self._down:
            return False
        digests = [d for d in _blobs_of(manifest) if self.local.has_blob(d)]
        try:
            missing = self.remote.missing_blobs(digests)
            self.remote.put_files([(self.local.blob_path(d), d) for d in digests if d in missing])
            self.remote.put_action(key, manifest, replace=True)
        except EnvironmentProblem as exc:
            self._failed(exc, writing=True)
            return False
        return True

    def remote_action(self, key: str) -> dict | None:
        """The remote's entry for key, read past the local one (None when absent or the remote is unusable)."""
        if self._down:
            return None
        try:
            return self.remote.get_action(key)
        except EnvironmentProblem as exc:
            self._failed(exc)
            return None

    def fetch_blobs(self, digests) -> None:
        """Download exactly these blobs (verified) into the local store, where the remote has them."""
        self._pull_blobs([d for d in digests if not self.local.has_blob(d)])

    def pull(self, key: str) -> bool:
        """Bring one remote entry and its blobs into the local store; False if absent or unusable."""
        manifest = self.get_action(key)
        if manifest is None:
            return False
        missing = [d for d in _blobs_of(manifest) if not self.local.has_blob(d)]
        self._pull_blobs(missing)
        return self.local.get_action(key) is not None and all(self.local.has_blob(d) for d in _shared_outputs(manifest))

    # -- blobs --------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        if self.local.has_blob(digest):
            return True
        with self._lock:
            return any(digest in _blobs_of(m) for m in self._pending.values())

    def fetch_to(self, digest: str, dest) -> None:
        """Copy a blob to dest, downloading it (with its manifest's siblings) first if only the remote has it."""
        if not self.local.has_blob(digest):
            self._pull_blobs(self._siblings(digest))
            if digest in self._corrupt:
                raise CacheCorruption(f"remote cache blob {digest} is corrupt; it was discarded and the action runs locally")
        self.local.fetch_to(digest, dest)

    def link_to(self, digest: str, dest) -> str | None:
        """LocalStore.link_to, downloading the blob (with its manifest's siblings) first if only the remote has it."""
        try:
            return self.local.link_to(digest, dest)
        except BlobMissing:
            self._pull_blobs(self._siblings(digest))
            if digest in self._corrupt:
                raise CacheCorruption(f"remote cache blob {digest} is corrupt; it was discarded and the action runs locally")
        return self.local.link_to(digest, dest)

    def read_bytes(self, digest: str) -> bytes:
        if not self.local.has_blob(digest):
            self._pull_blobs([digest])
        return self.local.read_bytes(digest)

    def _siblings(self, digest: str) -> list:
        with self._lock:
            for manifest in self._pending.values():
                if digest in _blobs_of(manifest):
                    return [d for d in _blobs_of(manifest) if not self.local.has_blob(d)]
        return [digest]

    def _pull_blobs(self, digests) -> None:
        todo = sorted(set(digests) - self._corrupt)
        if not todo or self._down:
            return
        tmp = self.local.tempdir("remote-")
        try:
            from buildml.store.progress import fsspec_callback

            sizes = self._sizes(todo)
            progress = self.progress(f"remote cache: {len(todo)} blob{'s' if len(todo) != 1 else ''}", sizes)
            began = time.monotonic()
            found = self.remote.download(todo, tmp, fsspec_callback(progress), nbytes=self._known_bytes(todo))
            bandwidth.record(self.local.root, self.remote.url, sum(os.path.getsize(p) for p in found.values()),
                             time.monotonic() - began)
            if progress is not None:
                progress.finish()
            with ThreadPoolExecutor(ADMIT_THREADS) as pool:  # verify + fsync many small blobs at once
                list(pool.map(self._admit, found, found.values()))
            self._forget_entries_missing(set(todo) - set(found))
        except EnvironmentProblem as exc:  # RemoteUnavailable, or an unusable URL or backend
            self._failed(exc)
        finally:
            remove_tree(tmp)
        self._fill_manifests()

    def _sizes(self, digests) -> int | None:
        """Total bytes of the blobs, when the pending manifests know every size (logs have none)."""
        sizes = {}
        with self._lock:
            for manifest in self._pending.values():
                for meta in manifest.get("outputs", {}).values():
                    sizes[meta["digest"]] = meta.get("size")
        known = [sizes.get(d) for d in digests]
        return sum(known) if all(s is not None for s in known) else None

    def _known_bytes(self, digests) -> int:
        """Total size of the blobs the pending manifests give a size for (logs have none: they are small)."""
        with self._lock:
            sizes = {m["digest"]: m.get("size") or 0 for p in self._pending.values() for m in p.get("outputs", {}).values()}
        return sum(sizes.get(d, 0) for d in digests)

    def _admit(self, digest: str, path: str) -> None:
        """Verify a downloaded blob; store it locally, or report and discard it."""
        if digest_file(path) == digest:
            self.local.put_file(path, digest, move=True)
            return
        os.unlink(path)
        with self._lock:
            self._corrupt.add(digest)
            bad = [k for k, m in self._pending.items() if digest in _blobs_of(m)]
            for key in bad:
                self._bad_keys.add(key)
                del self._pending[key]
        self.warn(f"remote cache blob {digest} is corrupt (digest mismatch); it was discarded")

    def _forget_entries_missing(self, missing: set) -> None:
        """A remote entry whose output blob is gone is never offered again in this build."""
        with self._lock:
            for key, manifest in list(self._pending.items()):
                if missing & {o["digest"] for o in manifest.get("outputs", {}).values()}:
                    self._bad_keys.add(key)
                    del self._pending[key]

    def _fill_manifests(self) -> None:
        """Remote entries whose output blobs are now all local become local entries."""
        with self._lock:
            done = [k for k, m in self._pending.items()
                    if all(self.local.has_blob(d) for d in _shared_outputs(m))]
            manifests = [(k, self._pending.pop(k)) for k in done]
        for key, manifest in manifests:
            self.local.put_action(key, manifest)

    def verify_blob(self, digest: str) -> bool:
        return self.local.verify_blob(digest)


__all__ = ["TieredStore", "open_store", "remote_url"]
