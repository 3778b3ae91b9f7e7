"""`python -m buildml.gate METRIC>=VALUE ...`: check metrics from the JSON/YAML files in the current tree.

Run inside a test action's sandbox: it reads every *.json / *.yaml metrics file staged there.
"""

from __future__ import annotations

import json
import operator
import os
import re
import sys

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^(.+?)(>=|<=|==|!=|>|<)(-?[0-9.eE+-]+)$")


def load_metrics(root: str) -> dict:
    """Every metric found in JSON/YAML files under root, by dotted key (files read in sorted order)."""
    import yaml

    found: dict = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if not name.endswith((".json", ".yaml", ".yml")) or name.startswith("params."):
                continue
            try:
                with open(os.path.join(dirpath, name)) as f:
                    data = json.load(f) if name.endswith(".json") else yaml.safe_load(f)
            except (OSError, ValueError, yaml.YAMLError):
                continue
            _flatten(data, "", found)
    return found


def _flatten(data, prefix: str, out: dict) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(v, f"{prefix}{k}.", out)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out.setdefault(prefix[:-1], data)


def check(conditions: list[str], metrics: dict) -> list[str]:
    """Failure lines; empty when every condition holds."""
    failures = []
    for text in conditions:
        m = _CONDITION.match(text)
        if not m:
            failures.append(f"invalid condition {text!r}")
            continue
        name, op, value = m.group(1), m.group(2), float(m.group(3))
        if name not in metrics:
            failures.append(f"metric {name!r} not found (have: {', '.join(sorted(metrics)) or 'none'})")
        elif not _OPS[op](metrics[name], value):
            failures.append(f"metric {name} = {metrics[name]} fails {op} {value:g}")
        else:
            print(f"ok: {name} = {metrics[name]} {op} {value:g}")
    return failures


def main(argv=None) -> int:
    root = os.environ.get("BUILDML_WORKSPACE", ".")
    failures = check(list(argv if argv is not None else sys.argv[1:]), load_metrics(root))
    for line in failures:
        print(f"FAIL: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
