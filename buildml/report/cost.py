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
