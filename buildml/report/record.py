"""A reporter that records a build's events to .buildml/last-build.json, the input of `buildml report`."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from buildml.errors import UserError
from buildml.events import (
    BuildFinished,
    BuildStarted,
    Outcome,
    TargetFinished,
    TargetStarted,
)
from buildml.trust import Untrusted, is_digest

RECORD_FILE = "last-build.json"
SCHEMA = 1


class BuildRecorder:
    """Collects start/end times and results per target; writes the record when the build finishes."""

    def __init__(self, path, dag=None, command: str = "build", plots: dict | None = None):
        self.path = Path(path)
        self.dag = dag
        self.plots = plots or {}  # label -> ((path or plot name, properties JSON), ...)
        self.command = command
        self._lock = threading.Lock()
        self._t0 = time.time()
        self._started: dict = {}
        self._targets: dict = {}

    def __call__(self, event) -> None:
        now = time.time()
        with self._lock:
            if isinstance(event, BuildStarted):
                self._t0 = now
            elif isinstance(event, TargetStarted):
                self._started[event.label] = (now, event.executor)
            elif isinstance(event, TargetFinished):
                self._targets[event.result.label] = self._entry(event.result, now)
        if isinstance(event, BuildFinished):
            write_record(self.path, self._record(event, now))

    def _entry(self, r, now: float) -> dict:
        started, executor = self._started.get(r.label, (now - r.duration, ""))
        manifest = r.manifest or {}
        return {
            "label": str(r.label),
            "status": r.status,
            "cached": r.status in (Outcome.CACHED, Outcome.UP_TO_DATE),
            "executed": r.status == Outcome.EXECUTED,
            "start": round(started - self._t0, 6),
            "end": round(now - self._t0, 6),
            "duration": round(r.duration, 3),
            "executor": executor or r.source,
            "source": r.source,
            "key": r.key,
            "reasons": list(r.reasons),
            "error": r.error,
            "log_tail": r.log_tail,
            "log_digest": r.log_digest or manifest.get("log"),
            "metrics": manifest.get("metrics") or {},
            "cost": manifest.get("cost"),  # what producing it cost, as recorded (the report reads it via valid_cost)
            "outputs": sorted(r.outputs),
            "deps": [],
            "plots": [{"path": path, "props": json.loads(props)} for path, props in self.plots.get(r.label, ())],
        }

    def _record(self, finished: BuildFinished, now: float) -> dict:
        targets = []
        names = {r.label: str(r.label) for r in finished.results}  # each label's text once (10,000 targets: ~0.1 s)
        for r in finished.results:
            entry = self._targets.get(r.label) or self._entry(r, now)
            entry["label"] = names[r.label]
            entry["deps"] = sorted(names.get(d) or str(d) for d in self.dag.predecessors(r.label)) \
                if self.dag is not None else []
            targets.append(entry)
        return {"schema": SCHEMA, "command": self.command, "started_at": self._t0, "duration": round(finished.duration, 3),
                "interrupted": finished.interrupted, "targets": targets}


def write_record(path: Path, record: dict) -> None:
    """Atomically replace the record (temp file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, sort_keys=True, default=str))  # no indent: the C encoder
    os.replace(tmp, path)


def read_record(path) -> dict:
    """The last recorded build, or a UserError saying to build first."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("no build has been recorded in this workspace yet",
                        hint="run `buildml build` first, then `buildml report`") from None
    except (ValueError, RecursionError):
        raise UserError(f"{path} is not a valid build record",
                        hint="run `buildml build` again to rewrite it") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise UserError(f"{path} was written by another buildml version", hint="run `buildml build` again")
    if not isinstance(record.get("targets"), list) or not all(isinstance(t, dict) for t in record["targets"]):
        raise UserError(f"{path} is not a valid build record", hint="run `buildml build` again to rewrite it")
    for t in record["targets"]:
        if t.get("log_digest") is not None and not is_digest(t["log_digest"]):
            raise Untrusted(f"{path}: the log of {t.get('label')} has the digest {t['log_digest']!r:.80}, "
                            "which is not a digest (32 hex characters)", hint="run `buildml build` again to rewrite it")
    return record


class Tee:
    """A reporter that passes every event to several reporters in turn."""

    def __init__(self, *reporters):
        self.reporters = reporters

    def __call__(self, event) -> None:
        for reporter in self.reporters:
            reporter(event)
