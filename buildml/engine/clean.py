"""`buildml clean`: remove what buildml wrote into the workspace, and nothing a user made.

An output is removed only when its current digest is the one buildml recorded writing (the state db);
one edited since, or replaced by something else, is left in place and listed. Nothing is removed
through a symlink, so nothing outside the workspace. `.buildml/displaced/` (files builds moved aside)
is kept, even by `--all`, unless `--displaced` is given; what it holds is reported. The output trees of
`--at` builds (`buildml-out/@<short-sha>/`) are cleaned the same way, by the state of that commit's builds
(`.buildml/at/<sha>/`): only the files buildml wrote go.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from buildml.store.local import remove_tree
from buildml.trust import relpath_problem, symlinked_part

DISPLACED = "displaced"  # .buildml/displaced/, Materializer's


@dataclass
class Cleaned:
    """What `buildml clean` did: removed paths, paths left (with why), and what displaced/ holds or held."""

    removed: list = field(default_factory=list)
    kept: list = field(default_factory=list)  # (path, why)
    displaced_files: int = 0
    displaced_bytes: int = 0
    displaced_removed: bool = False


def remove_outputs(root: Path, state, hasher, cleaned: Cleaned) -> None:
    """Remove every output the state records whose file is still exactly what buildml wrote; forget them all."""
    for path, digest in sorted(state.all_outputs().items()):
        state.record_output(path, None)
        why = _why_kept(root, path, digest, hasher)
        if why is None:
            cleaned.removed.append(path)
        elif why:
            cleaned.kept.append((path, why))


def _why_kept(root: Path, path: str, digest: str, hasher) -> str | None:
    """None when path was removed; '' when there was nothing to remove; else why it stays."""
    problem = relpath_problem(path)
    if problem:
        return f"the state records this path, which {problem}; not touched"
    link = symlinked_part(root, path)
    if link:
        return "is a symlink" if link == path else \
            f"is under the symlink {link}; nothing outside the workspace is removed"
    full = os.path.join(root, path)
    try:
        st = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):
        return ""
    if not stat.S_ISREG(st.st_mode):
        return "is not the file buildml wrote"
    if hasher.file(full, st).digest != digest:
        return "changed since buildml wrote it"
    try:
        os.unlink(full)
    except FileNotFoundError:
        return ""
    return None


def remove_variant_trees(root: Path, cleaned: Cleaned) -> None:
    """Sweep variants' outputs (buildml-out/sweep/) and state (.buildml/sweep/): buildml's own trees, removed
    whole unless reached through a symlink (their results stay in the cache)."""
    from buildml.load.workspace import OUT_DIR, STATE_DIR, SWEEP_DIR

    for rel, listed in ((f"{OUT_DIR}/{SWEEP_DIR}", True), (f"{STATE_DIR}/{SWEEP_DIR}", False)):
        if symlinked_part(root, rel):
            continue
        top = root / rel
        if listed:
            cleaned.removed.extend(sorted(os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
                                          for d, _, files in os.walk(top) for f in files))
        remove_tree(top)


AT_STATE = "at"  # .buildml/at/<sha>/: the state of --at builds (features/history.py)


def remove_at_trees(root: Path, cleaned: Cleaned) -> None:
    """Clean each `buildml-out/@<short-sha>/` by its commit's state: remove the outputs buildml wrote (as
    remove_outputs), forget those builds, drop the directories left empty; list files it cannot vouch for."""
    from buildml.engine.hasher import Hasher
    from buildml.engine.state import State
    from buildml.load.workspace import OUT_DIR, STATE_DIR

    out, states = root / OUT_DIR, root / STATE_DIR / AT_STATE
    if symlinked_part(root, OUT_DIR) or not out.is_dir():
        return
    shas = [] if symlinked_part(root, f"{STATE_DIR}/{AT_STATE}") or not states.is_dir() else \
        [e.name for e in os.scandir(states) if e.is_dir(follow_symlinks=False)]
    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        if not entry.name.startswith("@") or not entry.is_dir(follow_symlinks=False) or len(entry.name) < 2:
            continue
        rel = f"{OUT_DIR}/{entry.name}"
        owners = [sha for sha in shas if sha.startswith(entry.name[1:])]
        if len(owners) == 1:
            state = State(states / owners[0])
            tree = Cleaned()
            remove_outputs(Path(entry.path), state, Hasher(state), tree)
            for label in state.built_labels():
                state.forget_build(label)
            state.flush()
            state.close()
            cleaned.removed.extend(f"{rel}/{p}" for p in tree.removed)
            cleaned.kept.extend((f"{rel}/{p}", why) for p, why in tree.kept)
            why = "not written by buildml's builds of that commit"
        else:
            why = "no record of the --at build that wrote it (its state under .buildml/at/ is gone); not touched"
        kept = {p for p, _ in cleaned.kept}
        for dirpath, dirnames, filenames in os.walk(entry.path, topdown=False):
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                path = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                if path not in kept:
                    cleaned.kept.append((path, why))
            try:
                os.rmdir(dirpath)  # only once empty: nothing but buildml's outputs was there
            except OSError:
                pass


def clean_state_dir(state_dir: Path, everything: bool, displaced: bool, cleaned: Cleaned) -> None:
    """With everything, remove the workspace state but displaced/ (unless displaced); count displaced/."""
    if os.path.islink(state_dir) or not state_dir.is_dir():
        return
    keep = state_dir / DISPLACED
    cleaned.displaced_files, cleaned.displaced_bytes = _tally(keep)
    if displaced:
        remove_tree(keep)
        cleaned.displaced_removed = cleaned.displaced_files > 0
    if not everything:
        return
    _remove_but_displaced(state_dir, displaced)


def _remove_but_displaced(state_dir, displaced: bool) -> None:
    """Everything under state_dir but displaced/ (unless displaced), also in each --at commit's state."""
    for entry in os.scandir(state_dir):
        if entry.name == DISPLACED and not displaced:
            continue
        if entry.name == AT_STATE and entry.is_dir(follow_symlinks=False):
            for sha in os.scandir(entry.path):
                if sha.is_dir(follow_symlinks=False) and os.path.isdir(os.path.join(sha.path, DISPLACED)):
                    _remove_but_displaced(sha.path, displaced)  # files an --at build moved aside are the user's
                elif sha.is_dir(follow_symlinks=False):
                    remove_tree(sha.path)
                else:
                    os.unlink(sha.path)
            continue
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            os.unlink(entry.path)


def _tally(top: Path) -> tuple[int, int]:
    """(files, bytes) under top, links not followed."""
    files = size = 0
    if os.path.islink(top) or not top.is_dir():
        return 0, 0
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except OSError:
                pass
    return files, size
