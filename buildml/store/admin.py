"""Maintenance of the cache: verify, stats, gc of the local store, push/pull to the remote."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from buildml.events import Outcome


@dataclass
class VerifyReport:
    """What `buildml cache verify` found."""

    blobs: int = 0
    actions: int = 0
    corrupt_blobs: list = field(default_factory=list)
    bad_actions: list = field(default_factory=list)  # (key, reason)

    @property
    def ok(self) -> bool:
        return not self.corrupt_blobs and not self.bad_actions


def verify_target(store, remote: bool, repair: bool):
    """The store `cache verify` checks: the local one, or (--remote) the remote one, which is never repaired."""
    if not remote:
        return store.local
    from buildml.errors import UserError

    if store.remote is None:
        raise UserError("no remote cache configured", hint="set cache.remote in buildml.yaml, $BUILDML_REMOTE_CACHE or --remote-cache")
    if repair:
        raise UserError("--repair works on the local cache only", hint="buildml never deletes remote objects; drop --repair")
    return store.remote


def verify(store, repair: bool = False) -> VerifyReport:
    """Re-hash every blob; check every manifest parses, passes validation and names blobs that exist."""
    report = VerifyReport()
    for digest in store.iter_blobs():
        report.blobs += 1
        if not store.verify_blob(digest):
            report.corrupt_blobs.append(digest)
            if repair:
                store._quarantine(digest)
    for key in store.iter_actions():
        report.actions += 1
        manifest = store.get_action(key)
        if manifest is None:
            reason = store.rejected.get(key)
            why = f"corrupt manifest: {reason}" if reason else "unreadable or mismatched manifest"
        else:
            named = {p: m["digest"] for p, m in manifest.get("outputs", {}).items()}
            if manifest.get("log"):
                named["(its log)"] = manifest["log"]
            missing = [p for p, digest in named.items() if not store.has_blob(digest)]
            if not missing:
                continue
            why = f"missing blobs for {', '.join(missing[:3])}"
        report.bad_actions.append((key, why))
        if repair:  # an entry naming a removed blob is forgotten: the next build re-executes or refetches it
            store.remove_action(key)
    return report


# -- build records, stats --------------------------------------------------------------------
STATS_FILE = "stats.jsonl"
STATS_KEEP = 50


def record_build(store, finished) -> None:
    """Remember the outcome counts of a build (for `cache stats`) and mark its entries as just used (for gc)."""
    local = store.local
    counts = {"time": round(time.time()), "executed": 0, "cached_local": 0, "cached_remote": 0, "up_to_date": 0, "failed": 0}
    ac = os.path.join(str(local.root), "ac")
    for r in finished.results:
        field_name = {Outcome.EXECUTED: "executed", Outcome.UP_TO_DATE: "up_to_date", Outcome.FAILED: "failed"}.get(r.status)
        if r.status == Outcome.CACHED:
            field_name = "cached_remote" if r.source == "remote" else "cached_local"
        if field_name:
            counts[field_name] += 1
        if r.key:  # one syscall per entry: a 10,000-target no-op pays ~30 ms here
            _touch(os.path.join(ac, r.key[:2], r.key))
    path = local.root / STATS_FILE
    try:
        lines = path.read_text().splitlines()[-(STATS_KEEP - 1):] if path.exists() else []
        path.write_text("".join(l + "\n" for l in lines) + json.dumps(counts, sort_keys=True) + "\n")
    except OSError:
        pass


def _touch(path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


@dataclass
class Stats:
    """What `buildml cache stats` shows."""

    blobs: int = 0
    blob_bytes: int = 0
    actions: int = 0
    builds: list = field(default_factory=list)  # recent build records, oldest first
    remote: str | None = None
    cost: dict | None = None  # the recorded costs summed (store/index.py cost_totals); None: not asked for

    def hit_rate(self, build: dict) -> float | None:
        hits = build["cached_local"] + build["cached_remote"] + build["up_to_date"]
        total = hits + build["executed"]
        return hits / total if total else None


def stats(store, state_dir=None) -> Stats:
    """Sizes and entry counts of the local store, and the recorded builds; with state_dir (where the manifest
    index is kept), the recorded costs of the local entries summed, from the index (it reads only new manifests)."""
    local = store.local
    result = Stats(remote=store.remote.url if store.remote is not None else None)
    if state_dir is not None:
        from buildml.store.index import open_index

        index = open_index(local, state_dir)
        try:
            result.cost = index.cost_totals()
        finally:
            index.close()
    for digest in local.iter_blobs():
        result.blobs += 1
        try:
            result.blob_bytes += local.blob_path(digest).stat().st_size
        except OSError:
            pass
    result.actions = sum(1 for _ in local.iter_actions())
    path = local.root / STATS_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                result.builds.append(json.loads(line))
            except ValueError:
                continue
    return result


# -- gc ----------------------------------------------------------------------------------------
@dataclass
class GcReport:
    """What `buildml cache gc` removed."""

    before: int = 0
    after: int = 0
    actions_removed: int = 0
    blobs_removed: int = 0


def gc(store, max_size: int) -> GcReport:
    """Shrink the local store to max_size bytes: unreferenced blobs first, then least recently used entries.

    Holds the cache's exclusive lock, so no build is using any entry meanwhile.
    """
    local = store.local
    with cache_lock(local, exclusive=True):
        return _gc_locked(local, max_size)


def _gc_locked(local, max_size: int) -> GcReport:
    sizes = {}
    for digest in local.iter_blobs():
        try:
            sizes[digest] = local.blob_path(digest).stat().st_size
        except OSError:
            continue
    entries = []  # (last used, key, digests)
    for key in local.iter_actions():
        manifest = local.get_action(key) or {}
        digests = {m["digest"] for m in manifest.get("outputs", {}).values()} | ({manifest["log"]} if manifest.get("log") else set())
        try:
            used = local.action_path(key).stat().st_mtime
        except OSError:
            continue
        entries.append((used, key, digests))
    entries.sort()
    report = GcReport(before=sum(sizes.values()))
    total = report.before
    referenced: dict = {}
    for _, _, digests in entries:
        for d in digests:
            referenced[d] = referenced.get(d, 0) + 1
    orphans = sorted((d for d in sizes if d not in referenced), key=lambda d: _mtime(local.blob_path(d)))
    for digest in orphans:
        if total <= max_size:
            break
        total -= _remove_blob(local, digest, sizes, report)
    for _, key, digests in entries:
        if total <= max_size:
            break
        _silent_unlink(local.action_path(key))
        report.actions_removed += 1
        for d in digests:
            referenced[d] -= 1
            if referenced[d] == 0 and d in sizes:
                total -= _remove_blob(local, d, sizes, report)
    report.after = total
    return report


def _remove_blob(local, digest, sizes, report) -> int:
    _silent_unlink(local.blob_path(digest))
    report.blobs_removed += 1
    return sizes.get(digest, 0)


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _silent_unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class cache_lock:
    """Builds hold the cache lock shared; gc holds it exclusively (fails at once if a build runs)."""

    def __init__(self, local, exclusive: bool = False):
        self.path = local.root / "locks" / "cache-in-use.lock"
        self.exclusive = exclusive
        self.fd = None

    def __enter__(self):
        import fcntl

        from buildml.errors import EnvironmentProblem

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB if self.exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            os.close(self.fd)
            raise EnvironmentProblem("a build is using the cache", hint="run `buildml cache gc` again when it has finished") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# -- push / pull ---------------------------------------------------------------------------------
def transfer(store, results, direction: str) -> tuple[list, list]:
    """Push (local -> remote) or pull (remote -> local) the entries of results; (done, not done) labels."""
    done, failed = [], []
    for r in results:
        ok = bool(r.key) and (store.push(r.key) if direction == "push" else store.pull(r.key))
        (done if ok else failed).append(str(r.label))
    return done, failed
