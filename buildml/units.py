"""Sizes in bytes: the one reading of '4GB', '512m', '1.5GiB' (resources.memory, executor capacities,
`buildml cache gc --max-size`).

K, M, G and T are powers of 1024, with or without B or iB, in any case: 4GB = 4g = 4Gi = 4GiB = 4 * 2**30.
Docker and Kubernetes agree on the binary forms (Kubernetes' `4Gi`, Docker's `--memory 4g`) and disagree
only on a bare G: Docker reads it as 2**30, Kubernetes as 10**9. buildml takes Docker's reading because
sizes here are mostly memory, which is sized in powers of two (Docker, the JVM, Slurm), because it is what
`resources.memory` has always meant (a decimal reading would cut every container's memory limit by 7%
and could kill builds that pass today), and because it leaves no unit meaning two things. So a
Kubernetes `16G` asks for 7% more here, never less. Plain numbers are bytes.
"""

from __future__ import annotations

import math

_UNITS = {"": 1, "b": 1}
_UNITS.update({letter + suffix: 1024 ** power for power, letter in enumerate("kmgt", 1) for suffix in ("", "b", "i", "ib")})


def parse_size(value) -> int:
    """'4GB', '512m', '1.5GiB', 1024 -> bytes; ValueError for anything else (negative, inf, nan, unknown unit)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(num):]
        try:
            size = float(num) * _UNITS[unit] if unit in _UNITS else -1.0
        except ValueError:
            size = -1.0
        if math.isfinite(size) and size >= 0:  # not 'inf', 'nan', '1e999' or '-1GB'
            return int(size)
    raise ValueError(f"invalid size {value!r}")
