"""Secret values: the forms they are masked in (console, logs, records), and the scan of outputs for them.

A secret is masked as a value, not as a line: the whole value, each of its lines of MIN_LINE or more
characters (a PEM key or a JSON credential is printed across lines), and the JSON-escaped and repr
forms of each (a secret inside a JSON document or a Python repr).
"""

from __future__ import annotations

import json
import os
import stat

from buildml.trust import open_under

MIN_LINE = 4  # shorter lines of a multi-line secret ("{", "}") are too common to hide
SCAN_MIN = 8  # shorter forms are masked but not searched for in outputs: 4 bytes recur by chance in 1 GB
CHUNK = 1 << 20
MASK = "***"


def forms(value: str) -> set[str]:
    """The texts that reveal value: itself, its lines of MIN_LINE+ characters, and their JSON and repr forms."""
    parts = {value} | {s for s in (line.strip() for line in value.splitlines()) if len(s) >= MIN_LINE}
    out = set()
    for part in parts:
        out |= {part, json.dumps(part)[1:-1], json.dumps(part, ensure_ascii=False)[1:-1], repr(part)[1:-1]}
    return {f for f in out if f}


def masks_for(values) -> tuple[str, ...]:
    """Every form of every non-empty value, longest first (a whole value is hidden before its lines)."""
    found = set().union(*(forms(v) for v in values if v))
    return tuple(sorted(found, key=lambda f: (-len(f), f)))


def mask_text(text: str, masks) -> str:
    """text with every mask (from masks_for) replaced by ***."""
    for form in masks:
        if form in text:
            text = text.replace(form, MASK)
    return text


def mask_data(value, masks):
    """value (plain data: a manifest's metrics) with every string masked; keys too."""
    if not masks:
        return value
    if isinstance(value, str):
        return mask_text(value, masks)
    if isinstance(value, dict):
        return {mask_data(k, masks): mask_data(v, masks) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_data(v, masks) for v in value]
    return value


def needles(value: str) -> list[bytes]:
    """The byte strings whose presence shows value was written: its forms of SCAN_MIN+ bytes, minus any
    that contains a shorter one (finding the shorter suffices)."""
    kept: list[bytes] = []
    for form in sorted({f.encode("utf-8", "surrogateescape") for f in forms(value)}, key=len):
        if len(form) >= SCAN_MIN and not any(k in form for k in kept):
            kept.append(form)
    return kept


def secret_in_outputs(root, paths, secrets: dict) -> tuple[str, str] | None:
    """(out path, secret NAME) of the first output file under root holding a secret's value, or None.

    Each file is opened without following any link and read once, in CHUNK pieces overlapping by the
    longest needle, so a value across a chunk boundary is still found.
    """
    wanted = [(name, n) for name, value in sorted(secrets.items()) if value for n in needles(value)]
    if not wanted:
        return None
    overlap = max(len(n) for _, n in wanted) - 1
    for path in sorted(paths):
        name = _scan(root, path, wanted, overlap)
        if name:
            return path, name
    return None


def _scan(root, path: str, wanted, overlap: int) -> str:
    fd = open_under(root, path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without blocking, then is skipped
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        tail = b""
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return ""
            window = tail + chunk
            for name, needle in wanted:
                if needle in window:
                    return name
            tail = window[-overlap:] if overlap else b""
    finally:
        os.close(fd)
