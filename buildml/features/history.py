"""Past revisions: materialize a git commit's tree outside the work tree and open a Session on it.

`--at REV` checks REV out with `git worktree add --detach` into `$TMPDIR/buildml-at-<sha>-<uid>/`
(so that commit's BUILD files, params, code and buildml.lock are what gets built, and the
manifests record REV as the git commit), builds with the same stores as the current
workspace, and puts outputs under `buildml-out/@<short-sha>/` of the user's work tree (or
`--out DIR`). The checkout's `.buildml/` is a link to `.buildml/at/<sha>/` of the user's
workspace, so what was built at REV is remembered between runs (status, explain, no-op builds).
The checkout is removed afterwards, on success, failure, Ctrl-C and SIGTERM (the CLI turns
SIGTERM into KeyboardInterrupt, which runs the `finally` below); a run killed with SIGKILL
leaves it behind, and the next run of that commit removes it first.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from buildml.errors import EnvironmentProblem, UserError
from buildml.store.local import remove_tree
from buildml.load.workspace import DVC_DIR, OUT_DIR, ROOT_FILE, STATE_DIR, default_cache_dir, find_root, read_settings

TMP_PREFIX = "buildml-at-"


@dataclass(frozen=True)
class Revision:
    """A resolved revision: what the user typed, the full and short sha, and the repo it lives in."""

    text: str
    sha: str
    short: str
    toplevel: Path  # the user's work tree (git top level)
    prefix: str  # the current directory relative to the top level ('' at the top)


def _git(cwd, *args) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise EnvironmentProblem("git is not installed", hint="install git to use --at") from None


def resolve(rev: str, cwd: Path | str = ".") -> Revision:
    """Resolve rev (sha, tag, branch, HEAD~3) in the git repo around cwd; clear errors otherwise."""
    cwd = Path(cwd).resolve()
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UserError(f"--at {rev}: {cwd} is not inside a git repository",
                        hint="--at builds a past commit, so the workspace must be a git work tree")
    toplevel = Path(top.stdout.strip()).resolve()
    sha = _git(cwd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if sha.returncode != 0 or not sha.stdout.strip():
        raise UserError(f"unknown revision {rev!r}", hint="give a commit sha, tag, branch or an expression like HEAD~3 "
                        "(see `git log --oneline`)")
    full = sha.stdout.strip()
    short = _git(cwd, "rev-parse", "--short", full).stdout.strip() or full[:10]
    prefix = os.path.relpath(cwd, toplevel).replace(os.sep, "/")
    return Revision(rev, full, short, toplevel, "" if prefix == "." else prefix)


@contextlib.contextmanager
def checkout(revision: Revision):
    """A detached worktree of revision in a temporary directory, removed on exit however it ends.

    Builds of one commit are serialized by a lock and use the same path, so the checkout's
    workspace state (kept outside it, see keep_state) stays valid from one run to the next.
    """
    from filelock import FileLock

    state = state_dir(revision)
    with FileLock(str(state) + ".lock"):
        parent = Path(tempfile.gettempdir()) / f"{TMP_PREFIX}{revision.sha}-{os.getuid()}"
        tree = parent / "tree"
        try:
            _remove(revision.toplevel, tree, parent)  # a leftover of a killed run
            parent.mkdir(parents=True)
            add = _git(revision.toplevel, "worktree", "add", "--detach", "--quiet", str(tree), revision.sha)
            if add.returncode != 0:
                raise EnvironmentProblem(f"cannot check out {revision.text} ({revision.short}): {add.stderr.strip()}")
            yield tree
        finally:
            _remove(revision.toplevel, tree, parent)


def state_dir(revision: Revision) -> Path:
    """Where the workspace state of builds of revision lives: .buildml/at/<sha> of the user's workspace."""
    path = user_root(revision) / STATE_DIR / "at" / revision.sha
    path.mkdir(parents=True, exist_ok=True)
    return path


def keep_state(tree_root: Path, revision: Revision) -> None:
    """Point the checkout's .buildml at the persistent per-commit state (last builds, outputs written)."""
    link = tree_root / STATE_DIR
    if not os.path.lexists(link):
        link.symlink_to(state_dir(revision), target_is_directory=True)


def _remove(toplevel: Path, tree: Path, parent: Path) -> None:
    """Unregister the worktree and delete its files; never raises (it runs while unwinding)."""
    try:
        _git(toplevel, "worktree", "remove", "--force", "--force", str(tree))
    except Exception:  # noqa: BLE001 - cleanup must go on
        pass
    if parent.exists():
        remove_tree(parent)
    try:
        _git(toplevel, "worktree", "prune")
    except Exception:  # noqa: BLE001
        pass


def workspace_start(tree: Path, revision: Revision) -> Path:
    """Where in the checkout to look for buildml.yaml: the current directory's counterpart, upwards."""
    start = tree / revision.prefix if revision.prefix else tree
    while not start.is_dir() and start != tree:
        start = start.parent
    for candidate in (start, *start.parents):
        if (candidate / ROOT_FILE).is_file() or (candidate / DVC_DIR).is_dir():
            return start
        if candidate == tree:
            break
    raise UserError(f"revision {revision.text} ({revision.short}) has no {ROOT_FILE}",
                    hint=f"that commit predates the buildml workspace; pick a later one (`git log -- {ROOT_FILE}`)")


def user_root(revision: Revision) -> Path:
    """The user's workspace root now (where buildml-out/ goes), or the current directory's git counterpart."""
    here = revision.toplevel / revision.prefix if revision.prefix else revision.toplevel
    try:
        return find_root(here)
    except UserError:
        return here


def at_options(options, revision: Revision, out: str | None):
    """Options for building revision: the current workspace's stores, outputs under buildml-out/@short."""
    root = user_root(revision)
    changes = {"at_revision": revision.sha, "data_repo": str(root),  # DVC-tracked data: the real repo's cache
               "out_root": str(Path(out).resolve()) if out else str(root / OUT_DIR / f"@{revision.short}")}
    if (root / ROOT_FILE).is_file():  # the stores configured now, not those of the old commit
        settings = read_settings(root / ROOT_FILE)
        if options.cache_dir is None:
            changes["cache_dir"] = str(default_cache_dir(settings, root))
        if getattr(options, "remote_cache", "") is None and settings.remote_cache:
            changes["remote_cache"] = settings.remote_cache
    return replace(options, **changes)


@contextlib.contextmanager
def session_at(rev: str, options, emit=lambda e: None, cwd: Path | str = "."):
    """A Session on revision rev's tree, with the current workspace's stores; the tree is removed afterwards."""
    from buildml.api import Session

    revision = resolve(rev, cwd)
    with checkout(revision) as tree:
        start = workspace_start(tree, revision)
        keep_state(find_root(start), revision)
        yield Session(start, at_options(options, revision, options.out_root), emit)

