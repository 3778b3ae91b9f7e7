"""`--param KEY=VALUE`: which selected params a build overrode, as run reasons and as provenance."""

from __future__ import annotations

import dataclasses

from buildml.events import Outcome
from buildml.load.params import _MISSING, lookup
from buildml.load.plain import to_plain

UNSET = "<unset>"


def overrides_of(action, params) -> list[dict]:
    """[{param, file, from, to}] for each key the action selects that --param set to another value."""
    found = []
    overrides = getattr(params, "overrides", None) or {}
    for file, keys in action.spec.params:
        for key in overrides:
            try:
                if not params.covers(file, keys, key):
                    continue
            except Exception:  # the file is gone: it was read (or refused) when the action was made
                continue
            try:
                old = lookup(params._data(file), key)
            except Exception:  # the file is gone: it was read (or refused) when the action was made
                old = _MISSING
            old = UNSET if old is _MISSING else old
            if old != overrides[key]:
                old = to_plain(old)  # a date in the file (the override replaced it) -> its ISO text, for the manifest
                found.append({"param": key, "file": file, "from": old, "to": overrides[key]})
    return found


def with_override_reasons(decision, action, params):
    """A RUN decision whose reasons say which params were overridden (replacing their 'changed' reasons)."""
    found = overrides_of(action, params)
    if not found or decision.what != Outcome.RUN:
        return decision
    named = tuple(f"param {o['param']} overridden ({o['from']} -> {o['to']})" for o in found)
    changed = tuple(f"param {o['param']} changed" for o in found)
    rest = tuple(r for r in decision.reasons if not r.startswith(changed))
    return dataclasses.replace(decision, reasons=named + rest)
