"""Text tables for `buildml metrics`, `buildml params` and the end of a sweep."""

from __future__ import annotations

import json
import os
import time

from buildml.events import Outcome


def table(header, rows) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def change(d) -> str:
    if d is None:
        return ""
    return "0" if d == 0 else f"{d:+}"


def commit(sha, dirty=False) -> str:
    return (sha[:10] if sha else "(no commit)") + ("-dirty" if dirty else "")


def local_time(ts) -> str:
    """A timestamp as local date and time, or '?'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


def _when(entry) -> str:
    return local_time(entry.get("started"))


# -- metrics ------------------------------------------------------------------------------------
def render_current(entries: list[dict]) -> str:
    lines = []
    for e in entries:
        if not e["built"]:
            lines += [f"{e['target']}: {e['missing']}"] + ([f"  hint: {e['hint']}"] if e.get("hint") else [])
            continue
        where = f"built {_when(e)} at {commit(e['commit'], e['dirty'])}"
        if e.get("stale"):
            where += "; stale: the current tree (or --param) gives another result, see `buildml status`"
        lines.append(f"{e['target']}  ({where})")
        lines += ["  " + line for line in table(["metric", "value"], [[n, value(v)] for n, v in e["metrics"].items()])[1:]]
    return "\n".join(lines)


def render_compare(info: dict) -> str:
    rev = info["rev"]
    lines = [f"metrics: {rev} ({commit(info['commit'])}) vs the current builds"]
    for t in info["targets"]:
        was, cur = t["rev"], t["current"]
        lines.append(t["target"])
        for side, e in ((rev, was), ("current", cur)):
            if not e["built"]:
                lines.append(f"  {side}: {e['missing']}" + (f"\n  hint: {e['hint']}" if e.get("hint") else ""))
        if cur.get("stale"):
            lines.append("  current: the last build here, made from another tree or with --param (see `buildml status`)")
        rows = [[r["metric"], value(r["rev"]), value(r["current"]), change(r["delta"])] for r in t["rows"]]
        if rows:
            lines += ["  " + line for line in table(["metric", rev, "current", "change"], rows)]
    return "\n".join(lines)


def render_history(info: dict) -> str:
    results = info["results"]
    if not results:
        return f"{info['target']}: no results in the local cache (build it: buildml build {info['target']})"
    names = list(dict.fromkeys(n for r in results for n in r["metrics"]))
    flat = [_flat_params(r["params"]) for r in results]
    keys = sorted({k for f in flat for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1] if len(results) > 1 else keys
    rows = [[r["date"], commit(r["commit"], r["dirty"]), *(value(r["metrics"].get(n)) for n in names),
             " ".join(f"{k}={value(f[k])}" for k in varying if k in f)] for r, f in zip(results, flat)]
    what = "params that differ" if len(results) > 1 else "params"
    lines = [f"{info['target']}: {len(results)} results in the local cache, newest first"]
    return "\n".join(lines + table(["date", "commit", *names, what], rows))


def _flat_params(params: dict) -> dict:
    """{file: {key: v}} -> {key: v}; a key in two files is written file:key."""
    counts: dict = {}
    for values in params.values():
        for k in values:
            counts[k] = counts.get(k, 0) + 1
    return {(k if counts[k] == 1 else f"{f}:{k}"): v for f, values in sorted(params.items()) for k, v in values.items()}


# -- params -------------------------------------------------------------------------------------
def render_params(rows: list[dict]) -> str:
    if not rows:
        return "no target selects params"
    return "\n".join(table(["file", "param", "value", "used by"],
                           [[r["file"], r["param"], value(r["value"]), " ".join(r["targets"])] for r in rows]))


def render_params_compare(rev: str, sha, rows: list[dict]) -> str:
    if not rows:
        return f"no selected param differs from {rev} ({commit(sha)})"
    return "\n".join([f"params: {rev} ({commit(sha)}) vs now"] + table(
        ["file", "param", rev, "current", "used by"],
        [[r["file"], r["param"], value(r["rev"]), value(r["current"]), " ".join(r["targets"])] for r in rows]))


# -- sweeps -------------------------------------------------------------------------------------
def render_variant(result, index: int, total: int) -> str:
    from buildml.report.console import summary_line

    swept = " ".join(f"{k}={value(v)}" for k, v in result.variant.params)
    if result.finished is None:
        return f"variant {index}/{total} {result.variant.id} {swept}: FAILED: {result.error}"
    ok, line = summary_line(result.finished)
    text = f"variant {index}/{total} {result.variant.id} {swept}: {'' if ok else 'FAILED: '}{line}"
    for r in result.finished.results:
        if r.status == Outcome.FAILED:
            text += f"\n  FAILED {r.label}: {r.error}"
            if r.log_tail:
                text += "\n" + "\n".join("    " + l for l in r.log_tail.splitlines()[-10:])
    return text


def render_sweep(info: dict) -> str:
    rows = info["variants"]
    keys = list(info["sweep"])
    names = list(dict.fromkeys(n for r in rows for n in r["metrics"]))
    order = f", best first by {info['sort']}" if info["sort"] else ""
    lines = [f"sweep: {len(rows)} variants of {' x '.join(keys)}{order}"]
    lines += table(["rank", "variant", *keys, *names, "executed", "cached", "status"],
                   [[i, r["id"], *(value(r["params"].get(k)) for k in keys), *(value(r["metrics"].get(n)) for n in names),
                     r["executed"], r["cached"], "ok" if r["ok"] else "FAILED"] for i, r in enumerate(rows, 1)])
    if rows:
        base = os.path.dirname(rows[0]["out"])
        shown = os.path.relpath(base) if not os.path.relpath(base).startswith("..") else base
        lines.append(f"outputs of each variant: {shown}/<variant>/")
    lines.append(f"{info['executed']} executed, {info['cached']} cached, {info['up_to_date']} up to date"
                 + (f", {info['failed']} failed" if info["failed"] else ""))
    return "\n".join(lines)
