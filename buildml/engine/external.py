"""External data deps (any fsspec URL): resolve through buildml.lock, detect drift, keep the bytes in the store.

A dep like `s3://bucket/raw/*.parquet` is resolved to the files it matches. Each file is staged in
the sandbox at `external/<scheme>/<host>/<path>` relative to the workspace root (for example
`s3://bucket/raw/a.parquet` -> `external/s3/bucket/raw/a.parquet`, `file:///data/x.csv` ->
`external/file/data/x.csv`), and the action key covers that path with the file's *locked content
digest*, so the key changes exactly when the lock does.

On the current tree every build compares the backend's identity of each file (ETag, checksum,
generation or version id, and size; the content digest where the backend has none, as for
local files) with the lock: a difference stops the build naming the URL, unless `--update-lock`
re-pins. A dep not in the lock yet is pinned on first use. An `--at REV` build never looks at the
backend when the pinned bytes are in the store: an old commit builds from the bytes it locked.
Backend options (endpoints, credentials) come from fsspec's own configuration, e.g.
`FSSPEC_S3_ENDPOINT_URL` or the usual AWS_* variables.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from buildml.errors import EnvironmentProblem, UserError
from buildml.hashing import CHUNK
from buildml.load.lockfile import LOCK_FILE, Pin, read_lock, write_lock
from buildml.executors.sandbox import Staged
from buildml.store.local import remove_tree
from buildml.store.remote import url_filesystem

STAGE_DIR = "external"
_GLOB_CHARS = set("*?[")
# info() fields that identify content (not timestamps), lower-cased: S3, GCS, Azure, HTTP
_IDENTITY_FIELDS = ("etag", "versionid", "version_id", "generation", "md5hash", "crc32c", "content-md5",
                    "content_md5", "digest", "checksumsha256", "checksumcrc32c", "checksumcrc32")


class DriftError(UserError):
    """External data no longer matches buildml.lock."""


@dataclass(frozen=True)
class Remote:
    """One file as the backend describes it now."""

    url: str
    size: int
    identity: tuple[tuple[str, str], ...]


def staged_path(url: str) -> str:
    """Where the file at url is placed in the sandbox, workspace-relative."""
    parts = urlsplit(url)
    segments = [s for s in (parts.netloc + "/" + parts.path).split("/") if s not in ("", ".")]
    if ".." in segments or not segments or "\0" in url:
        raise UserError(f"external dep {url!r} has an unusable path", hint="name a file or a glob, without '..'")
    return "/".join([STAGE_DIR, parts.scheme or "file", *segments])


def _identity(info: dict) -> tuple:
    found = {}
    for name, value in info.items():
        key = str(name).lower()
        if key in _IDENTITY_FIELDS and value not in (None, ""):
            found[key] = str(value).strip('"')
    return tuple(sorted(found.items()))


def probe(dep: str) -> list[Remote]:
    """The files dep matches now, with their size and backend identity (metadata only)."""
    fs, path = url_filesystem(dep)
    try:
        paths = sorted(fs.glob(path)) if _GLOB_CHARS & set(path) else [path]
        infos = [(p, fs.info(p)) for p in paths]
    except FileNotFoundError:
        raise UserError(f"external dep {dep} does not exist", hint="check the URL, or your access to it") from None
    except (OSError, PermissionError) as exc:
        raise EnvironmentProblem(f"cannot read {dep}: {exc}", hint="check the network and your credentials") from None
    files = [(p, i) for p, i in infos if i.get("type", "file") != "directory"]
    if not files:
        raise UserError(f"external dep {dep} matches no files", hint="check the URL or the glob")
    scheme = urlsplit(dep).scheme
    return [Remote(_full_url(fs, scheme, p), int(i.get("size") or 0), _identity(i)) for p, i in files]


def _full_url(fs, scheme: str, path: str) -> str:
    if "://" in path:
        return path
    url = fs.unstrip_protocol(path)
    return url if url.startswith(scheme + "://") else f"{scheme}://{path.lstrip('/') if scheme != 'file' else path}"


def fetch(url: str, store, progress=None) -> tuple[str, int]:
    """Copy the file at url into the store; return (content digest, size). progress: a progress.Progress."""
    import xxhash

    fs, path = url_filesystem(url)
    tmp = Path(store.tempdir("external-")) / "blob"
    h, size = xxhash.xxh3_128(), 0
    try:
        with fs.open(path, "rb") as src, open(tmp, "xb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress.add(len(chunk))
        digest = h.hexdigest()
        if progress is not None:
            progress.finish()
        store.put_file(tmp, digest, move=True)
        _share(store, digest)
        return digest, size
    except FileNotFoundError:
        raise UserError(f"external file {url} does not exist any more", hint="run `buildml lock` to re-pin") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot download {url}: {exc}", hint="check the network and your credentials") from None
    finally:
        if tmp.exists():
            tmp.unlink()
        tmp.parent.rmdir()


def _share(store, digest: str) -> None:
    """Upload fetched external bytes to the remote cache too (when uploading), so other machines get them."""
    remote = store.remote
    if remote is None or not store.upload or not store.remote_ok:
        return
    try:
        if not remote.has_blob(digest):
            remote.put_files([(store.blob_path(digest), digest)])
    except Exception:  # noqa: BLE001 - the remote is an accelerator: a failed upload never fails a build
        pass


def _pull(store, digest: str) -> bool:
    """Bring a blob only a remote cache has into the local store; False when no store has it."""
    if store.remote is None:
        return False
    from buildml.store.local import BlobMissing

    tmp = Path(store.tempdir("external-"))
    try:
        store.fetch_to(digest, tmp / "blob")
        return True
    except (BlobMissing, OSError):
        return False
    finally:
        remove_tree(tmp)


def _local_digest(url: str) -> str | None:
    """The content digest of a file:// URL, read in place (no copy), or None for other schemes."""
    if urlsplit(url).scheme not in ("file", "local"):
        return None
    from buildml.hashing import digest_file

    return digest_file(urlsplit(url).path)


class ExternalData:
    """Resolves external deps to pins for one build; thread-safe; writes buildml.lock when pins change."""

    def __init__(self, lock_path: Path, store, warn=lambda m: None, check: bool = True,
                 update: bool = False, dry_run: bool = False, transfer=lambda what, total: None):
        self.lock_path, self.store, self.warn, self.transfer = Path(lock_path), store, warn, transfer
        self.check, self.update, self.dry_run = check, update, dry_run
        self._pins: dict | None = None  # read on first use: builds without URL deps never open the lock
        self._resolved: dict[str, tuple[Pin, ...]] = {}
        self._lock = threading.Lock()

    @property
    def pins(self) -> dict:
        if self._pins is None:
            self._pins = read_lock(self.lock_path)
        return self._pins

    def staged(self, deps) -> list[Staged]:
        """The sandbox inputs of a target's external deps."""
        out = []
        for dep in deps:
            for pin in self.resolve(dep):
                out.append(Staged(staged_path(pin.url), pin.digest, False))
        return out

    def resolve(self, dep: str) -> tuple[Pin, ...]:
        """dep's pins: checked against the backend (current tree) or taken from the lock (--at)."""
        with self._lock:
            if dep not in self._resolved:
                self._resolved[dep] = self._resolve(dep)
            return self._resolved[dep]

    def _resolve(self, dep: str) -> tuple[Pin, ...]:
        locked = self.pins.get(dep)
        if locked is None:
            return self._pin_new(dep)
        if self.check:
            return self._check(dep, locked)
        for pin in locked:  # --at: the lock is all there is; a pin may name only a file its dep matches
            if pin.url != dep and not (_GLOB_CHARS & set(dep) and fnmatchcase(pin.url, dep)):
                raise UserError(f"{LOCK_FILE} pins {pin.url} for the external dep {dep}, which does not match it",
                                hint="a lock file from a branch or a PR is untrusted input; "
                                     "regenerate it with `buildml lock`")
        if not self.dry_run:
            for pin in locked:
                self._ensure_blob(pin)
        return locked

    def _pin_new(self, dep: str) -> tuple[Pin, ...]:
        if self.dry_run:
            raise UserError(f"external dep {dep} is not pinned in {LOCK_FILE} yet", hint="run `buildml lock` or build once")
        pins = tuple(self._pin(remote) for remote in probe(dep))
        self._save(dep, pins)
        self.warn(f"pinned {dep} in {LOCK_FILE} ({len(pins)} file{'s' if len(pins) != 1 else ''}); commit it")
        return pins

    def _check(self, dep: str, locked: tuple[Pin, ...]) -> tuple[Pin, ...]:
        current = probe(dep)
        changes = drift(locked, current)
        if changes and not self.update:
            raise DriftError(f"external data drifted from {LOCK_FILE}: " + "; ".join(changes),
                             hint="re-pin with `buildml lock` (or build with --update-lock) if the new data is intended")
        if changes and self.dry_run:
            return locked
        by_url = {p.url: p for p in locked}
        pins = tuple(self._ensure_blob(by_url[r.url]) if r.url in by_url and not _changed(by_url[r.url], r)
                     else self._pin(r) for r in current)
        if pins != locked:
            self._save(dep, pins)
            self.warn(f"re-pinned {dep} in {LOCK_FILE}: " + "; ".join(changes))
        return pins

    def _pin(self, remote: Remote) -> Pin:
        digest, size = fetch(remote.url, self.store, self.transfer(f"external {remote.url}", remote.size or None))
        return Pin(remote.url, size, digest, remote.identity)

    def _ensure_blob(self, pin: Pin) -> Pin:
        if self.dry_run or self.store.has_blob(pin.digest) or _pull(self.store, pin.digest):
            return pin
        digest, _ = fetch(pin.url, self.store, self.transfer(f"external {pin.url}", pin.size or None))
        if digest != pin.digest:
            raise DriftError(f"the bytes {LOCK_FILE} pins for {pin.url} are not in the cache, and the file there "
                             f"has changed (pinned {pin.digest[:12]}, now {digest[:12]})",
                             hint="restore the old object (e.g. from bucket versioning) or re-pin with `buildml lock`")
        return pin

    def _save(self, dep: str, pins: tuple[Pin, ...]) -> None:
        self.pins[dep] = pins
        if not self.dry_run:
            write_lock(self.lock_path, self.pins)

    def prune(self, keep) -> list[str]:
        """Drop pins of deps no target reads any more; return them."""
        gone = sorted(set(self.pins) - set(keep))
        for dep in gone:
            del self.pins[dep]
        if gone and not self.dry_run:
            write_lock(self.lock_path, self.pins)
        return gone


def _changed(pin: Pin, remote: Remote) -> bool:
    """True when the backend's description of the file differs from its pin."""
    if pin.size != remote.size and remote.size:
        return True
    if remote.identity or pin.identity:
        return dict(pin.identity) != dict(remote.identity)
    local = _local_digest(remote.url)
    return local is not None and local != pin.digest


def drift(locked: tuple[Pin, ...], current: list[Remote]) -> list[str]:
    """Human descriptions of every difference between the pins and the files there now, naming URLs."""
    by_url = {p.url: p for p in locked}
    now = {r.url: r for r in current}
    changes = [f"{url} was removed" for url in sorted(set(by_url) - set(now))]
    changes += [f"{url} is new" for url in sorted(set(now) - set(by_url))]
    for url in sorted(set(by_url) & set(now)):
        pin, remote = by_url[url], now[url]
        if _changed(pin, remote):
            changes.append(f"{url} changed ({_describe(pin, remote)})")
    return changes


def _describe(pin: Pin, remote: Remote) -> str:
    parts = [f"size {pin.size} -> {remote.size}"] if pin.size != remote.size else []
    old, new = dict(pin.identity), dict(remote.identity)
    parts += [f"{name} {old.get(name)} -> {new.get(name)}" for name in sorted(set(old) | set(new))
              if old.get(name) != new.get(name)]
    return ", ".join(parts) or "content differs"


def external_deps(graph, labels) -> list[str]:
    """Every external dep read by labels and what they need."""
    deps = []
    for label in graph.closure(labels):
        deps.extend(d for d in getattr(graph.inputs[label], "external", ()) if d not in deps)
    return deps
