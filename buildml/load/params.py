"""Params files (DVC form): read them, select declared keys, write the selected subset."""

from __future__ import annotations

import copy
import json
import os

import yaml

from buildml.errors import UserError, did_you_mean
from buildml.load.plain import problem
from buildml.load.yamlsrc import load_yaml_file

_MISSING = object()


class ParamsReader:
    """Reads each params file once per build; applies command-line overrides.

    YAML and JSON files, TOML (`.toml`) and Python (`.py`: top-level constants and class attributes), the
    formats DVC reads. `keys == ()` selects the whole file (`- other.yaml:` in params).
    """

    def __init__(self, root, overrides: dict | None = None):
        self.root = str(root)
        self.overrides = overrides or {}  # "train.lr" -> value (applies to every params file)
        self._files: dict = {}
        self._docs: dict = {}  # relpath -> its yamlsrc.Document, for the line of a bad value
        self._effective: dict = {}  # relpath -> its data with the overrides applied

    def _data(self, relpath: str):
        if relpath not in self._files:
            full = os.path.join(self.root, relpath)
            if not os.path.exists(full):
                raise UserError(f"params file {relpath} does not exist", hint="create it, or fix the target's params")
            data, doc = read_params_file(full, relpath)
            if data is not None and not isinstance(data, dict):
                raise UserError(f"params file {relpath} must hold a mapping")
            self._files[relpath], self._docs[relpath] = data or {}, doc
        return self._files[relpath]

    def effective(self, relpath: str) -> dict:
        """The file's data with each override set where its parent is a mapping of the file."""
        if relpath not in self._effective:
            data = copy.deepcopy(self._data(relpath))
            for key, value in self.overrides.items():
                if key in data:
                    data[key] = value
                    continue
                *parents, last = key.split(".")
                node = data
                for part in parents:
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict) and (parents or last in node):
                    node[last] = value
            self._effective[relpath] = data
        return self._effective[relpath]

    def covers(self, relpath: str, keys, override: str) -> bool:
        """True when the selection `keys` of relpath includes the param `override` (itself, or a section above it)."""
        if not keys:
            return override.split(".")[0] in self._data(relpath) or override in self._data(relpath)
        return any(override == k or override.startswith(k + ".") for k in keys)

    def select(self, relpath: str, keys, who: str = "") -> dict:
        """{key: value} for the selected dotted keys (every top-level key for ()); a missing key is an error naming it."""
        data = self.effective(relpath)
        out = {}
        for key in keys or list(data):
            if key in self.overrides:
                out[key] = self.overrides[key]
                continue
            value = lookup(data, key)
            if value is _MISSING:
                raise UserError(f"param {key!r} not found in {relpath}" + (f" (needed by {who})" if who else ""),
                                hint=did_you_mean(key, flat_keys(data)) or f"add it to {relpath} or drop it from params")
            self._check(relpath, data, key, value)
            out[key] = value
        return out

    def _check(self, relpath: str, data, key: str, value) -> None:
        """A UserError at the value's line when a selected value is not plain data (it could not be keyed)."""
        found = problem(value)
        if found is None:
            return
        sub, what = found
        path = ((key,) if key in data else tuple(key.split("."))) + sub
        shown = ".".join([key, *map(str, sub)])
        where = self._docs[relpath].where(path) if self._docs[relpath] is not None else None
        raise UserError(f"param {shown!r} in {relpath} is {what}", location=where, hint=_PLAIN_HINT)


def read_params_file(full: str, relpath: str):
    """(data, yamlsrc.Document or None) of a params file, by its extension as DVC reads them."""
    if relpath.endswith(".toml"):
        import tomllib

        try:
            with open(full, "rb") as f:
                return tomllib.load(f), None
        except (OSError, ValueError) as exc:
            raise UserError(f"params file {relpath} is not valid TOML: {exc}", hint="fix its syntax") from None
    if relpath.endswith(".py"):
        return _python_params(full, relpath), None
    doc = load_yaml_file(full, relpath)  # JSON is YAML too
    return doc.data, doc


def _python_params(full: str, relpath: str) -> dict:
    """Top-level constants and class attributes (`Train.lr`) of a Python params file, read without running it."""
    import ast

    try:
        with open(full, encoding="utf-8") as f:
            tree = ast.parse(f.read(), relpath)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"params file {relpath} cannot be read as Python: {exc}", hint="fix its syntax") from None

    def assigned(body) -> dict:
        found = {}
        for node in body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except (ValueError, TypeError, SyntaxError, RecursionError):
                        pass  # not a literal: DVC skips it too
            if isinstance(node, ast.ClassDef):
                found[node.name] = assigned(node.body)
        return found

    return assigned(tree.body)


def lookup(data, dotted: str):
    node = data
    if isinstance(data, dict) and dotted in data:
        return data[dotted]
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def flat_keys(data, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{prefix}{k}"
            keys.append(name)
            keys.extend(flat_keys(v, name + "."))
    return keys


def nest(selected: dict) -> dict:
    """{'train.lr': 1} -> {'train': {'lr': 1}}: the shape scripts expect."""
    out: dict = {}
    for dotted, value in selected.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def write_subset(path: str, selected: dict) -> None:
    """Write only the selected keys, so an action cannot read what it did not declare (in the file's own format)."""
    data = nest(selected)
    with open(path, "w") as f:
        if path.endswith(".json"):
            json.dump(data, f, indent=2, sort_keys=True)
        elif path.endswith(".toml"):
            import tomli_w

            f.write(tomli_w.dumps(data))
        elif path.endswith(".py"):
            f.write(_python_source(data))
        else:
            yaml.safe_dump(data, f, sort_keys=True)


def _python_source(data: dict) -> str:
    """A Python params file holding data: mappings at the top become classes, as DVC reads them."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) and k.isidentifier() for k in value):
            lines.append(f"class {key}:")
            lines.extend(f"    {k} = {v!r}" for k, v in value.items())
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


_PLAIN_HINT = "params are plain data (strings, numbers, lists, mappings): quote the value or its keys, e.g. '2024-01-01'"


def parse_override(text: str) -> tuple[str, object]:
    """'train.lr=0.05' -> ('train.lr', 0.05): the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"invalid --param {text!r}", hint="use KEY=VALUE, e.g. --param train.lr=0.05")
    return key.strip(), parse_value(value, "--param", key.strip())


def parse_value(text: str, flag: str, key: str):
    """A command-line param value read as YAML; a UserError naming the flag when it is not YAML or not plain data."""
    try:
        value = yaml.safe_load(text)
        found = problem(value)
        reason = f"is {found[1]}" if found else ""
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: 2024-13-45, a 5000-digit int
        reason = "is not a YAML value: " + (getattr(exc, "problem", None) or str(exc).split(";")[0])
    if not reason:
        return value
    example = f"{flag} \"{key}='{text}'\"" if len(text) <= 40 else f"{flag} \"{key}='...'\""
    raise UserError(f"invalid {flag} {key}={text:.40}: the value {reason}",
                    hint=f"quote it to pass a string ({example}); params are plain data: strings, numbers, lists, mappings")
