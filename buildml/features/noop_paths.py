"""What a build read, as paths to stat: the ground the no-op certificate (buildml/noop.py) stands on.

Everything here errs on the side of more paths: an extra path can only make the certificate
fail more often (the build then takes the normal path), a missing one could make it lie.
"""

from __future__ import annotations

import os
import sys

from buildml.load.dvc import DVC_FILE
from buildml.load.workspace import BUILD_FILE, DVC_DIR, ROOT_FILE, SKIP_DIRS

GLOB_CHARS = frozenset("*?[")
STATE_FILES = ("state.db", "state.db-wal")  # the last builds and the stat cache; no WAL file when no one has it open
CERTIFIABLE_KINDS = frozenset({"command", "dataset", "model"})  # built-in kinds run by the local executor
LOCAL_ENDPOINT = "endpoint"  # on a local executor an endpoint only writes its descriptor file (no serving image)


def uncertifiable(graph, labels, local_executors=("local",)) -> str | None:
    """Why a build of labels cannot be vouched for by stats alone, or None when it can. local_executors: the
    executor names of type local (buildml.yaml may name more, e.g. `trainer: {type: local}`): the same local
    executor runs them, a process here whose result is only files."""
    for label in labels:
        spec, target = graph.specs[label], graph.targets[label]
        kinds = CERTIFIABLE_KINDS | {LOCAL_ENDPOINT} if spec.image is None else CERTIFIABLE_KINDS
        if target.kind not in kinds or spec.kind not in kinds:
            return f"{label} is a {target.kind} target"
        if spec.is_test:
            return f"{label} is a test"
        if spec.image is not None or spec.context_filter is not None:
            return f"{label} uses an image (the engine's images can vanish)"
        if spec.executor not in (None, *local_executors):
            return f"{label} runs on executor {spec.executor}, which is not of type local"
        if getattr(graph.inputs[label], "external", ()):
            return f"{label} reads external data"
    return None


def build_paths(ws, graph, labels, results, out_root: str) -> set[str]:
    """Absolute paths whose stat signatures decide whether building labels again would do anything."""
    by_label = {r.label: r for r in results}
    paths = global_paths(ws)
    for label in labels:
        paths |= target_paths(ws, graph, label, by_label.get(label), out_root)
    for result in results:
        if result.label not in labels:
            paths |= output_paths(result, out_root)
    return paths


def global_paths(ws) -> set[str]:
    """The paths every target's result depends on: buildml.yaml, the loader's walk and its BUILD files, buildml's
    modules and the workspace's rule modules."""
    root = str(ws.root)
    files = {os.path.join(root, ROOT_FILE)} if os.path.isfile(os.path.join(root, ROOT_FILE)) else set()
    dirs: set[str] = {root}  # a buildml.yaml made in a DVC repo changes its entries
    walk_packages(root, dirs, files)
    files.update(module_files(root))
    return files | dirs


def target_paths(ws, graph, label, result, out_root: str) -> set[str]:
    """The paths only label's result depends on (beyond those of the targets it depends on): its sources, the
    directories its globs and path deps list, its params files, its outputs, and the directory of each."""
    root = str(ws.root)
    files: set[str] = set()
    dirs: set[str] = set()
    spec = graph.specs[label]
    for rel in graph.inputs[label].sources:
        full = os.path.join(root, rel)
        if os.path.isdir(full):
            walk_tree(full, dirs, files)
        else:
            files.add(full)
    for dep in spec.deps:
        if dep.startswith(("!", "//", ":")) or "://" in dep:
            continue
        if GLOB_CHARS & set(dep):
            glob_dirs(root, spec.label.package, dep, dirs)
        else:  # a path: its directory's entries decide whether it exists
            dirs.add(os.path.dirname(os.path.normpath(os.path.join(root, spec.label.package, dep))))
    files.update(os.path.join(root, f) for f, _keys in spec.params)
    if result is not None:
        files.update(os.path.join(out_root, p) for p in result.outputs)
    dirs.update(os.path.dirname(f) for f in files)  # entries renamed over a file change its directory
    return files | dirs


def output_paths(result, out_root: str) -> set[str]:
    """A result's materialized outputs and their directories."""
    files = {os.path.join(out_root, p) for p in result.outputs}
    return files | {os.path.dirname(f) for f in files}


def walk_packages(root: str, dirs: set, files: set) -> None:
    """Every directory the loader visits and every BUILD.yaml or dvc.yaml it reads (mirrors loader.find_packages)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirs.add(dirpath)
        if dirpath != root and (ROOT_FILE in filenames or DVC_DIR in dirnames):  # nested: visited, not entered
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        for name in (BUILD_FILE, DVC_FILE):
            if name in filenames:
                files.add(os.path.join(dirpath, name))


def walk_tree(top: str, dirs: set, files: set | None) -> None:
    """Every directory under top (hidden ones too, unlike the loader), and its files when files is given."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirs.add(dirpath)
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        if files is not None:
            files.update(os.path.join(dirpath, n) for n in filenames if os.path.isfile(os.path.join(dirpath, n)))


def glob_dirs(root: str, package: str, pattern: str, dirs: set) -> None:
    """The directories a glob lists: its literal prefix, and everything under it when a directory part is a wildcard."""
    parts = pattern.split("/")[:-1]
    literal = []
    for part in parts:
        if GLOB_CHARS & set(part):
            break
        literal.append(part)
    base = os.path.normpath(os.path.join(root, package, *literal))
    while not os.path.isdir(base) and len(base) > len(root):  # created later: its parent's entries change
        base = os.path.dirname(base)
    if not (base == root or base.startswith(root + os.sep)):
        base = root
    if len(literal) < len(parts) or "**" in pattern:
        walk_tree(base, dirs, None)
    else:
        dirs.add(base)


def module_files(root: str) -> list[str]:
    """buildml's own loaded modules and any module imported from the workspace (its rule files)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        if name == "buildml" or name.startswith("buildml.") or path.startswith(here) or path.startswith(root + os.sep):
            out.append(os.path.abspath(path))
    return out
