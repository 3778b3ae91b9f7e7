"""Measured download bandwidth per remote cache, kept beside the local cache (`bandwidth.json`).

Every remote download of at least MIN_BYTES adds a sample (bytes over seconds, the whole transfer, so per-request
latency counts as it does for the next fetch); the estimate is an exponentially weighted mean, so it follows a link
that changed. Only a cache: a file that does not parse is started again. It feeds the fetch-or-rebuild decision
(engine/fetch_or_rebuild.py).
"""

from __future__ import annotations

import json
import math
import os
import threading

FILE = "bandwidth.json"
MIN_BYTES = 256 << 10  # smaller transfers measure latency, not bandwidth
WEIGHT = 0.5  # of the newest sample
_LOCK = threading.Lock()


def _read(root) -> dict:
    try:
        data = json.loads((root / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def estimate(root, url: str) -> float | None:
    """Bytes per second measured downloading from url, or None before any large enough download."""
    value = _read(root).get(url)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and value > 0 else None


def record(root, url: str, nbytes: int, seconds: float) -> None:
    """Add one download to url's estimate (ignored when too small to measure bandwidth)."""
    if nbytes < MIN_BYTES or seconds <= 0:
        return
    sample = nbytes / seconds
    with _LOCK:
        data = _read(root)
        old = estimate(root, url)
        data[url] = sample if old is None else WEIGHT * sample + (1 - WEIGHT) * old
        tmp = root / f".{FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            tmp.write_text(json.dumps(data, sort_keys=True))
            os.replace(tmp, root / FILE)
        except OSError:
            pass  # only a cache
