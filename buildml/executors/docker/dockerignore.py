"""Docker build contexts: which files survive `.dockerignore`, with Docker's semantics."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

ALWAYS_SENT = ("Dockerfile", ".dockerignore")


def read_patterns(path) -> list[str]:
    """The patterns of a .dockerignore file ([] when there is none)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class Pattern:
    """One cleaned .dockerignore line: its '/'-joined components, and whether it re-includes (`!`)."""

    text: str
    negate: bool

    @property
    def depth(self) -> int:
        return self.text.count("/") + 1


def clean(line: str) -> Pattern | None:
    """One .dockerignore line as a Pattern, or None for blanks, comments and patterns that clean to nothing.

    Like Docker: strip spaces, drop empty and '.' components (so leading and trailing '/' do not
    matter) and let each '..' remove the component before it.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    negate = text.startswith("!")
    text = text[1:].strip() if negate else text
    parts: list[str] = []
    for part in text.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return Pattern("/".join(parts), negate) if parts else None


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern:
    """A Docker glob as a regex: `*` and `?` stop at '/', `**` spans directories, `[...]` is a class."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*" and i < n and pattern[i] == "*":
            i += 1
            if i < n and pattern[i] == "/":
                i += 1
            out.append(".*" if i >= n else "(.*/)?")
        elif c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1 if i < n and pattern[i] == "!" else i
            j = j + 1 if j < n and pattern[j] == "]" else j
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
                continue
            body = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            if body[0] == "!":
                body = "^" + body[1:]
            elif body[0] == "^":
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re.escape(c))
    out.append("$")
    return re.compile("".join(out))


def _matches(patterns: list[Pattern], relpath: str) -> bool:
    """Docker's per-path rule: the last matching line wins; a line also matches the path's first
    `depth` parent directories (so `data/*` matches `data/raw/x.csv` through `data/raw`)."""
    matched = False
    parent_dirs = relpath.split("/")[:-1]
    for p in patterns:
        hit = bool(_regex(p.text).match(relpath))
        if not hit and parent_dirs and p.depth <= len(parent_dirs):
            hit = bool(_regex(p.text).match("/".join(parent_dirs[:p.depth])))
        if hit:
            matched = not p.negate
    return matched


def matcher(lines):
    """A function relpath -> True when the file is excluded from the context.

    A file is excluded when it matches, or when one of its parent directories matches and no
    `!pattern` starts with that directory's path (Docker then never descends into it).
    """
    patterns = [p for p in (clean(line) for line in lines) if p]
    if not patterns:
        return lambda relpath: False
    patterns.append(Pattern(".dockerignore", negate=True))
    reincluded = [p.text for p in patterns if p.negate]

    def excluded(relpath: str) -> bool:
        parts = relpath.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if _matches(patterns, directory) and not any(t.startswith(directory) for t in reincluded):
                return True
        return _matches(patterns, relpath)

    return excluded


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
