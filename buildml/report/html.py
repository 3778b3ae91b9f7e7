"""The build report: one self-contained HTML file (no network, no scripts) from the last build's record."""

from __future__ import annotations

import html
import re
import json
import time
from pathlib import Path

from buildml.report.cost import brief as brief_cost, describe as describe_cost, seconds, size
from buildml.trust import valid_cost

STATUS_COLOURS = {"executed": "#2e7d32", "cached": "#0277bd", "up-to-date": "#90a4ae", "failed": "#c62828",
                  "not built": "#f9a825"}
CRITICAL_COLOUR = "#6f42c1"  # violet: the critical path is no failure, so never the failure red
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.summary{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #eaeef2}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:0 .5rem;border-radius:1rem;color:#fff;font-size:.85em}
.crit{font-weight:600;color:CRITICAL_COLOUR}code{font-size:.9em}pre{background:#f6f8fa;padding:.5rem;overflow:auto}
svg text{font:12px system-ui,sans-serif}
""".replace("CRITICAL_COLOUR", CRITICAL_COLOUR)


def critical_path(targets: list[dict]) -> list[str]:
    """Labels on the chain that ended last: from the latest-ending target back through the dep it waited for."""
    by_label = {t["label"]: t for t in targets}
    if not by_label:
        return []
    order = {t["label"]: i for i, t in enumerate(targets)}  # ties go to the later (downstream) target
    latest = lambda ts: max(ts, key=lambda t: (t["end"], order[t["label"]]))
    current = latest(targets)
    path = [current["label"]]
    while True:
        deps = [by_label[d] for d in current.get("deps", ()) if d in by_label]
        if not deps:
            return path[::-1]
        current = latest(deps)
        path.append(current["label"])


def cache_hit_rate(targets: list[dict]) -> tuple[int, int]:
    """(hits, lookups): cached or up to date vs. every target that was built or tried."""
    tried = [t for t in targets if t["status"] in ("executed", "cached", "up-to-date", "failed")]
    return sum(1 for t in tried if t["cached"]), len(tried)


def write_report(record: dict, out: Path, read_log) -> tuple[Path, int]:
    """Write the HTML report and the logs next to it (in OUT-logs/); return (path, logs written)."""
    out = Path(out)
    logs_dir = out.with_name(out.stem + "-logs")
    links = _write_logs(record["targets"], logs_dir, read_log)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(record, {label: f"{logs_dir.name}/{name}" for label, name in links.items()}))
    return out, len(links)


def _write_logs(targets, logs_dir: Path, read_log) -> dict:
    links = {}
    for t in targets:
        if not t.get("log_digest"):
            continue
        try:
            data = read_log(t["log_digest"])
        except Exception:  # a log blob evicted from the cache: the report just has no link
            continue
        logs_dir.mkdir(parents=True, exist_ok=True)
        name = _log_name(t["label"], set(links.values()))
        (logs_dir / name).write_bytes(data)
        links[t["label"]] = name
    return links


def _log_name(label: str, taken: set) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", label.strip("/")).strip("_") or "target"
    name, n = f"{base}.log", 1
    while name in taken:
        n += 1
        name = f"{base}-{n}.log"
    return name


def render(record: dict, log_links: dict) -> str:
    """The whole page as a string."""
    targets = record["targets"]
    critical = critical_path(targets)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started_at", 0)))
    body = [
        f"<h1>buildml {_e(record.get('command', 'build'))} report</h1>",
        f"<div class='when'>started {when}, took {record['duration']:.2f}s"
        + (" (interrupted)" if record.get("interrupted") else "") + "</div>",
        _summary(targets),
        "<h2>Targets</h2>", _targets_table(targets, critical, log_links),
        "<h2>Timeline</h2>", _timeline(targets, critical),
        "<h2>Metrics</h2>", _metrics(targets),
        "<h2>Plots</h2>", _plots(targets),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>buildml report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def _summary(targets) -> str:
    hits, tried = cache_hit_rate(targets)
    rate = f"{100 * hits / tried:.0f}%" if tried else "n/a"
    counts = {s: sum(1 for t in targets if t["status"] == s) for s in STATUS_COLOURS}
    cards = [f"<div class='card' id='hit-rate'><b>{rate}</b>cache hit rate ({hits} of {tried})</div>"]
    cards += [f"<div class='card'><b>{n}</b>{s}</div>" for s, n in counts.items() if n]
    ran = [valid_cost(t["cost"]) for t in targets if t.get("executed") and isinstance(t.get("cost"), dict)]
    if ran:
        cpu = [c["cpu_s"] for c in ran if c["cpu_s"] is not None]
        shown = seconds(sum(cpu)) + ("" if len(cpu) == len(ran) else f" ({len(ran) - len(cpu)} unknown)")
        cards.append(f"<div class='card' id='cpu-time'><b>{_e(shown)}</b>CPU time of the executed targets</div>")
        written = sum(c["output_bytes"] or 0 for c in ran)
        cards.append(f"<div class='card' id='output-bytes'><b>{_e(size(written))}</b>written by them</div>")
    return "<div class='summary'>" + "".join(cards) + "</div>"


def _targets_table(targets, critical, log_links) -> str:
    rows = []
    for t in targets:
        colour = STATUS_COLOURS.get(t["status"], "#555")
        how = "executed" if t["executed"] else "cached" if t["cached"] else "-"
        executor = t["executor"] if t["executed"] or t["status"] == "failed" else (f"cache ({t['source']})" if t["cached"] and t["source"] else "-")
        log = f"<a href='{_e(log_links[t['label']])}'>log</a>" if t["label"] in log_links else ""
        label = f"<span class='crit' title='on the critical path'>{_e(t['label'])}</span>" if t["label"] in critical else _e(t["label"])
        error = f"<div><code>{_e(t['error'])}</code></div>" if t.get("error") else ""
        rows.append(f"<tr class='target' data-label='{_e(t['label'])}'><td>{label}{error}</td>"
                    f"<td><span class='status' style='background:{colour}'>{_e(t['status'])}</span></td>"
                    f"<td>{how}</td><td class='num'>{t['duration']:.2f}s</td><td>{_e(executor)}</td>"
                    f"{_cost_cell(t)}<td>{log}</td></tr>")
    head = ("<tr><th>target</th><th>status</th><th>cached or executed</th><th>duration</th><th>executor</th>"
            "<th>cost (recorded)</th><th>log</th></tr>")
    return f"<table id='targets'>{head}{''.join(rows)}</table>"


def _cost_cell(t) -> str:
    """What producing the target's result cost, as its manifest recorded it (for a cached result: when it was
    built); the full record in the title. The record is a file: the cost is read through trust.valid_cost."""
    if not isinstance(t.get("cost"), dict):
        return "<td class='cost'>-</td>"
    cost = valid_cost(t["cost"])
    return f"<td class='cost' title='{_e(describe_cost(cost))}'>{_e(brief_cost(cost))}</td>"


def _timeline(targets, critical) -> str:
    shown = [t for t in targets if t["status"] != "not built"]
    if not shown:
        return "<p>nothing ran</p>"
    span = max(max(t["end"] for t in shown), 1e-3)
    left, width, row = 230, 640, 22
    height = row * len(shown) + 30
    parts = [f"<svg id='timeline' xmlns='http://www.w3.org/2000/svg' width='{left + width + 20}' height='{height}'>"]
    for i in range(6):
        x = left + width * i / 5
        parts.append(f"<line x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{height - 20}' stroke='#eaeef2'/>"
                     f"<text x='{x:.1f}' y='{height - 5}' text-anchor='middle' fill='#57606a'>{_seconds(span * i / 5, span)}</text>")
    for n, t in enumerate(sorted(shown, key=lambda t: t["start"])):
        y = n * row + 4
        x = left + width * max(t["start"], 0) / span
        w = max(width * (t["end"] - max(t["start"], 0)) / span, 2)
        crit = t["label"] in critical
        stroke = f" stroke='{CRITICAL_COLOUR}' stroke-width='2'" if crit else ""
        bold = " font-weight='bold'" if crit else ""
        parts.append(f"<text x='{left - 8}' y='{y + 13}' text-anchor='end'{bold}>{_e(t['label'])}</text>"
                     f"<rect x='{x:.1f}' y='{y}' width='{w:.1f}' height='{row - 8}' rx='3' fill='{STATUS_COLOURS.get(t['status'], '#555')}'{stroke}>"
                     f"<title>{_e(t['label'])}: {t['status']}, {t['duration']:.2f}s</title></rect>")
    parts.append("</svg>")
    legend = ("<p>Critical path (violet outline): " + " &rarr; ".join(_e(l) for l in critical) + "</p>") if critical else ""
    return "".join(parts) + legend


def _metrics(targets) -> str:
    rows = []
    for t in targets:
        for file, data in sorted((t.get("metrics") or {}).items()):
            for key, value in _flatten(data):
                rows.append(f"<tr><td>{_e(t['label'])}</td><td>{_e(file)}</td><td>{_e(key)}</td>"
                            f"<td class='num'>{_e(_fmt(value))}</td></tr>")
    if not rows:
        return "<p>no metrics recorded</p>"
    return ("<table id='metrics'><tr><th>target</th><th>file</th><th>metric</th><th>value</th></tr>"
            + "".join(rows) + "</table>")


def _plots(targets) -> str:
    """Each plot definition (DVC's x, y, template, title...): the data file or named plot and its properties."""
    rows = []
    for t in targets:
        plots = t.get("plots")
        for plot in plots if isinstance(plots, list) else ():
            if not isinstance(plot, dict):  # the record is a file: shown only in the shape it was written
                continue
            props = plot.get("props")
            shown = "; ".join(f"{k}: {json.dumps(v, sort_keys=True, default=str)}"
                              for k, v in sorted(props.items(), key=lambda kv: str(kv[0]))) \
                if isinstance(props, dict) and props else "default (x: row index, y: last column)"
            rows.append(f"<tr class='plot'><td>{_e(t['label'])}</td><td>{_e(plot.get('path', ''))}</td>"
                        f"<td><code>{_e(shown)}</code></td></tr>")
    if not rows:
        return "<p>no plots defined</p>"
    return ("<table id='plots'><tr><th>target</th><th>plot</th><th>definition</th></tr>" + "".join(rows) + "</table>")


def _flatten(data, prefix: str = ""):
    if isinstance(data, dict):
        for key, value in sorted(data.items(), key=lambda kv: str(kv[0])):
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".") or "(value)", data


def _seconds(value: float, span: float) -> str:
    if span < 0.5:
        return f"{value * 1000:.0f}ms"
    return f"{value:.1f}s" if span < 60 else f"{value:.0f}s"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _e(text) -> str:
    return html.escape(str(text), quote=True)
