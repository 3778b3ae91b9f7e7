"""Remote actions this workspace submitted (`.buildml/remote-runs.json`): `--detach`, attach, `buildml status`.

A record per action key: label, executor, Ray address, actor name, submission time. It only
helps `buildml status` list what runs remotely; the Ray actor named after the key is what a
later build attaches to, and the remote cache's `runs/` record is where a finished run's
result waits. Every record can be deleted at any time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from buildml.errors import BuildmlError, USER
from buildml.events import Outcome
from buildml.trust import is_digest

RECORD_FILE = "remote-runs.json"


class Detached(BuildmlError):
    """Raised by a remote executor under --detach once the action is submitted (not an error)."""

    who = USER
    exit_code = 0

    def __init__(self, message: str, executor: str = ""):
        super().__init__(message)
        self.executor = executor


def _path(state_dir) -> Path:
    return Path(state_dir) / RECORD_FILE


def _lock(state_dir):
    from filelock import FileLock

    Path(state_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(state_dir) / (RECORD_FILE + ".lock")))


def load(state_dir) -> dict:
    """{action key: record} (empty when there is no file or it is unreadable); malformed records are left out."""
    try:
        data = json.loads(_path(state_dir).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: record for key, record in data.items() if is_digest(key) and _well_formed(record)}


def _well_formed(record) -> bool:
    """A record as remember() writes it: text where `buildml status` shows or connects, a number for the time."""
    text = ("label", "executor", "address", "actor", "namespace")
    return isinstance(record, dict) and all(isinstance(record.get(f), (str, type(None))) for f in text) and \
        isinstance(record.get("submitted", 0), (int, float)) and not isinstance(record.get("submitted"), bool)


def _save(state_dir, records: dict) -> None:
    path = _path(state_dir)
    tmp = path.with_name(f".{RECORD_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True))
    os.replace(tmp, path)


def remember(state_dir, key: str, record: dict) -> None:
    """Note a submitted remote action."""
    with _lock(state_dir):
        records = load(state_dir)
        records[key] = {**record, "submitted": record.get("submitted", time.time())}
        _save(state_dir, records)


def forget(state_dir, key: str) -> None:
    """The action finished (or is gone): drop its record."""
    if not _path(state_dir).exists():
        return
    with _lock(state_dir):
        records = load(state_dir)
        if records.pop(key, None) is not None:
            _save(state_dir, records)


# -- what `buildml status` and `build --detach` print ------------------------------------------
def running(state_dir, store, probe) -> list[dict]:
    """The remote actions still running, each with where and since when; finished ones are dropped.
    probe(record) asks the executor type that detached the run (Executor.probe)."""
    records = load(state_dir)
    rows = []
    for key, record in sorted(records.items(), key=lambda kv: kv[1].get("submitted", 0)):
        row = _check(store, key, record, probe)
        if row is None:
            forget(state_dir, key)
        else:
            rows.append(row)
    return rows


def _check(store, key: str, record: dict, probe) -> dict | None:
    """The row for one record, or None when the run is over (its result is in the cache, or it is gone)."""
    try:
        if store.get_action(key) is not None:
            return None
    except BuildmlError:
        pass
    info = probe(record)
    if info is None:
        return None
    return {"key": key, "target": record.get("label"), "executor": record.get("executor"),
            "address": record.get("address"), "submitted": record.get("submitted"), **info}


def render_running(rows: list[dict]) -> list[str]:
    """Lines for `buildml status`."""
    lines = []
    for row in rows:
        since = time.strftime("%H:%M:%S", time.localtime(row.get("submitted") or 0))
        where = row.get("node") or "(waiting for a node)"
        state = "finished, result not yet collected" if row.get("state") == "done" else "running"
        lines.append(f"{row['target']}: {state} on {row['executor']} (ray {row['address']}), node {where}, "
                     f"submitted {since}")
        if row.get("last_line"):
            lines.append(f"    last line: {row['last_line']}")
    if lines:
        lines.append("  (`buildml build` of these targets attaches to the running actions)")
    return lines


def detached_lines(finished) -> list[str]:
    """After `build --detach`: what was submitted and what waits for it."""
    rows = [r for r in finished.results if r.status == Outcome.DETACHED]
    lines = [f"detached: {r.label}: {r.error}" for r in rows]
    if rows:
        lines.append("`buildml status` lists running remote actions; `buildml build` again attaches or restores the result")
    return lines
