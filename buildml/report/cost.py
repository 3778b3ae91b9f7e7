"""Recorded cost as text, one reading for `buildml show`, the HTML report and `buildml cache stats`.

A cost is trust.valid_cost's dict: wall_s, cpu_s, peak_rss_bytes, executor, resources, output_bytes, each None
when the executor could not measure it (said as "unknown", never shown as 0).
"""

from __future__ import annotations


def gpu_hours(cost: dict) -> float | None:
    """wall x declared gpus, in hours: 0 when none were declared, None when the wall time is unknown."""
    gpus = (cost.get("resources") or {}).get("gpus") or 0
    if not gpus:
        return 0.0
    return None if cost.get("wall_s") is None else cost["wall_s"] * gpus / 3600


def describe(cost: dict) -> str:
    """'wall 1.20s, cpu 0.95s, peak memory 52.1 MiB, outputs 12.0 KiB, on local' (+ declared resources, GPU-hours)."""
    parts = [f"wall {seconds(cost.get('wall_s'))}", f"cpu {seconds(cost.get('cpu_s'))}",
             f"peak memory {size(cost.get('peak_rss_bytes'))}", f"outputs {size(cost.get('output_bytes'))}"]
    resources = cost.get("resources") or {}
    if resources:
        held = [f"{name} {size(v) if name == 'memory' else f'{v:g}'}" for name, v in sorted(resources.items())]
        parts.append("declared " + " ".join(held))
    hours = gpu_hours(cost)
    if hours != 0.0:
        parts.append("GPU-hours " + ("unknown" if hours is None else f"{hours:.4g}"))
    executor = cost.get("executor")
    return ", ".join(parts) + (f", on {executor}" if executor else "")


def brief(cost: dict) -> str:
    """The short form for a table cell: 'cpu 0.95s, peak 52.1 MiB' (+ ', 0.01 GPU-h' when GPUs were declared)."""
    text = f"cpu {seconds(cost.get('cpu_s'))}, peak {size(cost.get('peak_rss_bytes'))}"
    hours = gpu_hours(cost)
    return text + ("" if hours == 0.0 else f", {'unknown' if hours is None else f'{hours:.3g}'} GPU-h")


def _hours(value: float, what: str) -> str:
    """'0.0012 CPU-hours (4.32s)'; '0 GPU-hours' for none."""
    return f"{value / 3600:.4f} {what}-hours ({seconds(value)})" if value else f"0 {what}-hours"


def seconds(value) -> str:
    """1.23s, 12m 5s, 3h 2m; 'unknown' for None."""
    if value is None:
        return "unknown"
    if value < 60:
        return f"{value:.2f}s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    return f"{minutes // 60}h {minutes % 60}m"


def size(value) -> str:
    """Bytes as '512 bytes', '12.0 KiB', '52.1 MiB', '1.5 GiB'; 'unknown' for None."""
    if value is None:
        return "unknown"
    if value < 1024:
        return f"{value} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def totals(sums: dict | None) -> str:
    """`buildml cache stats`' cost line from ManifestIndex.cost_totals, saying how many entries each sum misses."""
    if not sums or not sums["entries"]:
        return "recorded cost: (no entries)"
    n = sums["entries"]
    line = (f"recorded cost of {n} entr{'y' if n == 1 else 'ies'}: {_hours(sums['cpu_s'], 'CPU')}, "
            f"{_hours(sums['gpu_s'], 'GPU')}, {_hours(sums['wall_s'], 'wall')}, outputs {size(sums['output_bytes'])}")
    gaps = []
    if sums["entries"] > sums["with_cost"]:
        gaps.append(f"{sums['entries'] - sums['with_cost']} without a recorded cost")
    if sums["with_cost"] > sums["cpu_known"]:
        gaps.append(f"CPU time unknown for {sums['with_cost'] - sums['cpu_known']}")
    return line + (f" ({'; '.join(gaps)})" if gaps else "")
