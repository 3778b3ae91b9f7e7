"""`python_deps: auto`: the workspace modules a target's declared Python files import, found by a static scan.

Each declared `.py` dep (a file, or the `.py` files of a declared directory) is parsed with `ast`, never run; every
`import a.b` / `from a.b import c` / `from . import c` that names a module file of the workspace (`a/b.py`, or a
package `a/b/__init__.py`, with the `__init__.py` of each package above it) adds that file, and its own imports are
scanned in turn. Modules are looked for where the command's Python would: beside the importing script, in the
directory the command runs in, and at the workspace root. Only regular files inside the workspace count: never a
path through a symlink that leaves it, nothing under buildml's or VCS directories, nothing another target writes.
The files found become inputs like declared deps, so they are keyed and a change to one re-runs the target.
"""

from __future__ import annotations

import ast
import os

from buildml.load.workspace import SKIP_DIRS, inside

MODES = ("declared", "auto")
MAX_FILE_BYTES = 4 * 2**20  # a larger .py file is not a module anyone imports; skip it rather than parse it


def scan(root: str, sources, workdir: str, is_out) -> list[tuple[str, str]]:
    """[(module file, the file that imports it), ...] for the declared .py files among sources (workspace-relative),
    transitively, in the order found; files already declared are not listed. is_out(path) says whether another
    target writes path (not a source, so never added)."""
    root = str(root)
    declared = _declared_py(root, sources)
    covered = set(sources)
    # where the command's Python looks: beside each declared script, where it runs, the workspace root ("")
    roots = list(dict.fromkeys([*(os.path.dirname(p) for p in declared), workdir if workdir != "." else "", ""]))
    queue = list(declared)
    seen = set(declared)
    found: list[tuple[str, str]] = []
    while queue:
        current = queue.pop(0)
        for module in _imports(root, current, roots, is_out):
            if module in seen:
                continue
            seen.add(module)
            queue.append(module)
            if not _covered(module, covered):
                found.append((module, current))
    return found


def _covered(path: str, sources) -> bool:
    """True when path is a declared source or lies in a declared directory."""
    parent = path
    while parent:
        if parent in sources:
            return True
        parent = os.path.dirname(parent)
    return False


def _declared_py(root: str, sources) -> list[str]:
    out = []
    for rel in sources:
        full = os.path.join(root, rel)
        if rel.endswith(".py") and os.path.isfile(full):
            out.append(rel)
        elif os.path.isdir(full) and not os.path.islink(full):
            for dirpath, dirnames, filenames in os.walk(full, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
                drel = os.path.relpath(dirpath, root).replace(os.sep, "/")
                out.extend(f"{drel}/{n}" for n in sorted(filenames) if n.endswith(".py"))
    return out


def _imports(root: str, rel: str, roots, is_out) -> list[str]:
    """The workspace module files one Python file imports (absolute imports against roots, relative ones
    against the file's own package)."""
    full = os.path.join(root, rel)
    try:
        if os.path.getsize(full) > MAX_FILE_BYTES:
            return []
        with open(full, "rb") as f:
            tree = ast.parse(f.read(), rel)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # unreadable or not Python: running it will say so
    here = os.path.dirname(rel)
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.extend(_resolve(root, alias.name.split("."), roots, is_out))
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names if a.name != "*"]
            module = node.module.split(".") if node.module else []
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = os.path.dirname(base)
                bases = [base]
            else:
                bases = roots
            if module:
                out.extend(_resolve(root, module, bases, is_out))
            for name in names:  # `from pkg import sub`: sub may be a module of pkg
                out.extend(_resolve(root, module + [name], bases, is_out, quiet=True))
    return list(dict.fromkeys(out))


def _resolve(root: str, parts, bases, is_out, quiet: bool = False) -> list[str]:
    """The files importing the dotted module `parts` runs, under the first base that has it."""
    if not parts or not all(p.isidentifier() for p in parts):
        return []
    for base in bases:
        stem = "/".join(filter(None, [base, *parts]))
        for candidate in (stem + ".py", stem + "/__init__.py"):
            if _usable(root, candidate, is_out):
                inits = []
                for i in range(1, len(parts)):  # each package above the module runs its __init__.py
                    init = "/".join(filter(None, [base, *parts[:i], "__init__.py"]))
                    if _usable(root, init, is_out):
                        inits.append(init)
                return inits + [candidate]
    return []


def _usable(root: str, rel: str, is_out) -> bool:
    if any(part in SKIP_DIRS for part in rel.split("/")) or is_out(rel):
        return False
    full = os.path.join(root, rel)
    return os.path.isfile(full) and inside(root, full)
