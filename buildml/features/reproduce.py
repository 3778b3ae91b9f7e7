"""`buildml verify`: re-execute targets ignoring their cached results and compare with what was recorded.

The named targets' dependencies are built (or restored from the cache) as usual; then each named
target runs again with the same action key, through the build's runner and resource ledger
(Scheduler.rerun), neither answered from nor recorded in the action cache, so the recorded
manifest stays as it was. Same key, different
outputs means the target is non-deterministic (unseeded randomness, timestamps in files, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from buildml.events import Outcome
from buildml.features.provenance import flat_metrics
from buildml.engine.runner import failure_message

IDENTICAL = "identical"
WITHIN = "within tolerance"
DIVERGED = "diverged"
NOT_VERIFIED = "not verified"


@dataclass(frozen=True)
class Verdict:
    """The outcome of re-executing one target."""

    target: str
    outcome: str
    files: tuple = ()  # (path, recorded digest or None, new digest or None) of differing files
    metrics: tuple = ()  # (name, recorded, new, tolerance or None, within) of differing metrics
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (IDENTICAL, WITHIN)


def verify(session, patterns, on_line=lambda label, line: None) -> list[Verdict]:
    """Build what the matched targets need, then re-execute each matched target and compare."""
    labels = session.build_labels(patterns)  # what build(patterns) builds: wildcards leave test targets out
    finished = session.build(patterns)
    results = {r.label: r for r in finished.results}
    scheduler = session.scheduler()  # the runner and resource ledger of a build
    try:
        return [_verify_one(session, scheduler, results, label, on_line) for label in labels]
    finally:
        session.state.close()


def _verify_one(session, scheduler, results, label, on_line) -> Verdict:
    result = results[label]
    if result.status == Outcome.FAILED or not result.ok:
        return Verdict(str(label), NOT_VERIFIED, note=f"it did not build: {result.error or result.status}")
    recorded = session.store.get_action(result.key)
    if recorded is None:
        return Verdict(str(label), NOT_VERIFIED, note="no recorded result to compare with (the target is not cacheable)")
    deps = {d: results[d] for d in session.graph.dag.predecessors(label)}
    manifest, outcome, tail = scheduler.rerun(label, deps, lambda line: on_line(label, line))
    if manifest is None:
        return Verdict(str(label), DIVERGED, note=f"re-execution failed ({failure_message(outcome)}) where the "
                       f"recorded build succeeded: non-deterministic or environment-dependent\n{tail}")
    tolerance = session.graph.targets[label].get("tolerance") or {}
    return compare(str(label), recorded, manifest, tolerance, session.graph.specs[label].metrics)


def compare(target: str, recorded: dict, new: dict, tolerance: dict, metric_files=()) -> Verdict:
    """identical, within tolerance (only declared metrics moved, within bounds) or diverged."""
    old_out = {p: m["digest"] for p, m in recorded["outputs"].items()}
    new_out = {p: m["digest"] for p, m in new["outputs"].items()}
    files = tuple((p, old_out.get(p), new_out.get(p)) for p in sorted(set(old_out) | set(new_out))
                  if old_out.get(p) != new_out.get(p))
    if not files:
        return Verdict(target, IDENTICAL)
    metrics = _metric_diffs(flat_metrics(recorded.get("metrics")), flat_metrics(new.get("metrics")), tolerance)
    note = _host_note(recorded, new)
    if tolerance and metric_files and all(m[4] for m in metrics):
        return Verdict(target, WITHIN, files, metrics, note)
    return Verdict(target, DIVERGED, files, metrics, note)


def _metric_diffs(old: dict, new: dict, tolerance: dict) -> tuple:
    rows = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        tol = tolerance.get(name)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        rows.append((name, a, b, tol, bool(numeric and tol is not None and abs(a - b) <= float(tol))))
    return tuple(rows)


def _host_note(recorded: dict, new: dict) -> str:
    a = (recorded.get("provenance") or {}).get("host")
    b = (new.get("provenance") or {}).get("host")
    return f"recorded on {a}, re-executed on {b}" if a and b and a != b else ""


def render(verdicts) -> str:
    """Verdicts as text: one line per target, then the differing files and metrics."""
    lines = []
    for v in verdicts:
        if v.outcome == IDENTICAL:
            lines.append(f"{v.target}: identical (re-executed; every output matches the recorded build byte for byte)")
            continue
        if v.outcome == NOT_VERIFIED:
            lines.append(f"{v.target}: not verified: {v.note}")
            continue
        head = "within tolerance" if v.outcome == WITHIN else "DIVERGED"
        lines.append(f"{v.target}: {head}: non-deterministic: the same inputs gave different outputs"
                     + ("" if v.outcome == WITHIN else "; byte-for-byte reproduction of what depends on it will break"))
        if v.note:
            lines.append(f"    {v.note}")
        for path, a, b in v.files:
            lines.append(f"    file {path}: {(a or '(missing)')[:12]} -> {(b or '(missing)')[:12]}")
        for name, a, b, tol, within in v.metrics:
            bound = f" (tolerance {tol}: {'ok' if within else 'exceeded'})" if tol is not None else " (no tolerance declared)"
            lines.append(f"    metric {name}: {a} -> {b}{bound}")
    return "\n".join(lines)
