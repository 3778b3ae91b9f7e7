"""Hints for an action that failed because it reads more than it declares.

An action runs in a sandbox holding only what its target declares, so a script written for a tool that runs it
in the repository (DVC, a Makefile) fails there deep in user code. After a failure the end of its log is read
for the usual symptoms, each checked against the real workspace before a hint names it:

- a `KeyError: 'train'` (or OmegaConf's `Missing key train`) for a key the real params file has but the
  action's selected subset lacks: the sandbox copy holds only the selected keys;
- a `ModuleNotFoundError: No module named 'src.utils'` for a module file of the workspace that is not an input
  (or is one, but not on the module path of the command);
- the same error while the caller has a `PYTHONPATH` the action did not get (actions get a fixed environment);
- a `No such file or directory: 'x'` for a file of the workspace that is not an input.

Hints are plain lines; the runner shows them with the failure and appends them to the action's log.
"""

from __future__ import annotations

import os
import posixpath
import re

from buildml.errors import BuildmlError
from buildml.load.params import flat_keys, read_params_file

LOG_BYTES = 64 * 1024  # how much of the log's end is read
_KEY_ERROR = re.compile(r"""(?:KeyError|ConfigKeyError|InterpolationKeyError): ['"]?([^'"\s]+)['"]?|Missing key ([\w.-]+)""")
_NO_MODULE = re.compile(r"""ModuleNotFoundError: No module named ['"]([\w.]+)['"]""")
_NO_FILE = re.compile(r"""No such file or directory: ['"]([^'"\n]+)['"]""")


def read_log_end(path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - LOG_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def failure_hints(action, log_text: str, root, caller_env: dict) -> list[str]:
    """The hints for a failed action whose log ends with log_text (at most one per symptom and name)."""
    if root is None or not log_text:
        return []
    root = str(root)
    hints: list[str] = []
    for name in dict.fromkeys(m.group(1) or m.group(2) for m in _KEY_ERROR.finditer(log_text)):
        hints.extend(_params_hints(action, name, root))
    modules = list(dict.fromkeys(_imported_as(m.group(1), log_text) for m in _NO_MODULE.finditer(log_text)))
    for module in modules:
        found = _module_hints(action, module, root)
        hints.extend(found)
        hints.extend(_pythonpath_hints(action, module, caller_env, in_workspace=bool(found)))
    for name in dict.fromkeys(m.group(1) for m in _NO_FILE.finditer(log_text)):
        hints.extend(_file_hints(action, name, root))
    return list(dict.fromkeys(hints))


def _imported_as(module: str, log_text: str) -> str:
    """The longest dotted name starting with module that an import line of the traceback names: Python reports
    `No module named 'src'` for `from src.utils import f` when src is not found at all."""
    names = re.findall(rf"(?:from|import)\s+({re.escape(module)}(?:\.\w+)*)", log_text)
    return max(names, key=len, default=module)


def _params_hints(action, name: str, root: str) -> list[str]:
    """`name` is a key (or the last part of one) of a params file the action reads a subset of, but not selected."""
    spec = action.spec
    out = []
    for relpath, keys in spec.params:
        if relpath in action.inputs or not keys:  # the whole file is there
            continue
        full = os.path.join(root, relpath)
        try:
            data, _doc = read_params_file(full, relpath)
        except (BuildmlError, OSError):
            continue
        if not isinstance(data, dict):
            continue
        missing = [k for k in flat_keys(data) if (k == name or k.endswith("." + name))
                   and not any(k == s or k.startswith(s + ".") for s in keys)]
        if not missing:
            continue
        missing.sort(key=lambda k: (k.count("."), k))
        key = missing[0]
        local = posixpath.relpath(relpath, spec.label.package or ".")
        entry = f"params: [{key}]" if local == "params.yaml" else f"params: [{{{local}: [{key}]}}]"
        out.append(f"{relpath} has {key!r}, but {spec.label} selects only {', '.join(keys)} of it, and the sandbox copy "
                   f"of {local} holds only the selected keys: add `{entry}`, or take the whole file with "
                   f"`params: [{{{local}: null}}]` (DVC's `- {local}:`)")
    return out


def _module_files(root: str, parts: list[str], bases) -> list[tuple[str, str]]:
    """(base, workspace path) of the module, package or namespace directory the dotted name is under each base."""
    found = []
    for base in bases:
        stem = "/".join(filter(None, [base, *parts]))
        for candidate in (stem + ".py", stem + "/__init__.py", stem):
            full = os.path.join(root, candidate)
            if not _inside(root, full):
                continue
            if os.path.isfile(full) or (candidate == stem and os.path.isdir(full) and _has_python(full)):
                found.append((base, candidate))
                break
    return found


def _inside(root: str, full: str) -> bool:
    """full (a path a log named) is in the workspace with no symlink on the way: never looked at through a link."""
    real_root = os.path.realpath(root)
    return os.path.realpath(full) == os.path.join(real_root, os.path.relpath(full, root)) and not os.path.islink(full)


def _has_python(directory: str) -> bool:
    try:
        return any(n.endswith(".py") for n in os.listdir(directory))
    except OSError:
        return False


def _module_hints(action, module: str, root: str) -> list[str]:
    spec = action.spec
    bases = list(dict.fromkeys([spec.workdir if spec.workdir != "." else "", ""]))
    files = _module_files(root, module.split("."), bases)
    if not files:
        return []
    base, path = files[0]
    declared = path in action.inputs or any(p.startswith(path + "/") for p in action.inputs)
    if not declared:
        local = posixpath.relpath(path, spec.label.package or ".")
        return [f"module {module!r} is {path} in the workspace, but it is not a dep of {spec.label} (the sandbox "
                f"holds only declared inputs): add {local} to deps, or set `python_deps: auto` on the target (or in "
                f"buildml.yaml) to add the workspace modules its scripts import"]
    where = posixpath.relpath(base or ".", spec.workdir or ".")
    return [f"module {module!r} ({path}) is in the sandbox, but not on the module path of the command (a script run "
            f"as `python dir/script.py` sees only its own directory): run it with `python -m`, or set "
            f"`env: {{PYTHONPATH: {where}}}` on {spec.label}"]


def _pythonpath_hints(action, module: str, caller_env: dict, in_workspace: bool) -> list[str]:
    """The caller has a PYTHONPATH the action ran without, and it holds the module (or the workspace does not)."""
    caller = caller_env.get("PYTHONPATH", "")
    given = dict(action.spec.env).get("PYTHONPATH")
    if not caller or given == caller:
        return []
    holding = [d for d in caller.split(os.pathsep) if d and _module_files(d, module.split("."), [""])]
    if not holding and in_workspace:
        return []  # the workspace has it: the hint above says what to declare
    found = f" (where {module!r} is: {holding[0]})" if holding else ""
    return [f"your environment has PYTHONPATH={caller}{found}, but actions do not inherit the caller's environment: "
            f"set it on the target with `env: {{PYTHONPATH: ...}}` (keyed; a path relative to the package directory "
            f"works in the sandbox), declare the modules as deps, or install them into the Python environment"]


def _file_hints(action, name: str, root: str) -> list[str]:
    spec = action.spec
    for base in dict.fromkeys([spec.workdir, ""]):
        rel = posixpath.normpath(posixpath.join(base, name)) if not os.path.isabs(name) else None
        if rel is None or rel.startswith("..") or rel in action.inputs or rel in spec.outs:
            continue
        full = os.path.join(root, rel)
        if _inside(root, full) and os.path.isfile(full):
            local = posixpath.relpath(rel, spec.label.package or ".")
            return [f"{rel} exists in the workspace but is not a dep of {spec.label} (the sandbox holds only declared "
                    f"inputs): add {local} to deps (or to params, if it is a params file)"]
    return []
