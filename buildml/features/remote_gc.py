"""`buildml cache gc --remote`: delete what no kept commit, recent build or pinned target needs from the remote cache.

What is kept (the mark):
- the commit records (engine/commit_record.py) of the heads of the given git refs (default: every branch and tag),
  with the results they list and the source files they hold: everything `--at` of those commits needs;
- the records of commits this repository does not have (another repository or clone sharing the remote: buildml
  cannot judge them, so it keeps them and what they list);
- every entry written within the retention window (`--keep-days`, the builds of recent CI runs);
- every result of a pinned target (`--keep LABEL`);
- and every object written after the GC started (by the backend's own clock), so a concurrent build is safe.
Then (the sweep) entries that are not kept are deleted first, run records of remote executors with them, and blobs
last: a blob goes only when no kept entry, and no entry written since the start, names it. Killed at any point, the
remote stays consistent: every entry left still has its blobs. A build that was reading an entry the GC deleted
finds its blobs gone and runs the action instead (reads verify; a missing blob is a miss, never a wrong result).
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from buildml.engine.commit_record import KIND, recorded_results
from buildml.errors import UserError

DAY_S = 86400
TICK_S = 2  # objects modified this close to the start (or later) are never deleted (timestamps have 1 s steps)
BATCH = 200  # objects per delete request
READERS = 16


@dataclass
class RemoteGcReport:
    """What `cache gc --remote` kept and deleted (or, with dry_run, would delete)."""

    entries: int = 0
    blobs: int = 0
    kept_commits: list = field(default_factory=list)
    entries_deleted: int = 0
    blobs_deleted: int = 0
    runs_deleted: int = 0
    bytes_deleted: int = 0
    dry_run: bool = False


def _git(root, *args, stdin: str | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, input=stdin, timeout=120)
    if proc.returncode != 0:
        raise UserError(f"git {' '.join(args[:2])} failed: {proc.stderr.strip()}",
                        hint="`cache gc --remote` keeps what the repository's refs need: run it inside the git repo")
    return proc.stdout


def ref_heads(root, refs: tuple[str, ...]) -> set[str]:
    """The commits the refs point at (default: every branch and tag, and HEAD); an unknown ref is an error."""
    if not refs:
        out = _git(root, "for-each-ref", "--format=%(objectname) %(*objectname)", "refs/heads", "refs/tags")
        heads = {line.split()[-1] for line in out.splitlines() if line.strip()}
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, capture_output=True, text=True)
        return heads | ({head.stdout.strip()} if head.returncode == 0 and head.stdout.strip() else set())
    heads = set()
    for ref in refs:
        proc = subprocess.run(["git", "rev-parse", "--verify", "-q", "--end-of-options", f"{ref}^{{commit}}"], cwd=root,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"--ref {ref}: no such git ref", hint="name a branch, tag or commit (`git branch -a`)")
        heads.add(proc.stdout.strip())
    return heads


def known_commits(root, commits) -> set[str]:
    """Those of commits that this repository has."""
    commits = sorted(commits)
    if not commits:
        return set()
    out = _git(root, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="".join(c + "\n" for c in commits))
    return {line.split()[0] for line in out.splitlines() if line.endswith(" commit")}


def _blobs(manifest: dict) -> set[str]:
    digests = {m["digest"] for m in manifest.get("outputs", {}).values()}
    return digests | ({manifest["log"]} if manifest.get("log") else set())


def gc_remote(root, remote, refs=(), keep_days: float = 7.0, keep_labels=(), dry_run: bool = False,
              say=lambda line: None) -> RemoteGcReport:
    """Mark what the refs, the window and the pins keep; sweep the rest, entries first, blobs last."""
    started = remote.server_time()  # the backend's clock, which stamps what builds write: no skew
    protect = started - TICK_S
    window = started - keep_days * DAY_S
    report = RemoteGcReport(dry_run=dry_run)
    heads = ref_heads(root, tuple(refs))
    entries, blobs, runs = remote.listing("ac"), remote.listing("cas"), remote.listing("runs")
    report.entries, report.blobs = len(entries), len(blobs)
    manifests = _read(remote, entries)

    records = {k: m for k, m in manifests.items() if m is not None and m.get("kind") == KIND}
    commits = {k: (m.get("provenance") or {}).get("git_commit") for k, m in records.items()}
    ours = known_commits(root, {c for c in commits.values() if isinstance(c, str) and len(c) == 40})
    keep = set()
    for key, manifest in records.items():
        commit = commits[key]
        if commit in heads or commit not in ours:
            keep.add(key)
            keep.update(k for k in recorded_results(manifest) if k in entries)
            if commit in heads:
                report.kept_commits.append(commit)
    for key, (modified, _) in entries.items():
        if modified is None or modified >= min(window, protect):
            keep.add(key)
    pinned = set(keep_labels)
    keep.update(k for k, m in manifests.items() if m is not None and m.get("label") in pinned)
    kept_blobs = set().union(*(_blobs(manifests[k]) for k in keep if manifests.get(k) is not None))

    doomed = sorted(k for k in entries if k not in keep)
    doomed_runs = sorted(k for k, (modified, _) in runs.items()
                         if k not in keep and modified is not None and modified < min(window, protect))
    say(f"keeping {len(keep)} of {len(entries)} entries ({len(report.kept_commits)} commits of {len(heads)} ref heads "
        f"recorded); deleting {len(doomed)} entries and {len(doomed_runs)} run records")
    if not dry_run:
        _delete(remote, "ac", doomed)
        _delete(remote, "runs", doomed_runs)
        fresh = {k: v for k, v in remote.listing("ac").items() if k not in manifests}  # written meanwhile
        kept_blobs.update(*(_blobs(m) for m in _read(remote, fresh).values() if m is not None))
    gone = sorted(d for d, (modified, _) in blobs.items()
                  if d not in kept_blobs and modified is not None and modified < protect)
    report.entries_deleted, report.runs_deleted, report.blobs_deleted = len(doomed), len(doomed_runs), len(gone)
    report.bytes_deleted = sum(blobs[d][1] for d in gone)
    say(f"deleting {len(gone)} of {len(blobs)} blobs ({report.bytes_deleted / 1e6:.1f} MB)")
    if not dry_run:
        _delete(remote, "cas", gone)
    return report


def _read(remote, entries) -> dict:
    """{key: the validated manifest, or None when unreadable or corrupt} (read concurrently)."""
    def one(key):
        try:
            return key, remote.get_action(key)
        except Exception:  # noqa: BLE001 - an unreadable entry is not kept; the listing said it is there
            return key, None
    with ThreadPoolExecutor(READERS) as pool:
        return dict(pool.map(one, sorted(entries)))


def _delete(remote, sub: str, names: list[str]) -> None:
    for i in range(0, len(names), BATCH):
        remote.delete([remote.object_path(sub, n) for n in names[i:i + BATCH]])


def render(report: RemoteGcReport) -> list[str]:
    """The report as lines of text."""
    verb = "would delete" if report.dry_run else "deleted"
    return [f"{verb} {report.entries_deleted} of {report.entries} entries, {report.runs_deleted} run records and "
            f"{report.blobs_deleted} of {report.blobs} blobs ({report.bytes_deleted / 1e6:.1f} MB); kept the records "
            f"of {len(report.kept_commits)} ref heads"]


__all__ = ["RemoteGcReport", "gc_remote", "render"]
