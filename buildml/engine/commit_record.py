"""Commit records: what builds of a commit used from outside git, so that `--at` can put it back, and which results
they made, so that `cache gc --remote` knows what the commit still needs.

Data is usually git-ignored (downloaded, generated, too big), so a checkout of an old commit lacks it. After each
build on a git work tree, the source files of the built targets that git does not hold at HEAD (ignored or
untracked, and not pinned by a `.dvc` pointer) are stored as blobs in the cache, and their paths and digests in one
record per commit: an action-cache entry under a key made from the commit and the workspace's place in the repo,
so it is verified, garbage-collected and shared with the remote cache like any result. Later builds of the same
commit add to it; a path built again with other bytes takes the newer digest.

`buildml build --at REV` asks the record of REV for a dep its checkout lacks, and places the recorded bytes there
(digest-verified, never through a symlink); then the file is a source like any other. What the record does not
name stays missing: the targets that need it fail with the message that `--at` sees only committed files.

A build of HEAD as committed (no tracked file under the workspace modified, no `--param`) also adds the keys of its
results to the record: the results `--at` of that commit would find, which `cache gc --remote` keeps for the
commits it keeps (store/remote_gc.py).
"""

from __future__ import annotations

import os
import subprocess
import time

import xxhash

from buildml.errors import CacheCorruption, EnvironmentProblem
from buildml.store.local import BlobMissing
from buildml.trust import Untrusted, is_digest, relpath_problem, symlinked_part

FORMAT = "buildml-commit-record/1"
KIND = "commit-record"


def _git(root, *args) -> str | None:
    try:
        proc = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=root, capture_output=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode("utf-8", "surrogateescape") if proc.returncode == 0 else None


def record_key(commit: str, prefix: str) -> str:
    """The action-cache key of the record of commit for the workspace at prefix (its directory in the repo)."""
    return xxhash.xxh3_128_hexdigest(f"{FORMAT}\0{commit}\0{prefix}".encode())


def where_in_git(root) -> tuple[str, str] | None:
    """(HEAD's commit, the workspace's directory in the repo, '' at the top), or None outside a git work tree."""
    out = _git(root, "rev-parse", "HEAD", "--show-prefix")
    if out is None:
        return None
    lines = out.splitlines()
    if not lines:
        return None
    return lines[0].strip(), (lines[1].strip().rstrip("/") if len(lines) > 1 else "")


def committed(root) -> set[str] | None:
    """The workspace-relative paths HEAD holds under the workspace (None when git cannot say)."""
    out = _git(root, "ls-tree", "-r", "-z", "--name-only", "HEAD")
    return None if out is None else set(filter(None, out.split("\0")))


def commit_files(root) -> list[str]:
    """The files and directories whose stat signatures change when HEAD moves (a commit, a checkout, a reset).

    The no-op certificate watches them in a git work tree, so that the first build after a commit takes the full
    path and records that commit."""
    out = _git(root, "rev-parse", "--absolute-git-dir", "--git-common-dir", "--symbolic-full-name", "HEAD")
    lines = out.splitlines() if out is not None else []
    if len(lines) < 2:
        return []
    git_dir = lines[0].strip()
    common = os.path.join(str(root), lines[1].strip()) if not os.path.isabs(lines[1].strip()) else lines[1].strip()
    paths = [os.path.join(git_dir, "HEAD"), os.path.join(common, "packed-refs")]
    ref = lines[2].strip() if len(lines) > 2 else ""
    if ref.startswith("refs/"):
        paths += [os.path.join(common, ref), os.path.dirname(os.path.join(common, ref))]
    return [os.path.normpath(p) for p in paths if os.path.exists(p)]


def _hashed_sources(root: str, hasher, sources: set) -> set[str]:
    """The workspace-relative files this build hashed that lie in (or are) one of sources: the rebuilder already
    walked every directory source, so nothing is walked again here."""
    prefix = root.rstrip(os.sep) + os.sep
    found = set()
    for full in list(hasher.seen):
        if not full.startswith(prefix):
            continue
        rel = full[len(prefix):].replace(os.sep, "/")
        part = rel
        while part and part not in sources:
            part = part.rpartition("/")[0]
        if part:
            found.add(rel)
    return found


def _clean(root) -> bool:
    """True when no file git tracks under the workspace differs from HEAD (the build is one of HEAD)."""
    out = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return out is not None and not out.strip()


def record(ws, graph, finished, store, hasher, pinned=lambda path: False, of_head: bool = True) -> bool:
    """Add this build to HEAD's record: the sources outside git of the targets that built fine (their bytes stored),
    and, for a build of HEAD as committed (clean tree, of_head: no --param), the keys of its results. True when
    the workspace is a git work tree (the record then is HEAD's to keep up to date).

    Never fails a build: a file that cannot be stored is left out of the record (`--at` will then say it is missing).
    """
    place = where_in_git(ws.root)
    if place is None:
        return False
    in_git = committed(ws.root)
    if in_git is None:
        return False
    commit, prefix = place
    root = str(ws.root)
    ok = [r for r in finished.results if r.ok and r.label in graph.inputs]
    sources = {s for r in ok for s in graph.inputs[r.label].sources}
    wanted = sorted(f for f in _hashed_sources(root, hasher, sources) if f not in in_git and not pinned(f))
    keys = {r.key for r in ok if r.key} if of_head and ok and _clean(ws.root) else set()
    key = record_key(commit, prefix)
    old = _own(store.local.get_action(key))
    entries, results = dict(old.get("outputs", {})), set(recorded_results(old))
    changed = not keys <= results
    for path in wanted:
        try:
            digest = hasher.file(os.path.join(root, path))
            if entries.get(path, {}).get("digest") == digest.digest and store.local.has_blob(digest.digest):
                continue
            store.local.put_file(os.path.join(root, path), digest.digest)
        except (OSError, EnvironmentProblem):
            continue  # changed or vanished meanwhile: not recorded
        entries[path] = {"digest": digest.digest, "size": digest.size, "exec": digest.executable}
        changed = True
    if changed:
        manifest = {"key": key, "kind": KIND, "format": FORMAT, "exit_code": 0, "outputs": entries,
                    "results": sorted(results | keys),
                    "provenance": {"git_commit": commit, "workspace": prefix, "started": time.time()}}
        store.local.put_action(key, manifest)  # names only blobs the local cache holds
        if getattr(store, "publish", None) is not None and store.upload:
            _share(store, key, manifest)
    return True


def _own(manifest) -> dict:
    """manifest if it is a commit record, else {} (a result under a colliding key is never read as one)."""
    return manifest if manifest is not None and manifest.get("kind") == KIND else {}


def _share(store, key: str, manifest: dict) -> None:
    """Upload the record merged with the remote's (other machines' builds of the same commit): it replaces it."""
    theirs = _own(store.remote_action(key))
    merged = dict(manifest, outputs={**theirs.get("outputs", {}), **manifest["outputs"]},
                  results=sorted(set(recorded_results(theirs)) | set(manifest["results"])))
    store.publish(key, merged)


def recorded_results(manifest: dict) -> list[str]:
    """The result keys a record lists (read from a cache: anything but a well-formed key is dropped)."""
    found = manifest.get("results")
    return [k for k in found if is_digest(k)] if isinstance(found, list) else []


class RecordedSources:
    """`--at REV`'s provider of deps outside git: the record of a build of REV (see the module docstring)."""

    def __init__(self, root, store, commit: str, prefix: str):
        self.root, self.store, self.commit, self.prefix = str(root), store, commit, prefix
        self._manifest = None  # looked up on first use
        self.lost: dict[str, str] = {}  # path -> digest: recorded, but the bytes are in no cache

    def _entries(self) -> dict:
        if self._manifest is None:
            self._manifest = _own(self.store.get_action(record_key(self.commit, self.prefix)))
        return self._manifest.get("outputs", {})

    def provide(self, path: str) -> bool:
        """Place the recorded bytes of path (a file, or every recorded file under a directory); False if none."""
        entries = self._entries()
        names = [p for p in entries if p == path or p.startswith(path + "/")]
        if not names:
            return False
        for name in names:
            self._place(name, entries[name])
        return os.path.lexists(os.path.join(self.root, path))

    def _place(self, name: str, meta: dict) -> None:
        dest = os.path.join(self.root, name)
        if os.path.lexists(dest):
            return
        if relpath_problem(name) or symlinked_part(self.root, os.path.dirname(name)):
            raise Untrusted(f"the source record of {self.commit[:10]} names {name!r}, which is not a plain path in "
                            f"the workspace", hint="the entry was rejected; `buildml cache verify` lists such entries")
        digest = meta["digest"]
        try:
            if not self.store.local.has_blob(digest):
                fetch = getattr(self.store, "fetch_blobs", None)
                if fetch is not None:
                    fetch([digest])
            os.makedirs(os.path.dirname(dest) or self.root, exist_ok=True)
            self.store.local.fetch_to(digest, dest)
        except (BlobMissing, CacheCorruption):
            self.lost[name] = digest
            return
        os.chmod(dest, 0o755 if meta.get("exec") else 0o644)

    def missing(self, path: str):
        """(message, hint) when the record named path but its bytes are gone; else None."""
        lost = [p for p in self.lost if p == path or p.startswith(path + "/")]
        if not lost:
            return None
        return (f"a build of {self.commit[:10]} recorded {lost[0]!r} (digest {self.lost[lost[0]][:12]}), but its bytes "
                f"are in neither the local nor the remote cache",
                f"put the file back in the work tree and build that commit again, or pin it for good: "
                f"`dvc add {path}` and commit {path}.dvc, or make it an external data dep pinned by `buildml lock`")


class AtRevisionData:
    """The data a checkout of REV lacks: DVC pins at REV first, then the record of a build of REV."""

    defer = True  # analysis: a target whose dep nothing provides fails only when it is built

    def __init__(self, dvc, recorded: RecordedSources | None):
        self.dvc, self.recorded = dvc, recorded

    def check(self, path: str) -> None:
        self.dvc.check(path)

    def provide(self, path: str) -> bool:
        return self.dvc.provide(path) or (self.recorded is not None and self.recorded.provide(path))

    def missing(self, path: str):
        return (self.recorded.missing(path) if self.recorded is not None else None) or self.dvc.missing(path)


__all__ = ["AtRevisionData", "RecordedSources", "commit_files", "record", "recorded_results", "record_key", "where_in_git"]
