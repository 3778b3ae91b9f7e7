"""Experiments: the metrics of builds (current, at a git revision, over time) and the params in effect.

Nothing here executes an action. "Current" metrics are those of the workspace's last build of
each target (the outputs now on disk); a revision's metrics are those of the manifest whose key
that revision's tree computes, looked up in the stores; history is every manifest of a label in
the local action cache, with the params of the builds that produced its inputs (lineage).
"""

from __future__ import annotations

import subprocess

from buildml.errors import UserError
from buildml.events import Outcome
from buildml.labels import parse_label
from buildml.features.provenance import flat_metrics
from buildml.report.tables import local_time


# -- which targets ----------------------------------------------------------------------------
def metric_labels(session, patterns) -> list:
    """The targets matched by patterns (default //...) that declare metrics; an error if none does."""
    matched = session.select(patterns)
    labels = [l for l in matched if session.graph.specs[l].metrics]
    if not labels:
        below = sorted({d for l in matched for d in session.graph.dag.descendants(l) if session.graph.specs[d].metrics})
        raise UserError(f"no target matched by {' '.join(patterns) or '//...'} declares metrics",
                        hint=f"downstream targets with metrics: {' '.join(map(str, below))}" if below else
                        "metrics come from targets with `metrics: [metrics.json]`")
    return labels


def one_label(session, text: str):
    """The label of one existing target (unknown names raise with suggestions)."""
    label = parse_label(text if text.startswith(("//", ":")) else "//" + text, session.current_package)
    session.graph.select([str(label)])
    return label


def _dry_run(session, labels) -> dict:
    """label -> Result of deciding (never executing) labels and their deps."""
    finished = session.build([str(l) for l in labels], dry_run=True)
    return {r.label: r for r in finished.results}


# -- current metrics ------------------------------------------------------------------------------
def current_metrics(session, patterns=()) -> list[dict]:
    """One entry per metrics target: the metrics of its last build here (stale: the tree now differs)."""
    labels = metric_labels(session, patterns)
    results = _dry_run(session, labels)
    return [_current(session, label, results[label]) for label in labels]


def _current(session, label, result) -> dict:
    last = session.state.last_build(str(label))
    if last and last.get("key"):
        manifest = session.store.get_action(last["key"]) or {"key": last["key"], **(last.get("manifest") or {})}
        return entry(label, manifest, source="workspace", stale=result.key != last["key"])
    manifest = session.store.get_action(result.key) if result.key else None
    if manifest is not None and manifest.get("exit_code") == 0:
        return entry(label, manifest, source="cache", stale=False)
    return missing(label, "never built here, and the current tree's result is not in any cache",
                   f"build it: buildml build {label}")


def entry(label, manifest: dict, **extra) -> dict:
    """What metrics commands show of one build: key, commit, time, params, flat metrics."""
    p = manifest.get("provenance") or {}
    return {"target": str(label), "built": True, "key": manifest.get("key"), "commit": p.get("git_commit"),
            "dirty": bool(p.get("git_dirty")), "started": p.get("started"), "params": p.get("params") or {},
            "metrics": flat_metrics(manifest.get("metrics") or {}), **extra}


def missing(label, why: str, hint: str = "") -> dict:
    return {"target": str(label), "built": False, "key": None, "metrics": {}, "missing": why, "hint": hint}


# -- at a revision ---------------------------------------------------------------------------------
def metrics_at(session, labels, rev: str) -> dict:
    """label text -> the entry of the result REV's tree computes, from the stores, or why there is none."""
    defined = [l for l in labels if l in session.graph.specs]
    results = _dry_run(session, defined) if defined else {}
    out = {}
    for label in labels:
        if label not in session.graph.specs:
            out[str(label)] = missing(label, f"{label} is not defined at {rev}")
            continue
        out[str(label)] = _at(session, label, results[label], rev)
    return out


def _at(session, label, result, rev: str) -> dict:
    hint = f"build it: buildml build --at {rev} {label}"
    if result.status == Outcome.FAILED:
        return missing(label, f"cannot compute its key at {rev}: {result.error}")
    manifest = session.store.get_action(result.key) if result.key else None
    if manifest is None and result.manifest and result.key:
        manifest = {"key": result.key, **result.manifest}
    if manifest is None or manifest.get("exit_code") != 0:
        if result.key:
            why = f"{rev}'s result is not in any cache (key {result.key[:12]} was never built)"
        else:
            upstream = ", ".join(r.removeprefix("dependency ").removesuffix(" is stale") for r in result.reasons)
            why = f"{rev}'s result is not in any cache (its dependency {upstream} was never built at {rev} either)"
        return missing(label, why, hint)
    return entry(label, manifest, source="cache", stale=False)


def compare(current: list[dict], old: dict, rev: str, commit: str | None) -> dict:
    """The current entries beside REV's, metric by metric, with deltas (current - REV)."""
    targets = []
    for cur in current:
        was = old.get(cur["target"]) or missing(cur["target"], f"not defined at {rev}")
        names = list(dict.fromkeys([*cur["metrics"], *was["metrics"]]))
        rows = [{"metric": n, "rev": was["metrics"].get(n), "current": cur["metrics"].get(n),
                 "delta": delta(was["metrics"].get(n), cur["metrics"].get(n))} for n in names]
        targets.append({"target": cur["target"], "current": cur, "rev": was, "rows": rows})
    return {"rev": rev, "commit": commit, "targets": targets}


def delta(old, new):
    """new - old for two numbers (rounded against float noise), else None."""
    if not (_number(old) and _number(new)):
        return None
    d = new - old
    return d if isinstance(d, int) else round(d, 12)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- history ---------------------------------------------------------------------------------------
def history(session, text: str) -> dict:
    """Every past result of TARGET in the local cache, newest first: commit, time, params (with lineage), metrics."""
    from buildml.store.index import open_index

    label = one_label(session, text)
    index = open_index(session.store.local, session.ws.state_dir)
    try:
        mine = _in_this_repo(session.ws.root, [e for e in index.of_label(str(label)) if e.get("exit_code") == 0])
        lineage = Lineage(index.producers)
        rows = [{"key": e["key"], "commit": e.get("commit"), "dirty": e.get("dirty", False),
                 "started": e.get("started"), "date": local_time(e.get("started")), "executor": e.get("executor"),
                 "duration": e.get("duration"), "params": lineage.params(e), "own_params": e.get("params") or {},
                 "param_overrides": e.get("param_overrides") or [],
                 "metrics": flat_metrics(e.get("metrics") or {})}
                for e in sorted(mine, key=lambda e: e.get("started") or 0, reverse=True)]
    finally:
        index.close()
    return {"target": str(label), "results": rows}


class Lineage:
    """The params of a result and of the builds that produced its inputs; producers(digest) -> summaries."""

    def __init__(self, producers):
        self._producers = producers
        self._by_digest: dict = {}
        self._memo: dict = {}

    def params(self, e: dict) -> dict:
        """{file: {key: value}} of e and of its inputs' producers, transitively (e's own values win)."""
        if e["key"] in self._memo:
            return self._memo[e["key"]]
        self._memo[e["key"]] = {}  # a cycle (the same bytes produced downstream) stops here
        merged: dict = {}
        for digest in sorted(set((e.get("inputs") or {}).values())):
            up = self._producer(digest, e)
            if up is not None:
                for file, values in self.params(up).items():
                    merged.setdefault(file, {}).update(values)
        for file, values in (e.get("params") or {}).items():
            merged.setdefault(file, {}).update(values)
        self._memo[e["key"]] = merged
        return merged

    def _producer(self, digest: str, consumer: dict):
        """The latest successful build with that output that started before the consumer did."""
        if digest not in self._by_digest:
            self._by_digest[digest] = [c for c in self._producers(digest) if c.get("exit_code") == 0]
        start = consumer.get("started") or 0
        before = [c for c in self._by_digest[digest] if c["key"] != consumer["key"] and (c.get("started") or 0) <= start]
        return max(before, key=lambda c: c.get("started") or 0, default=None)


def _in_this_repo(root, entries) -> list:
    """Drop results whose commit this repository does not have (other workspaces sharing the cache)."""
    commits = sorted({e["commit"] for e in entries if e.get("commit")})
    if not commits:
        return entries
    try:
        proc = subprocess.run(["git", "cat-file", "--batch-check"], input="".join(c + "\n" for c in commits),
                              cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return entries
    if proc.returncode != 0:  # not a git repository: keep everything
        return entries
    known = {line.split()[0] for line in proc.stdout.splitlines() if line.split()[1:2] == ["commit"]}
    return [e for e in entries if not e.get("commit") or e["commit"] in known]


# -- params ---------------------------------------------------------------------------------------
MISSING = "(missing)"


def params_in_effect(session, patterns=()) -> list[dict]:
    """[{file, param, value, targets}] for every param key the matched targets select, --param applied."""
    from buildml.load.params import ParamsReader

    reader = ParamsReader(session.ws.root, session.options.param_overrides)
    rows: dict = {}
    for label in session.select(patterns):
        for file, keys in session.graph.specs[label].params:
            for key in keys:
                row = rows.setdefault((file, key), {"file": file, "param": key, "value": _value(reader, file, key),
                                                    "targets": []})
                row["targets"].append(str(label))
    return [rows[k] for k in sorted(rows)]


def _value(reader, file: str, key: str):
    try:
        return reader.select(file, [key])[key]
    except UserError:  # a missing file or key: shown, not fatal (the build would say more)
        return MISSING


def compare_params(current: list[dict], old: list[dict]) -> list[dict]:
    """[{file, param, rev, current, targets}] where the value at REV and now differ (or one side lacks it)."""
    was = {(r["file"], r["param"]): r for r in old}
    now = {(r["file"], r["param"]): r for r in current}
    rows = []
    for k in sorted(set(was) | set(now)):
        a, b = was.get(k), now.get(k)
        va, vb = (a["value"] if a else MISSING), (b["value"] if b else MISSING)
        if va != vb or type(va) is not type(vb):
            rows.append({"file": k[0], "param": k[1], "rev": va, "current": vb,
                         "targets": (b or a)["targets"]})
    return rows
