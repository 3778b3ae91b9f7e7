"""The one gate for untrusted values: digests, keys and relative paths read from caches, lock files,
state, remote listings or an action's outputs are checked here before they become a path, a key or
an argument.

Rules (see tests/RELIABILITY.md, "Threat model"):
- a digest or action key is exactly 32 lowercase hex characters (xxh3-128);
- a relative path is a non-empty POSIX path, already normalized, not absolute, without `..`, `.`,
  empty or NUL parts, and never inside buildml's or git's own names (RESERVED);
- a path is resolved under its root without following any symlink (`resolve_under`, `open_under`).
"""

from __future__ import annotations

import os
import re
import stat

from buildml.errors import CacheCorruption

DIGEST_LEN = 32
_DIGEST = re.compile(r"[0-9a-f]{32}")
RESERVED = frozenset({".git", ".buildml", "buildml-out", "buildml.yaml"})  # first path parts nothing may write


class Untrusted(CacheCorruption):
    """A value read from a cache, lock file, state or an action fails validation; it is never acted on."""


def is_digest(value) -> bool:
    """True when value is a well-formed content digest or action key."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def check_digest(value, what: str = "digest") -> str:
    """The value if it is a well-formed digest; else Untrusted naming what it was."""
    if not is_digest(value):
        raise Untrusted(f"{what} {_show(value)} is not a digest (32 hex characters)",
                        hint="the entry was rejected as corrupt; `buildml cache verify` lists such entries")
    return value


def relpath_problem(value, reserved: bool = True) -> str:
    """Why value is not a safe workspace-relative path, or '' when it is."""
    if not isinstance(value, str) or not value:
        return "is not a non-empty string"
    if "\0" in value:
        return "contains a NUL byte"
    if value.startswith("/"):
        return "is absolute"
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "is not a normalized relative path (empty, '.' or '..' parts)"
    if reserved and parts[0] in RESERVED:
        return f"is inside {parts[0]}, which belongs to buildml or git"
    return ""


def check_relpath(value, what: str = "path", reserved: bool = True) -> str:
    """The value if it is a safe relative path; else Untrusted naming what it was."""
    problem = relpath_problem(value, reserved)
    if problem:
        raise Untrusted(f"{what} {_show(value)} {problem}",
                        hint="the entry was rejected as corrupt; `buildml cache verify` lists such entries")
    return value


def symlinked_part(root, relpath: str) -> str:
    """The first existing part of root/relpath (relpath itself included) that is a symlink, or ''."""
    here = str(root)
    done = []
    for part in relpath.split("/"):
        here = os.path.join(here, part)
        done.append(part)
        try:
            st = os.lstat(here)
        except (FileNotFoundError, NotADirectoryError):
            return ""
        if stat.S_ISLNK(st.st_mode):
            return "/".join(done)
    return ""


def resolve_under(root, relpath: str, what: str = "path") -> str:
    """root/relpath after checking relpath and that no existing part of it is a symlink."""
    check_relpath(relpath, what, reserved=False)
    link = symlinked_part(root, relpath)
    if link:
        raise Untrusted(f"{what} {relpath!r} goes through the symlink {link!r}",
                        hint="buildml never reads or writes through a symlink in an output path")
    return os.path.join(str(root), relpath)


def open_dir_under(root, reldir: str) -> int:
    """An O_DIRECTORY fd of root/reldir, opened part by part with O_NOFOLLOW (a symlink fails: ELOOP/ENOTDIR)."""
    fd = os.open(str(root), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in (reldir.split("/") if reldir else ()):
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_under(root, relpath: str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """An fd of root/relpath, with no part (the last included) followed if it is a symlink."""
    parent, _, name = relpath.rpartition("/")
    dfd = open_dir_under(root, parent)
    try:
        return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=dfd)
    finally:
        os.close(dfd)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_outputs(outputs, what: str = "outputs") -> dict:
    """outputs if it maps safe relative paths to {"digest", "size" >= 0, "exec": bool}; else Untrusted."""
    if not isinstance(outputs, dict):
        raise _field(what, outputs, "is not a mapping")
    for path, meta in outputs.items():
        _check_written_path(path, f"{what} path")
        if not isinstance(meta, dict):
            raise _field(f"{what}[{path!r}]", meta, "is not a mapping")
        check_digest(meta.get("digest"), f"{what}[{path!r}].digest")
        size = meta.get("size")
        if type(size) is not int or size < 0:
            raise _field(f"{what}[{path!r}].size", size, "is not a size (an integer >= 0)")
        if type(meta.get("exec", False)) is not bool:
            raise _field(f"{what}[{path!r}].exec", meta.get("exec"), "is not true or false")
    return outputs


def validate_relpaths(paths, what: str) -> list:
    """paths if it is a list of safe relative paths; else Untrusted."""
    if not isinstance(paths, list):
        raise _field(what, paths, "is not a list")
    for path in paths:
        _check_written_path(path, f"{what} entry")
    return paths


def validate_manifest(manifest, key) -> dict:
    """The result manifest if every field a build acts on is well formed for key; else Untrusted naming the field."""
    if not isinstance(manifest, dict):
        raise _field("manifest", manifest, "is not a JSON object")
    check_digest(key, "action key")
    if manifest.get("key") != key:
        raise _field("key", manifest.get("key"), f"does not match the entry's name {key}")
    validate_outputs(manifest.get("outputs"), "outputs")
    validate_relpaths(manifest.get("out_dirs", []), "out_dirs")
    validate_relpaths(manifest.get("local_only", []), "local_only")
    check_tree_shape(manifest["outputs"], manifest.get("out_dirs", []))
    if manifest.get("log") is not None:
        check_digest(manifest["log"], "log")
    if type(manifest.get("exit_code")) is not int:
        raise _field("exit_code", manifest.get("exit_code"), "is not an integer")
    metrics = manifest.get("metrics", {})
    if not isinstance(metrics, dict):
        raise _field("metrics", metrics, "is not a mapping")
    for path in metrics:
        check_relpath(path, "metrics path")
    return manifest


def check_tree_shape(outputs: dict, out_dirs) -> None:
    """Untrusted when an output file would have to be a directory too: an out_dir or another output under it."""
    for path in [*outputs, *out_dirs]:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in outputs:
                raise _field("outputs path", parent, f"is a file, yet {path!r} is under it")
            parent = parent.rpartition("/")[0]
    for path in out_dirs:
        if path in outputs:
            raise _field("out_dirs entry", path, "is also an output file")


def _check_written_path(path, what: str) -> None:
    """check_relpath, and the name is UTF-8 text (the state and the cache record it)."""
    check_relpath(path, what)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise _field(what, path, "is not UTF-8 text") from None


def _field(what: str, value, problem: str) -> Untrusted:
    return Untrusted(f"{what} {_show(value)} {problem}",
                     hint="the entry was rejected as corrupt; `buildml cache verify` lists such entries")


def undecodable(path: str) -> str:
    """'' when path (from os.walk, glob) is valid UTF-8; else the path shown with backslash escapes (b'\\xff')."""
    try:
        path.encode("utf-8")
        return ""
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_manifest_paths(outputs: dict, outs, out_dirs=()) -> None:
    """Refuse malformed outputs, and output paths or out_dirs outside the target's declared outs (a poisoned cache)."""
    validate_outputs(outputs, "cached manifest outputs")
    validate_relpaths(list(out_dirs) if isinstance(out_dirs, tuple) else out_dirs, "cached manifest out_dirs")
    check_tree_shape(outputs, out_dirs)
    declared = set(outs)
    for what, paths in (("path", outputs), ("out_dir", out_dirs)):
        for path in paths:
            if path not in declared and not any(path.startswith(d + "/") for d in declared):
                raise CacheCorruption(f"cached manifest names {what} {path!r}, which is not a declared out",
                                      hint="the cache entry was rejected")


COST_FIELDS = ("wall_s", "cpu_s", "peak_rss_bytes", "executor", "resources", "output_bytes")
_COST_LIMIT = 1e15  # larger numbers are not a cost anything recorded (10^15 bytes, 31 million years of CPU)


def valid_cost(value) -> dict:
    """A result manifest's `cost` block as read back: every field of COST_FIELDS, each well formed or None
    (unknown). A missing block (a manifest older than costs), a block that is not a mapping or a field of the
    wrong type is unknown, never an error: cost is a record of what happened, nothing is built from it."""
    block = value if isinstance(value, dict) else {}
    cost = {name: _cost_number(block.get(name), integer=name.endswith("_bytes")) for name in COST_FIELDS}
    executor = block.get("executor")
    cost["executor"] = executor if isinstance(executor, str) and 0 < len(executor) <= 200 and executor.isprintable() else None
    resources = block.get("resources")
    cost["resources"] = {name: number for name in ("cpus", "gpus", "memory")
                         if (number := _cost_number((resources if isinstance(resources, dict) else {}).get(name),
                                                    integer=name == "memory")) is not None}
    return cost


def _cost_number(value, integer: bool = False):
    """value if it is a finite, non-negative, not absurd number (an int where integer), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or integer and not isinstance(value, int):
        return None
    return value if 0 <= value <= _COST_LIMIT else None  # NaN fails both comparisons
