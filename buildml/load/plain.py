"""Plain data, the values JSON holds as they are: find what is not (params), or convert it (metrics, records).

YAML also reads dates and times, `!!binary` bytes and mappings whose keys mix types; none of them
can enter an action key or a manifest as they are.
"""

from __future__ import annotations

import base64
import datetime
import json

_SCALARS = (str, int, float, bool, type(None))
_NAMES = {datetime.datetime: "a timestamp", datetime.date: "a date", bytes: "a !!binary value"}


def problem(value, path: tuple = ()) -> tuple | None:
    """(key path, what it is) of the first part of value that is not plain data, or None when all of it is."""
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        try:
            sorted(value)  # JSON with sorted keys (the action key) cannot order 1 and "b"
        except TypeError:
            return path, "a mapping whose keys mix " + " and ".join(sorted({type(k).__name__ for k in value}))
        items = value.items()
    else:
        return path, f"{_NAMES.get(type(value), 'a ' + type(value).__name__)} ({value!r:.40})"
    for key, item in items:
        found = problem(item, path + (key,))
        if found:
            return found
    return None


def to_plain(value):
    """value itself when plain; else dates as ISO 8601 text, !!binary as base64 text, keys as JSON writes them."""
    if problem(value) is None:
        return value
    return _convert(value)


def _convert(value):
    if isinstance(value, dict):
        return {_key(k): _convert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_convert(v) for v in value]
    if isinstance(value, datetime.date):  # a datetime too
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value if isinstance(value, _SCALARS) else str(value)


def _key(key) -> str:
    """A mapping key as json.dumps writes it: 1 -> "1", true -> "true", null -> "null"."""
    if isinstance(key, str):
        return key
    return json.dumps(key) if isinstance(key, (int, float, bool, type(None))) else str(key)
