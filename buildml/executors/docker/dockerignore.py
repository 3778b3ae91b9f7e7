"""Docker build contexts: which files survive `.dockerignore`, with Docker's semantics, on pathspec."""

from __future__ import annotations

import functools
import os
import posixpath

ALWAYS_SENT = ("Dockerfile", ".dockerignore")


@functools.cache
def _pattern_kind() -> str:
    """pathspec >= 1.0 names the gitwildmatch syntax 'gitignore' (and deprecates the old name)."""
    import pathspec.util

    try:
        pathspec.util.lookup_pattern("gitignore")
        return "gitignore"
    except KeyError:
        return "gitwildmatch"


def read_patterns(path) -> list[str]:
    """The patterns of a .dockerignore file ([] when there is none)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def to_gitwildmatch(line: str) -> str | None:
    """One Docker pattern as a gitwildmatch pattern anchored at the context root, or None for none.

    Docker cleans each pattern (filepath.Clean), strips a leading '/', matches it against the
    whole path from the context root (no "match at any depth" as in .gitignore), lets a pattern
    that matches a directory exclude everything under it, and lets `!pattern` re-include, the
    last matching line winning. Anchoring each pattern with '/' gives exactly that in pathspec.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    negate = text.startswith("!")
    text = text[1:].strip() if negate else text
    text = posixpath.normpath(text).lstrip("/")
    if text in ("", "."):
        return None
    return ("!" if negate else "") + "/" + text


def matcher(patterns):
    """A function relpath -> True when the path is excluded from the context."""
    import pathspec

    lines = [p for p in (to_gitwildmatch(l) for l in patterns) if p]
    if not lines:
        return lambda relpath: False
    spec = pathspec.PathSpec.from_lines(_pattern_kind(), lines)
    return spec.match_file


def filter_context(root: str, context: str, ignore_file: str, files) -> list[str]:
    """Keep the workspace-relative `files` that lie outside `context` or survive its .dockerignore."""
    excluded = matcher(read_patterns(os.path.join(root, ignore_file)))
    prefix = context + "/" if context else ""
    kept = []
    for path in files:
        if not path.startswith(prefix):
            kept.append(path)
            continue
        rel = path[len(prefix):]
        if rel in ALWAYS_SENT or not excluded(rel):
            kept.append(path)
    return kept


def biggest(sizes: dict, n: int = 5) -> list[tuple[str, int]]:
    """The n biggest top-level entries of a context by total size: [(path, bytes)]."""
    totals: dict[str, int] = {}
    for path, size in sizes.items():
        top = path.split("/", 1)[0] + ("/" if "/" in path else "")
        totals[top] = totals.get(top, 0) + size
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
