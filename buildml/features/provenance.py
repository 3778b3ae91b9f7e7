"""Provenance queries: `buildml show` (how a target's outputs were made, where they are) and `buildml diff`."""

from __future__ import annotations

import json
import os

from buildml.errors import UserError
from buildml.labels import parse_label
from buildml.engine.state import State
from buildml.report.cost import describe as describe_cost
from buildml.trust import valid_cost


def _label(session, text: str):
    label = parse_label(text if text.startswith(("//", ":")) else "//" + text, session.current_package)
    session.graph.select([str(label)])  # an unknown target raises with suggestions
    return label


def _manifest(session, label) -> tuple[dict | None, bool]:
    """(the result manifest for label's current key, True) or (its last build's, False) or (None, False)."""
    finished = session.build([str(label)], dry_run=True)
    result = {r.label: r for r in finished.results}[label]
    if result.key:
        manifest = session.store.get_action(result.key)
        if manifest is not None:
            return manifest, True
    last = State(session.ws.state_dir).last_build(str(label))
    if last and last.get("key"):
        return session.store.get_action(last["key"]), False
    return None, False


def show(session, text: str) -> dict:
    """The provenance of TARGET's build for the current tree (or its last build), plus where its outputs are."""
    label = _label(session, text)
    manifest, current = _manifest(session, label)
    if manifest is None:
        raise UserError(f"{label} has not been built here", hint=f"build it first: buildml build {label}")
    out_root = session.options.out_root or str(session.ws.root)
    return {
        "target": str(label),
        "current": current,
        "key": manifest["key"],
        "exit_code": manifest.get("exit_code"),
        "provenance": manifest.get("provenance", {}),
        "metrics": manifest.get("metrics", {}),
        "cost": valid_cost(manifest["cost"]) if "cost" in manifest else None,  # None: built before costs were recorded
        "outputs": [_where(session.store, out_root, path, meta) for path, meta in sorted(manifest["outputs"].items())],
    }


def _where(store, out_root: str, path: str, meta: dict) -> dict:
    full = os.path.join(out_root, path)
    in_place = os.path.isfile(full) and os.path.getsize(full) == meta["size"]
    blob = store.local.blob_path(meta["digest"])
    return {"path": path, "digest": meta["digest"], "size": meta["size"], "file": full if in_place else None,
            "blob": str(blob) if blob is not None and os.path.exists(blob) else None}


def render_show(info: dict) -> str:
    """show() as text."""
    p = info["provenance"]
    lines = [f"{info['target']}" + ("" if info["current"] else "  (last build; the current tree's build differs)"),
             f"  key:       {info['key']}",
             f"  command:   {_command(p.get('command'))}",
             f"  commit:    {p.get('git_commit') or '(not a git repo)'}" + ("  (dirty tree)" if p.get("git_dirty") else ""),
             f"  executor:  {p.get('executor')} on {p.get('host')}, exit {info['exit_code']}, "
             f"{p.get('duration', 0):.2f}s, started {_time(p.get('started'))}",
             f"  cost:      {describe_cost(info['cost']) if info.get('cost') else '(not recorded)'}",
             f"  image:     {p.get('image_key') or '(none)'}",
             f"  buildml:   {p.get('buildml_version')}"]
    lines += [f"  env:       {name}={value}" for name, value in sorted((p.get("env") or {}).items())]
    lines += [f"  param:     {k} = {v!r} ({f})" for f, vals in sorted((p.get("params") or {}).items()) for k, v in vals.items()]
    lines += [f"  override:  {o['param']} = {o['to']!r} (--param; {o['file']} has {o['from']!r})" for o in p.get("param_overrides", ())]
    lines += [f"  input:     {d[:12]}  {path}" for path, d in sorted((p.get("inputs") or {}).items())]
    lines += [f"  metric:    {name} = {value}" for name, value in flat_metrics(info["metrics"]).items()]
    for out in info["outputs"]:
        where = out["file"] or "(not in place)"
        lines.append(f"  output:    {out['path']}  {out['size']} bytes  {out['digest'][:12]}  at {where}")
        if out["blob"]:
            lines.append(f"             cached blob {out['blob']}")
    return "\n".join(lines)


def _command(argv) -> str:
    if not argv:
        return "(none)"
    return argv[2] if len(argv) == 3 and argv[:2] == ["sh", "-c"] else " ".join(argv)


def _time(ts) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


def flat_metrics(metrics: dict) -> dict:
    """{name: value} over every metrics file; nested keys dotted; the file name only when there are several."""
    flat: dict = {}
    for file, values in sorted((metrics or {}).items()):
        prefix = f"{file}:" if len(metrics) > 1 else ""
        _flatten(values, prefix, flat)
    return flat


def _flatten(value, prefix: str, into: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}{k}" + ("." if isinstance(v, dict) else ""), into)
    else:
        into[prefix] = value


# -- diff ----------------------------------------------------------------------------------------
def diff(rev1: str, rev2: str, text: str, open_at) -> dict:
    """What differs between the builds of TARGET at two revisions; `with open_at(rev) as session` opens rev's tree."""
    sides, commits = [], []
    for rev in (rev1, rev2):  # one checkout at a time: the same commit twice must not wait on itself
        with open_at(rev) as session:
            label = _label(session, text)
            manifest, _ = _manifest(session, label)
            commits.append(session.options.at_revision)  # the commit rev names, not the one its result was built at
        if manifest is None:
            raise UserError(f"{label} has not been built at {rev}", hint=f"build it: buildml build --at {rev} {label}")
        sides.append(manifest)
    a, b = (m.get("provenance", {}) for m in sides)
    return {
        "target": text, "revs": [rev1, rev2], "keys": [sides[0]["key"], sides[1]["key"]],
        "commits": commits,
        "built_at": [a.get("git_commit"), b.get("git_commit")],  # where each (maybe shared) cached result was made
        "params": _pairs(_flat_params(a), _flat_params(b)),
        "inputs": _pairs(a.get("inputs") or {}, b.get("inputs") or {}),
        "command": _pairs({"command": _command(a.get("command"))}, {"command": _command(b.get("command"))}),
        "env": _pairs(a.get("env") or {}, b.get("env") or {}),
        "image": _pairs({"image": a.get("image_key")}, {"image": b.get("image_key")}),
        "metrics": _pairs(flat_metrics(sides[0].get("metrics")), flat_metrics(sides[1].get("metrics")), keep_same=True),
        "outputs": _pairs({p: m["digest"] for p, m in sides[0]["outputs"].items()},
                          {p: m["digest"] for p, m in sides[1]["outputs"].items()}),
    }


def _flat_params(p: dict) -> dict:
    return {k if f == "params.yaml" else f"{f}:{k}": v for f, vals in (p.get("params") or {}).items() for k, v in vals.items()}


def _pairs(old: dict, new: dict, keep_same: bool = False) -> list:
    """[[name, old, new], ...] for the names whose values differ (all of them with keep_same)."""
    missing = None
    return [[k, old.get(k, missing), new.get(k, missing)] for k in sorted(set(old) | set(new))
            if keep_same or old.get(k, missing) != new.get(k, missing)]


def render_diff(info: dict) -> str:
    """diff() as text, the two builds side by side."""
    r1, r2 = info["revs"]
    lines = [f"{info['target']}: {r1} ({(info['commits'][0] or '?')[:10]}) vs {r2} ({(info['commits'][1] or '?')[:10]})"]
    if info["keys"][0] == info["keys"][1]:
        lines.append("  same action key: the two builds are the same build")
    for section in ("params", "inputs", "command", "env", "image", "metrics", "outputs"):
        rows = info[section]
        if not rows:
            lines.append(f"  {section}: same")
            continue
        lines.append(f"  {section}:")
        width = max(len(str(r[0])) for r in rows)
        for name, a, b in rows:
            mark = "" if a != b else "  (same)"
            lines.append(f"    {str(name):<{width}}  {_cell(a, section)}  ->  {_cell(b, section)}{mark}")
    return "\n".join(lines)


def _cell(value, section: str) -> str:
    if value is None:
        return "(none)"
    if section in ("inputs", "outputs", "image") and isinstance(value, str):
        return value[:12]
    return json.dumps(value) if not isinstance(value, str) else value
