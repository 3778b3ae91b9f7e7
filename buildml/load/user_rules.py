"""Your own kinds: rule modules in the workspace (`rules:` in buildml.yaml) and templates (`templates:`)."""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback

from buildml.action import ActionSpec
from buildml.errors import BuildmlError, LoadError, Location, did_you_mean
from buildml.hashing import digest_file
from buildml.load.schema import Rule, check_value
from buildml.load.workspace import ROOT_FILE, normalize_relpath

_KIND = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MODULE_PREFIX = "buildml_workspace_rules"


def workspace_rules(ws, builtin) -> list:
    """builtin plus the kinds the workspace's buildml.yaml registers (rule modules, then templates)."""
    raw, doc = ws.settings.raw, ws.settings.doc
    rules = {r.kind: r for r in builtin}
    builtin_kinds = set(rules)
    for kind, path in _mapping(raw, "rules", doc).items():
        _check_kind(kind, rules, builtin_kinds, doc, ("rules", kind))
        rules[kind] = load_rule_module(ws.root, kind, path, doc)
    for name, preset in _mapping(raw, "templates", doc).items():
        _check_kind(name, rules, builtin_kinds, doc, ("templates", name))
        rules[name] = make_template(name, preset, rules, doc)
    return list(rules.values())


def _mapping(raw: dict, key: str, doc) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        example = "rules: {my_kind: rules/my_kind.py}" if key == "rules" else "templates: {gpu_model: {kind: model, resources: {gpus: 1}}}"
        raise LoadError(f"{key} must be a mapping", location=_where(doc, (key,)), hint=f"e.g. {example}")
    return value


def _where(doc, path):
    return doc.where(path) if doc is not None else Location(ROOT_FILE)


def _check_kind(kind, rules, builtin_kinds, doc, path) -> None:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise LoadError(f"invalid kind name {kind!r}", location=_where(doc, path), hint="letters, digits, _ and -")
    if kind in builtin_kinds:
        raise LoadError(f"kind {kind!r} is built in", location=_where(doc, path), hint="give your kind another name")
    if kind in rules:
        raise LoadError(f"kind {kind!r} is defined twice (under rules and templates)", location=_where(doc, path))


# -- rule modules --------------------------------------------------------------------------------
def load_rule_module(root, kind: str, path, doc) -> Rule:
    """Import the workspace file `path` and return an instance of its Rule subclass, registered as `kind`."""
    where = _where(doc, ("rules", kind))
    if not isinstance(path, str) or not path.endswith(".py"):
        raise LoadError(f"rule {kind!r} must name a .py file, not {path!r}", location=where, field=f"rules.{kind}",
                        hint=f"e.g. rules: {{{kind}: rules/{kind}.py}}")
    rel = normalize_relpath("", path, where, f"rules.{kind}")
    full = root / rel
    if not full.is_file():
        raise LoadError(f"rule module {rel} (kind {kind!r}) does not exist", location=where, field=f"rules.{kind}",
                        hint="create it (see README: Your own kinds), or fix the path; paths are relative to the workspace root")
    module = _import(kind, rel, str(full))
    cls = _rule_class(module, kind, rel)
    rule = _call(rel, str(full), f"creating {cls.__name__}", cls)
    rule.kind = kind
    rule.version = f"{cls.version}+{digest_file(str(full))[:12]}"  # editing the module re-runs its targets
    rule.analyse = _guarded(rule.analyse, rel, str(full), "analyse()", check_spec=True)
    rule.validate = _guarded(rule.validate, rel, str(full), "validate()")
    return rule


def _import(kind: str, rel: str, full: str):
    name = f"{_MODULE_PREFIX}.{kind.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"rule module {rel} has a syntax error: {exc.msg}", location=Location(rel, exc.lineno or 0, exc.offset or 0),
                        hint="fix the Python file registered under rules: in buildml.yaml") from None
    except BaseException as exc:  # anything the module raises while importing
        sys.modules.pop(name, None)
        raise _failure(rel, full, "importing it", exc) from None
    return module


def _rule_class(module, kind: str, rel: str):
    found = [c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, Rule) and c is not Rule and c.__module__ == module.__name__]
    chosen = [c for c in found if c.kind == kind] or found
    if len(chosen) != 1:
        what = "defines no subclass of buildml.rule.Rule" if not chosen else \
            "defines several Rule subclasses (" + ", ".join(c.__name__ for c in chosen) + ")"
        raise LoadError(f"rule module {rel} {what}", location=Location(rel),
                        hint=f"define one `class MyKind(Rule)` with kind = {kind!r} and an analyse() (see rules/command.py)")
    if chosen[0].analyse is Rule.analyse:
        raise LoadError(f"rule {chosen[0].__name__} in {rel} has no analyse() method", location=Location(rel),
                        hint="return self.base_spec(target, argv) from analyse(self, target)")
    return chosen[0]


def _failure(rel: str, full: str, doing: str, exc: BaseException) -> LoadError:
    """A LoadError naming the file and the line of it where exc was raised."""
    line = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == full:
            line = frame.lineno or 0
    return LoadError(f"rule module {rel} failed while {doing}: {type(exc).__name__}: {exc}",
                     location=Location(rel, line), hint="fix the Python file registered under rules: in buildml.yaml")


def _call(rel, full, doing, fn, *args):
    try:
        return fn(*args)
    except BuildmlError:
        raise
    except Exception as exc:
        raise _failure(rel, full, doing, exc) from None


def _guarded(method, rel: str, full: str, doing: str, check_spec: bool = False):
    """The rule's method, with exceptions from the user's code turned into LoadErrors naming the file."""
    def call(*args, **kwargs):
        result = _call(rel, full, doing, method, *args, **kwargs)
        if check_spec and not isinstance(result, ActionSpec):
            raise LoadError(f"analyse() in {rel} returned {type(result).__name__}, not an ActionSpec",
                            location=Location(rel), hint="return self.base_spec(target, argv)")
        return result

    return call


# -- templates -------------------------------------------------------------------------------------
class TemplateRule(Rule):
    """An existing kind with preset attributes; a target's own values win (mappings are merged key by key)."""

    def __init__(self, name: str, base: Rule, preset: dict):
        self.kind, self.base, self.preset = name, base, preset
        self.version = base.version

    def schema(self) -> dict:
        return self.base.schema()

    def validate(self, name, raw, doc, path, package):
        merged = {k: v for k, v in self.preset.items()}
        for key, value in raw.items():
            if key == "kind":
                continue
            base = merged.get(key)
            merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(value, dict) else value
        return self.base.validate(name, merged, doc, path, package)

    def analyse(self, target):
        return self.base.analyse(target)


def make_template(name: str, preset, rules: dict, doc) -> TemplateRule:
    """Validate a `templates:` entry (its kind and each preset field) at its place in buildml.yaml."""
    path = ("templates", name)
    if not isinstance(preset, dict) or "kind" not in preset:
        raise LoadError(f"template {name!r} needs a kind", location=_where(doc, path),
                        hint="e.g. templates: {gpu_model: {kind: model, resources: {gpus: 1}}}")
    base = rules.get(preset["kind"]) if isinstance(preset["kind"], str) else None
    if base is None:
        raise LoadError(f"template {name!r}: unknown kind {preset['kind']!r}", location=_where(doc, path + ("kind",)),
                        hint=did_you_mean(str(preset["kind"]), rules) or "kinds: " + ", ".join(sorted(rules)))
    schema = base.schema()
    fields = {}
    for key, value in preset.items():
        if key == "kind":
            continue
        attr = schema.get(key)
        if attr is None:
            raise LoadError(f"unknown field {key!r} for kind {preset['kind']!r}", location=_where(doc, path + (key,)),
                            field=f"templates.{name}", hint=did_you_mean(str(key), schema) or "fields: " + ", ".join(sorted(schema)))
        if attr.type in _CHECKED_TYPES:
            check_value(attr, value, doc, path + (key,), f"templates.{name}.{key}", "")
        fields[key] = value
    return TemplateRule(name, base, fields)


_CHECKED_TYPES = ("string", "command", "strings", "params", "env", "bool", "number", "mapping", "resources", "label")
