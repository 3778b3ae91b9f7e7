"""The rule interface: attribute schemas, validation with locations, and the rule registry.

Built-in kinds live in `buildml/rules/` and use only this module, the
same interface a workspace's own rules use.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from types import MappingProxyType

from buildml.action import ActionSpec
from buildml.hashing import canonical_json
from buildml.errors import LazyLocation, LoadError, did_you_mean
from buildml.labels import Label, parse_label
from buildml.errors import LabelError
from buildml.trust import RESERVED
from buildml import units
from buildml.load.workspace import normalize_relpath


@dataclass(frozen=True)
class Attr:
    """One attribute of a kind: its type, default, and a line of documentation."""

    type: str  # string | command | strings | outs | params | env | bool | number | mapping | label | resources
    doc: str = ""
    default: object = None
    required: bool = False
    choices: tuple = ()  # the values a string attribute may take, when it is one of a few


@dataclass(frozen=True)
class Target:
    """A validated target as loaded from a BUILD file."""

    label: Label
    kind: str
    attrs: MappingProxyType
    doc: object  # the yamlsrc.Document it came from
    path: tuple  # its key path in that document

    def where(self, *attr_path):
        """Location of this target or one of its attributes (resolved only when shown)."""
        return LazyLocation(self.doc, self.path + attr_path)

    def get(self, name, default=None):
        return self.attrs.get(name, default)


COMMON_ATTRS = {
    "kind": Attr("string", "the rule: command (default), test, ..."),
    "doc": Attr("string", "a line describing the target"),
    "deps": Attr("strings", "what the target reads: labels, files, directories, globs (!pattern excludes)"),
    "exclude": Attr("strings", "globs removed from deps"),
    "outs": Attr("outs", "files or directories the command produces, relative to the package; "
                         "an entry may be {path: {cache: false, persist: true, push: false}}"),
    "metrics": Attr("outs", "outs that are JSON/YAML metrics files"),
    "plots": Attr("outs", "outs that are plot data or images; {path: {x: .., y: .., template: ..}} gives the plot"),
    "params": Attr("params", "selected keys of params.yaml: [train.lr], [{other.yaml: [key]}], [{other.yaml: null}] "
                             "for the whole file"),
    "env": Attr("env", "environment variables the command sees; part of the key"),
    "secrets": Attr("strings", "names of caller env vars passed to the command, never keyed or logged"),
    "secrets_in_outputs": Attr("bool", "outs may hold a secret's value (default false: that fails the action)"),
    "resources": Attr("resources", "cpus, gpus, memory the action needs"),
    "timeout": Attr("number", "seconds before the action is killed"),
    "executor": Attr("string", "local (default), or a named executor from buildml.yaml"),
    "image": Attr("label", "label of an image target to run in"),
    "network": Attr("bool", "allow network access in containers (default false)", default=False),
    "tags": Attr("strings", "free-form tags"),
    "tolerance": Attr("mapping", "metric: allowed absolute difference when `buildml verify` re-runs the target"),
    "wdir": Attr("string", "directory the command runs in, relative to the package (paths stay package-relative)"),
    "always_changed": Attr("bool", "run on every build, never taken from the cache (DVC's always_changed)"),
    "frozen": Attr("bool", "never re-run while its last outputs are in place, whatever changed (DVC's frozen)"),
    "cache": Attr("mapping", "{prefer: auto|fetch|rebuild}: for a remote hit, fetch its outputs, rebuild here, or "
                             "(auto, default) rebuild only when clearly cheaper by its recorded cost; not keyed"),
    "python_deps": Attr("string", "auto: the workspace modules its declared .py deps import are deps too (a static "
                                  "scan, keyed, listed by explain); declared (default): only what deps name",
                        choices=("declared", "auto")),
}

# Options of a dict-form out entry ({path: {...}}), as DVC writes them; what each does is in OUT_FLAGS' docs.
OUT_FLAGS = {"cache": "false: not uploaded to a remote cache; a cached result is usable when the file in place "
                      "has the recorded bytes (e.g. committed to git)",
             "persist": "true: the previous version is in the sandbox when the command starts",
             "push": "false: never uploaded to a remote cache"}
OUT_META = ("desc", "type", "labels", "meta")  # descriptive only
PLOT_PROPS = ("x", "y", "template", "title", "x_label", "y_label", "header")


class Rule:
    """A target kind. Subclasses set `kind`, `version`, extra `attrs`, and implement analyse()."""

    kind = ""
    version = "1"
    attrs: dict = {}

    def schema(self) -> dict:
        return {**COMMON_ATTRS, **self.attrs}

    def validate(self, name: str, raw: dict, doc, path: tuple, package: str) -> dict:
        """Check every attribute against the schema; return the normalized values."""
        schema = self.schema()
        out = {}
        for key, value in raw.items():
            attr = schema.get(key)
            if attr is None:
                raise LoadError(f"unknown field {key!r} for kind {self.kind!r}", location=doc.where(path + (key,)),
                                field=f"{name}.{key}", hint=did_you_mean(str(key), schema) or "fields: " + ", ".join(sorted(schema)))
            if attr.type == "outs":
                out[key], options = _check_outs(value, doc, path + (key,), f"{name}.{key}", key == "plots")
                merged = out.setdefault("out_options", {}) if options else {}
                for p, o in options.items():
                    merged[p] = {**merged.get(p, {}), **o}
                continue
            out[key] = check_value(attr, value, doc, path + (key,), f"{name}.{key}", package)
        for key, attr in schema.items():
            if attr.required and key not in out:
                raise LoadError(f"missing required field {key!r} for kind {self.kind!r}", location=doc.where(path),
                                field=name, hint=attr.doc)
            if key not in out and attr.default is not None:
                out[key] = attr.default
        return out

    def analyse(self, target: Target) -> ActionSpec:  # pragma: no cover - interface
        raise NotImplementedError

    # helpers for subclasses ----------------------------------------------------
    def base_spec(self, target: Target, argv: tuple, **extra) -> ActionSpec:
        """The ActionSpec fields every command-like kind shares."""
        a = target.attrs
        pkg = target.label.package
        outs = tuple(out_path(pkg, o, target.where("outs", i), "outs") for i, o in enumerate(a.get("outs", ())))
        metrics = tuple(out_path(pkg, m, target.where("metrics", i), "metrics") for i, m in enumerate(a.get("metrics", ())))
        plots = tuple(out_path(pkg, m, target.where("plots", i), "plots") for i, m in enumerate(a.get("plots", ())))
        outs = outs + tuple(m for m in metrics + plots if m not in outs)
        options = {out_path(pkg, p, target.where(), "outs"): o for p, o in a.get("out_options", {}).items()}
        workdir = normalize_relpath(pkg, a["wdir"], target.where("wdir"), "wdir") if a.get("wdir") not in (None, ".") else pkg
        fields = dict(
            label=target.label, kind=self.kind, rule_version=self.version, argv=argv, workdir=workdir,
            deps=tuple(a.get("deps", ())), excludes=tuple(a.get("exclude", ())), outs=outs, metrics=metrics,
            params=params_files(target), env=tuple(sorted(thread_budget(a).items())),
            secrets=tuple(a.get("secrets", ())), image=a.get("image"), network=a.get("network", False),
            secrets_in_outputs=a.get("secrets_in_outputs", False),
            resources=tuple(sorted(a.get("resources", {}).items())), timeout=a.get("timeout"),
            executor=a.get("executor"), cacheable=not a.get("always_changed", False), frozen=a.get("frozen", False),
            prefer=cache_prefer(target),
            persist=tuple(p for p, o in options.items() if o.get("persist")),
            local_only=tuple(p for p, o in options.items() if o.get("cache") is False or o.get("push") is False),
            plots=tuple((p, canonical_json({k: v for k, v in options.get(p, {}).items() if k in PLOT_PROPS}).decode())
                        for p in plots) + tuple((name, canonical_json(props).decode())
                                                for name, props in a.get("plot_defs", ())),
        )
        fields.update(extra)
        return ActionSpec(**fields)


def cache_prefer(target) -> str | None:
    """The target's cache.prefer (None: the workspace's), checked."""
    cache = target.attrs.get("cache")
    if cache is None:
        return None
    where, name = target.where("cache"), target.label.name
    unknown = [k for k in cache if k != "prefer"]
    if unknown:
        raise LoadError(f"unknown cache setting {unknown[0]!r}", location=where, field=f"{name}.cache",
                        hint="a target's cache: takes prefer: auto, fetch or rebuild")
    prefer = cache.get("prefer")
    if prefer not in ("auto", "fetch", "rebuild"):
        raise LoadError(f"cache.prefer must be auto, fetch or rebuild, got {prefer!r:.60}", location=where,
                        field=f"{name}.cache.prefer", hint="fetch: always take a remote hit; rebuild: run it here "
                        "instead (unless it needs resources this machine lacks); auto: by the recorded cost")
    return prefer


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


def thread_budget(attrs) -> dict:
    """The target's env, with each of THREAD_VARS set to its `resources.cpus` (at least 1, whole cpus) where the
    env does not set it, as Snakemake does for `threads`: BLAS and OpenMP then use the cpus the action holds.
    Part of the key, as all env is."""
    env = dict(attrs.get("env", {}))
    cpus = dict(attrs.get("resources", {})).get("cpus")
    if cpus:
        for name in THREAD_VARS:
            env.setdefault(name, str(max(1, int(cpus))))
    return env


def out_path(package: str, path: str, where, field: str) -> str:
    """Workspace-relative form of an out or metrics path; never buildml's or git's own paths."""
    rel = normalize_relpath(package, path, where, field)
    parts = rel.split("/")
    owned = parts[0] if parts[0] in RESERVED else ".git" if ".git" in parts else ""
    if owned:
        raise LoadError(f"{'out' if field == 'outs' else 'metrics file'} {path!r} "
                        f"{'names' if parts[-1] == owned else 'lies inside'} {owned}, which belongs to "
                        f"{'git' if owned == '.git' else 'buildml'}", location=where, field=field,
                        hint="declare outputs elsewhere in the workspace, e.g. out/ or models/")
    return rel


def command_argv(command) -> tuple[str, ...]:
    """A string runs under `sh -c`; a list is argv."""
    if isinstance(command, str):
        return ("sh", "-c", command)
    return tuple(command)


def params_files(target: Target) -> tuple:
    """Normalize DVC-style params into ((file, (keys...)), ...), files workspace-relative; () keys = the whole file."""
    pkg = target.label.package
    by_file: dict = {}
    for i, item in enumerate(target.attrs.get("params", ())):
        if isinstance(item, str):
            file, keys = "params.yaml", [item]
        else:
            (file, keys), = item.items()
        path = normalize_relpath(pkg, file, target.where("params", i), "params")
        if keys is None or by_file.get(path, [0]) == []:  # the whole file, however else it is named
            by_file[path] = []
            continue
        by_file.setdefault(path, [])
        by_file[path].extend(k for k in keys if k not in by_file[path])
    return tuple((f, tuple(ks)) for f, ks in sorted(by_file.items()))


def _type_error(doc, path, field, expected, value):
    return LoadError(f"expected {expected}, got {type(value).__name__} {value!r:.60}", location=doc.where(path), field=field)


def check_value(attr: Attr, value, doc, path: tuple, field: str, package: str):
    """Validate and normalize one attribute value."""
    t = attr.type
    if t == "string":
        if not isinstance(value, str):
            raise _type_error(doc, path, field, "a string", value)
        if attr.choices and value not in attr.choices:
            raise LoadError(f"{value!r:.60} is not one of {', '.join(attr.choices)}", location=doc.where(path),
                            field=field, hint=did_you_mean(value, attr.choices) or attr.doc)
        return value
    if t == "command":
        if isinstance(value, str) and value.strip():
            return _no_nul(value, doc, path, field)
        if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
            return [_no_nul(str(v), doc, path + (i,), field) for i, v in enumerate(value)]
        raise _type_error(doc, path, field, "a command string or a non-empty list of arguments", value)
    if t == "strings":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _type_error(doc, path, field, "a list of strings", value)
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v:
                raise _type_error(doc, path + (i,), field, "a non-empty string", v)
            _no_nul(v, doc, path + (i,), field)
        return tuple(value)
    if t == "params":
        return _check_params(value, doc, path, field)
    if t == "env":
        if not isinstance(value, dict):
            raise _type_error(doc, path, field, "a mapping of NAME: value", value)
        env = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k or "=" in k or "\0" in k:
                raise LoadError(f"invalid environment variable name {k!r}", location=doc.where(path + (k,)), field=field)
            if not isinstance(v, _ENV_SCALARS):  # a list, a mapping, null, !!binary bytes
                raise _type_error(doc, path + (k,), f"{field}.{k}", "a string or number", v)
            env[k] = _no_nul(str(v).lower() if isinstance(v, bool) else str(v), doc, path + (k,), f"{field}.{k}")
        return env
    if t == "bool":
        if not isinstance(value, bool):
            raise _type_error(doc, path, field, "true or false", value)
        return value
    if t == "number":
        if not _finite(value) or not 0 < value <= NUMBER_MAX:
            raise _type_error(doc, path, field, f"a finite positive number (at most {NUMBER_MAX:g})", value)
        return value
    if t == "mapping":
        if not isinstance(value, dict):
            raise _type_error(doc, path, field, "a mapping", value)
        return value
    if t == "resources":
        return _check_resources(value, doc, path, field)
    if t == "label":
        if not isinstance(value, str):
            raise _type_error(doc, path, field, "a label like //images:train", value)
        try:
            return parse_label(value, package)
        except LabelError as exc:
            raise LoadError(exc.message, location=doc.where(path), field=field, hint=exc.hint) from None
    raise AssertionError(f"unknown attribute type {t}")


NUMBER_MAX = 1e9  # a timeout of ~31 years; threading timers overflow past ~9.2e9 s
_ENV_SCALARS = (str, int, float, datetime.date)  # bool is an int; a date reads as its ISO text


def _finite(value) -> bool:
    """A real int or float (not a bool), and not NaN or infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _no_nul(text: str, doc, path, field) -> str:
    if "\0" in text:
        raise LoadError(f"{text!r:.60} contains a NUL byte", location=doc.where(path), field=field,
                        hint="commands, paths and environment values cannot hold NUL (\\0)")
    return text


def _check_params(value, doc, path, field):
    if not isinstance(value, list):
        raise _type_error(doc, path, field, "a list like [train.lr, {other.yaml: [key]}]", value)
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            continue
        if isinstance(item, dict) and len(item) == 1:
            (file, keys), = item.items()
            if isinstance(file, str) and file and keys is None:  # `- other.yaml:`: the whole file, as in DVC
                continue
            if isinstance(file, str) and isinstance(keys, list) and all(isinstance(k, str) and k for k in keys):
                continue
        raise _type_error(doc, path + (i,), field, "a key like train.lr, {file.yaml: [key, ...]} or {file.yaml: null}",
                          item)
    return tuple(value)


def _check_outs(value, doc, path, field, plots: bool) -> tuple[tuple, dict]:
    """(paths as written, {path: options}) of an outs/metrics/plots list whose entries are a path or
    {path: {cache: .., persist: .., push: ..}} (plots also take x, y, template, ...)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _type_error(doc, path, field, "a list of paths", value)
    paths, options = [], {}
    allowed = (*OUT_FLAGS, *OUT_META, *(PLOT_PROPS if plots else ()))
    for i, entry in enumerate(value):
        if isinstance(entry, dict) and len(entry) == 1:
            (name, opts), = entry.items()
            opts = {} if opts is None else opts
            if not isinstance(name, str) or not name or not isinstance(opts, dict):
                raise _type_error(doc, path + (i,), field, "a path or {path: {cache: false, ...}}", entry)
            for key, val in opts.items():
                if key == "remote":
                    raise LoadError("per-output remotes (remote:) are not supported", location=doc.where(path + (i, name, key)),
                                    field=f"{field}.{name}.remote", hint="buildml uploads to the one remote cache of "
                                    "buildml.yaml (cache.remote); remove remote: or use push: false")
                if key not in allowed:
                    raise LoadError(f"unknown option {key!r} of {name!r}", location=doc.where(path + (i, name, key)),
                                    field=f"{field}.{name}", hint=did_you_mean(str(key), allowed) or "options: " + ", ".join(allowed))
                if key in OUT_FLAGS and not isinstance(val, bool):
                    raise _type_error(doc, path + (i, name, key), f"{field}.{name}.{key}", "true or false", val)
            entry = name
            if opts:
                options[name] = opts
        if not isinstance(entry, str) or not entry:
            raise _type_error(doc, path + (i,), field, "a path or {path: {cache: false, ...}}", entry)
        _no_nul(entry, doc, path + (i,), field)
        paths.append(entry)
    return tuple(paths), options


RESOURCE_NAMES = ("cpus", "gpus", "memory")


def _check_resources(value, doc, path, field):
    if not isinstance(value, dict):
        raise _type_error(doc, path, field, "a mapping like {cpus: 2, gpus: 1, memory: 4GB}", value)
    out = {}
    for k, v in value.items():
        if k == "memory":
            out[k] = parse_size(v, doc, path + (k,), f"{field}.memory")
        elif not _finite(v) or v < 0:
            raise _type_error(doc, path + (k,), f"{field}.{k}", "a finite non-negative number", v)
        else:
            out[k] = v
    return out


def parse_size(value, doc=None, path=(), field="size") -> int:
    """'4GB', '512m', 1024 -> bytes (buildml/units.py says what the units mean); a LoadError at path if not."""
    try:
        return units.parse_size(value)
    except ValueError:
        where = doc.where(path) if doc is not None else None
        raise LoadError(f"invalid size {value!r}", location=where, field=field, hint="e.g. 512MB, 4GB, 1.5GiB") from None


class RuleRegistry:
    """Kinds by name."""

    def __init__(self, rules=()):
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> None:
        self._rules[rule.kind] = rule

    def get(self, kind: str) -> Rule | None:
        return self._rules.get(kind)

    def kinds(self):
        return sorted(self._rules)
