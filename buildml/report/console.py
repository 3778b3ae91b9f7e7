"""Reporters: the only code that prints. Plain lines (CI and pipes) and JSON lines (scripts)."""

from __future__ import annotations

import json
import sys
import threading
import time

from buildml.events import (
    BuildFinished,
    BuildStarted,
    Outcome,
    TargetFinished,
    TargetLog,
    TargetStarted,
    Transfer,
    Warning,
)


def summary_counts(finished: BuildFinished) -> dict:
    """The integer fields scripts read: executed, cached, failed (and the rest)."""
    return {
        "executed": finished.count(Outcome.EXECUTED),
        "cached": finished.count(Outcome.CACHED),
        "up_to_date": finished.count(Outcome.UP_TO_DATE),
        "failed": finished.count(Outcome.FAILED),
        "not_built": finished.count(Outcome.NOT_BUILT),
        "stale": finished.count(Outcome.STALE),
        "duration": round(finished.duration, 3),
    }


def summary_line(finished: BuildFinished) -> tuple[bool, str]:
    """(ok, "3 executed, 1 cached, ... in 1.23s"): the closing sentence every human reporter prints."""
    c = summary_counts(finished)
    parts = [f"{c['executed']} executed", f"{c['cached']} cached", f"{c['up_to_date']} up to date"]
    if c["failed"]:
        parts.append(f"{c['failed']} failed")
    if c["not_built"]:
        parts.append(f"{c['not_built']} not built")
    return not (c["failed"] or c["not_built"]), ", ".join(parts) + f" in {finished.duration:.2f}s"


class PlainReporter:
    """One timestamped line per event, no control characters. verbosity: 0 quiet, 1 normal, 2 verbose."""

    def __init__(self, stream=None, verbosity: int = 1, show_outputs=()):
        self.stream = stream or sys.stdout
        self.verbosity = verbosity
        self.show_outputs = set(show_outputs)
        self._lock = threading.Lock()

    def _say(self, text: str, level: int = 1) -> None:
        if self.verbosity >= level:
            stamp = time.strftime("%H:%M:%S")
            with self._lock:
                for line in text.splitlines() or [""]:
                    self.stream.write(f"{stamp} {line}\n")
                self.stream.flush()

    def __call__(self, event) -> None:
        if isinstance(event, BuildStarted):
            self._say(f"considering {len(event.targets)} targets", 2)
        elif isinstance(event, TargetStarted):
            why = "; ".join(event.reasons[:3]) + (f" (+{len(event.reasons) - 3} more)" if len(event.reasons) > 3 else "")
            if event.attached:  # a detached run, followed (or collected) rather than started again
                self._say(f"ATTACH    {event.label} [{event.executor}] {event.attached}")
            else:
                self._say(f"RUN       {event.label} [{event.executor}] {why}")
        elif isinstance(event, TargetLog):
            self._say(f"  {event.label}> {event.line}", 2)
        elif isinstance(event, TargetFinished):
            self._finished(event.result)
        elif isinstance(event, Warning):
            self._say(f"WARNING   {event.message}", 0)
        elif isinstance(event, BuildFinished):
            self._summary(event)

    def _finished(self, r) -> None:
        if r.status == Outcome.FAILED:
            self._say(f"FAILED    {r.label}: {r.error}", 0)
            if r.log_tail:
                self._say(f"--- last lines of the log of {r.label} (full log: buildml log {r.label}) ---\n{r.log_tail}\n---", 0)
        elif r.status == Outcome.NOT_BUILT:
            self._say(f"NOT BUILT {r.label}: {r.error}", 1)
        elif r.status == Outcome.EXECUTED:
            self._say(f"DONE      {r.label} in {r.duration:.2f}s")
        elif r.status == Outcome.CACHED:
            self._say(f"CACHED    {r.label} ({r.source})")
        elif r.status == Outcome.UP_TO_DATE:
            self._say(f"UP-TO-DATE {r.label}", 2)

    def _summary(self, finished: BuildFinished) -> None:
        for r in finished.results:
            if r.label in self.show_outputs and r.ok and r.outputs:
                self._say(f"{r.label} outputs:\n" + "\n".join(f"  {p}" for p in _top_outputs(r)))
        ok, line = summary_line(finished)
        self._say(("" if ok else "BUILD FAILED: ") + line, 0)


def _top_outputs(result) -> list[str]:
    paths = sorted(result.outputs)
    if len(paths) > 10:
        return paths[:10] + [f"... and {len(paths) - 10} more"]
    return paths


class JsonReporter:
    """One JSON object per line; the last line carries the counts."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def _write(self, obj: dict) -> None:
        with self._lock:
            self.stream.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
            self.stream.flush()

    def __call__(self, event) -> None:
        if isinstance(event, TargetStarted):
            self._write({"event": "started", "target": str(event.label), "executor": event.executor, "reasons": list(event.reasons),
                         "attached": event.attached or None})
        elif isinstance(event, TargetFinished):
            r = event.result
            self._write({"event": "finished", "target": str(r.label), "status": r.status, "key": r.key,
                         "duration": round(r.duration, 3), "reasons": list(r.reasons), "error": r.error,
                         "outputs": sorted(r.outputs), "source": r.source})
        elif isinstance(event, Warning):
            self._write({"event": "warning", "message": event.message})
        elif isinstance(event, Transfer):
            counted = {"files": event.files, "total_files": event.total_files} if event.files is not None else {}
            self._write({"event": "transfer", "what": event.what, "done": event.done, "total": event.total,
                         "target": str(event.label) if event.label is not None else None, "elapsed": event.elapsed,
                         **counted})
        elif isinstance(event, BuildFinished):
            self._write({"event": "summary", **summary_counts(event)})


