"""dvc.yaml as a package file: each stage is a `command` target of the same name, read as DVC reads it.

What DVC documents for dvc.yaml is honoured: `cmd` (a string, or a list run one after another, each in its own
shell), `wdir` (paths and params files are relative to it), `deps`, `params` (keys, sections, `- file:` for a
whole file, other params files in YAML, JSON, TOML or Python), `outs`/`metrics`/`plots` in string and dict form
(`cache`, `persist`, `push`; plot properties), `vars` and `${}` (from params.yaml, vars files and mappings),
`foreach`/`do` and `matrix` (targets named `stage@key` as DVC names them), `frozen`, `always_changed`, `desc`,
`meta` and the top-level `plots:`, `params:`, `metrics:` and `artifacts:`. Values interpolated from params files
into keyed fields are added to the stage's params, as DVC tracks them. `dvc.lock` is never read or written.
Anything else is an error naming the file, line and field: a pipeline never runs with a silent difference.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType

from buildml.errors import LoadError, did_you_mean
from buildml.labels import _NAME, Label
from buildml.load.interpolate import Context, expand, resolve
from buildml.load.schema import RuleRegistry, Target
from buildml.load.yamlsrc import load_yaml_file
from buildml.errors import UserError

DVC_FILE = "dvc.yaml"
DEFAULT_PARAMS = "params.yaml"
_TOP = ("stages", "vars", "plots", "params", "metrics", "artifacts", "datasets")
_STAGE = ("cmd", "wdir", "deps", "params", "outs", "metrics", "plots", "frozen", "always_changed", "desc", "meta",
          "vars", "foreach", "do", "matrix")
# buildml attribute -> the dvc.yaml field it comes from (for error locations)
_FIELD_OF = {"command": "cmd", "doc": "desc"}


class StageDocument:
    """Locations in dvc.yaml for a target made from a stage: buildml's attribute names map to DVC's fields."""

    def __init__(self, doc, base: tuple):
        self.doc, self.base, self.file = doc, base, doc.file

    def where(self, path: tuple):
        if path[:len(self.base)] == self.base and len(path) > len(self.base):
            rest = list(path[len(self.base):])
            rest[0] = _FIELD_OF.get(rest[0], rest[0])
            path = self.base + tuple(rest)
        return self.doc.where(path)


@dataclass(frozen=True)
class DvcStage:
    """One target a dvc.yaml stage makes: its name (the stage's, or `stage@key` from foreach/matrix) and the
    buildml fields read from it, before schema validation (foreach/matrix expanded, `${}` resolved, paths made
    package-relative through wdir, params read by `${}` added). `body` is the stage as written (the `do:` body
    of a foreach), `path` its key path in dvc.yaml, `via` "foreach", "matrix" or None, `item` that entry's
    `${item}` (the part of `name` after `@` is its key)."""

    name: str
    stage: str
    raw: dict
    body: dict
    path: tuple
    via: str | None = None
    item: object = None
    template: str | None = None  # the command with the `${}` that read params files kept (BUILD.yaml resolves those)


class DvcFile:
    """A package's dvc.yaml, read and checked at the top level; `stages()` yields its targets' raw fields."""

    def __init__(self, ws, package: str, params):
        display = f"{package}/{DVC_FILE}" if package else DVC_FILE
        self.package, self.params = package, params
        self.doc = doc = load_yaml_file(os.path.join(ws.abspath(package), DVC_FILE), display)
        self.data = data = doc.data
        if data is None:
            return
        if not isinstance(data, dict):
            raise LoadError("dvc.yaml must be a mapping with a 'stages:' key", location=doc.where(()))
        for key in data:
            if key not in _TOP:
                raise LoadError(f"unknown top-level key {key!r} in dvc.yaml", location=doc.where((key,)),
                                hint=did_you_mean(str(key), _TOP) or "dvc.yaml keys: " + ", ".join(_TOP))
        self.ctx = ctx = Context()
        default = _join(package, DEFAULT_PARAMS)
        if os.path.isfile(ws.abspath(default)):
            ctx.merge(_file_values(params, default, None, doc.where(())), default, doc.where(()), DEFAULT_PARAMS)
        _load_vars(ctx, data.get("vars"), package, params, doc, ("vars",))
        stages = data.get("stages") or {}
        if not isinstance(stages, dict):
            raise LoadError("'stages' must be a mapping from stage name to its fields", location=doc.where(("stages",)))

    def stages(self) -> Iterator[DvcStage]:
        """Each target in order; errors (file:line) are raised as the stage that has them is reached."""
        if self.data is None:
            return
        doc, package, params = self.doc, self.package, self.params
        for name, definition in (self.data.get("stages") or {}).items():
            where = doc.where(("stages", name))
            if not isinstance(definition, dict):
                raise LoadError(f"stage {name!r} must be a mapping of fields", location=where,
                                hint="e.g.\n    train:\n      cmd: python train.py")
            base = ("stages", name)
            via = "foreach" if "foreach" in definition else "matrix" if "matrix" in definition else None
            for target_name, body, stage_ctx, sub in expand(str(name), definition, self.ctx, where,
                                                            lambda p, b=base: doc.where(b + p)):
                path = base + sub
                raw, template = _stage_to_target(target_name, body, stage_ctx, package, params, doc, path)
                if not _NAME.match(target_name):
                    raise LoadError(f"stage name {target_name!r} is not a valid target name", location=where,
                                    hint="names use letters, digits and _ . - + = , @ ~ (foreach keys become part of it)")
                yield DvcStage(target_name, str(name), raw, body, path, via,
                               stage_ctx.data.get("item") if via else None, template)


def load_dvc_package(ws, package: str, registry: RuleRegistry, params) -> dict[Label, Target]:
    """The targets of package's dvc.yaml; params (a ParamsReader) gives the values `${}` reads, overrides applied."""
    dvc = DvcFile(ws, package, params)
    doc = dvc.doc
    rule = registry.get("command")
    out: dict[Label, Target] = {}
    for stage in dvc.stages():
        sdoc = StageDocument(doc, stage.path)
        attrs = rule.validate(stage.name, stage.raw, sdoc, stage.path, package)
        attrs.setdefault("kind", "command")
        label = Label(package, stage.name)
        if label in out:
            raise LoadError(f"stage {stage.name!r} is defined twice", location=doc.where(stage.path[:2]))
        out[label] = Target(label, "command", MappingProxyType(attrs), sdoc, stage.path)
    if dvc.data is not None:
        _attach_plots(out, dvc.data.get("plots"), package, doc)
    return out


def _join(package: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(package, path)) if package else posixpath.normpath(path)


def _file_values(params, relpath: str, keys, where) -> dict:
    try:
        data = params.effective(relpath)
    except UserError as exc:
        raise LoadError(exc.message, location=where, hint=exc.hint) from None
    if keys:
        missing = [k for k in keys if k not in data]
        if missing:
            raise LoadError(f"vars: {relpath} has no key {missing[0]!r}", location=where,
                            hint=did_you_mean(missing[0], list(data)) or f"keys of {relpath}: " + ", ".join(map(str, data)))
        data = {k: data[k] for k in keys}
    return data


def _load_vars(ctx: Context, entries, base_dir: str, params, doc, path: tuple) -> None:
    if entries is None:
        return
    if not isinstance(entries, list):
        raise LoadError("vars must be a list of params files and mappings", location=doc.where(path),
                        hint="e.g. vars: [params.json, {seed: 42}, config.yaml:train,eval]")
    for i, entry in enumerate(entries):
        where = doc.where(path + (i,))
        if isinstance(entry, str):
            file, _, keys = entry.partition(":")
            relpath = _relpath(base_dir, file, where, "vars")
            selected = [k for k in keys.split(",") if k] or None
            ctx.merge(_file_values(params, relpath, selected, where), relpath, where, f"vars file {file}")
        elif isinstance(entry, dict):
            ctx.merge(entry, None, where, "vars")
        else:
            raise LoadError(f"a vars entry is a params file or a mapping, not {type(entry).__name__}", location=where)


def _relpath(base_dir: str, path, where, field: str) -> str:
    from buildml.load.workspace import normalize_relpath

    if not isinstance(path, str) or not path:
        raise LoadError(f"{field}: expected a path, got {path!r:.60}", location=where)
    return normalize_relpath(base_dir, path, where, field)


def _stage_to_target(name: str, body: dict, ctx: Context, package: str, params, doc, path: tuple) -> tuple[dict, str | None]:
    """The buildml fields of one (expanded) stage, paths made package-relative through wdir; and its command with
    the `${}` that read params files kept (None when there are none)."""
    for key in body:
        if key not in _STAGE or key in ("foreach", "do", "matrix"):
            raise LoadError(f"unknown field {key!r} of stage {name!r}", location=doc.where(path + (key,)),
                            field=f"{name}.{key}",
                            hint=did_you_mean(str(key), _STAGE) or "stage fields: " + ", ".join(_STAGE))
    if "cmd" not in body:
        raise LoadError(f"stage {name!r} has no cmd", location=doc.where(path), field=name,
                        hint="every stage runs a command: cmd: python train.py")
    ctx = ctx.child({})
    ctx.tracked = {}  # what this stage's keyed fields read from params files
    locate = lambda *p: doc.where(path + p)  # noqa: E731
    wdir = "."
    if body.get("wdir") is not None:
        wdir = resolve(body["wdir"], ctx, locate("wdir"), "wdir")
        if not isinstance(wdir, str) or not wdir:
            raise LoadError("wdir must be a path", location=locate("wdir"), field=f"{name}.wdir")
    wdir_rel = _relpath(package, wdir, locate("wdir"), "wdir") if wdir not in (".", "./") else package
    local_ctx = ctx
    if body.get("vars") is not None:
        local_ctx = ctx.child({})
        local_ctx.tracked = ctx.tracked
        _load_vars(local_ctx, body["vars"], wdir_rel, params, doc, path + ("vars",))
    rebase = _rebaser(package, wdir_rel)
    raw: dict = {"kind": "command"}
    cmd = resolve(body["cmd"], local_ctx, locate("cmd"), "command",
                  locate=lambda p: locate("cmd", *p))
    if isinstance(cmd, list):
        if not cmd or not all(isinstance(c, (str, int, float)) and str(c).strip() for c in cmd):
            raise LoadError("cmd must be a command or a non-empty list of commands", location=locate("cmd"),
                            field=f"{name}.cmd")
        cmd = " && ".join(f"( {c} )" for c in map(str, cmd)) if len(cmd) > 1 else str(cmd[0])
    elif not isinstance(cmd, str) or not cmd.strip():
        raise LoadError("cmd must be a command or a non-empty list of commands", location=locate("cmd"),
                        field=f"{name}.cmd")
    raw["command"] = cmd
    unsourced = Context()  # vars mappings and foreach/matrix items only: what is left reads params files
    unsourced.data = {k: v for k, v in local_ctx.data.items() if local_ctx.source.get(k) is None}
    template = resolve(body["cmd"], unsourced, locate("cmd"), "command", track=False, lenient=True)
    if isinstance(template, list):
        template = " && ".join(f"( {c} )" for c in map(str, template)) if len(template) > 1 else str(template[0])
    if wdir_rel != package:
        raw["wdir"] = posixpath.relpath(wdir_rel, package or ".")
    if "deps" in body:
        deps = resolve(body["deps"], local_ctx, locate("deps"), "deps", locate=lambda p: locate("deps", *p))
        raw["deps"] = [rebase(d, locate("deps", i), "deps") for i, d in enumerate(_listed(deps, locate("deps"), "deps"))]
    for field in ("outs", "metrics", "plots"):
        if field in body:
            value = resolve(body[field], local_ctx, locate(field), field, locate=lambda p, f=field: locate(f, *p))
            raw[field] = [_rebase_out(rebase, e, locate(field, i), field)
                          for i, e in enumerate(_listed(value, locate(field), field))]
    if "params" in body:
        value = resolve(body["params"], local_ctx, locate("params"), "params", locate=lambda p: locate("params", *p))
        raw["params"] = [_param_entry(e, wdir_rel, package, locate("params", i), name)
                         for i, e in enumerate(_listed(value, locate("params"), "params"))]
    for flag in ("frozen", "always_changed"):
        if flag in body:
            raw[flag] = body[flag]
    if body.get("desc") is not None:
        raw["doc"] = resolve(body["desc"], local_ctx, locate("desc"), "desc", track=False)
    _add_tracked(raw, ctx.tracked, package)
    return raw, (template if template != cmd else None)


def _listed(value, where, field):
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise LoadError(f"{field} must be a list", location=where)
    return value


def _rebaser(package: str, wdir_rel: str):
    """A function making a path written relative to wdir relative to the package (checked for escapes)."""
    def rebase(path, where, field):
        if not isinstance(path, str) or not path:
            raise LoadError(f"{field}: expected a path, got {path!r:.60}", location=where, field=field)
        full = _relpath(wdir_rel, path, where, field)
        return posixpath.relpath(full, package) if package else full
    return rebase


def _rebase_out(rebase, entry, where, field):
    if isinstance(entry, dict) and len(entry) == 1:
        (path, opts), = entry.items()
        return {rebase(path, where, field): opts}
    return rebase(entry, where, field)


def _param_entry(entry, wdir_rel: str, package: str, where, stage: str):
    """A DVC params entry in buildml's form: `key` (of wdir's params.yaml), or {file: [keys] | None}."""
    default = _join(wdir_rel, DEFAULT_PARAMS)
    default_rel = posixpath.relpath(default, package) if package else default
    if isinstance(entry, str):
        return entry if default_rel == DEFAULT_PARAMS else {default_rel: [entry]}
    if isinstance(entry, dict) and len(entry) == 1:
        (file, keys), = entry.items()
        if isinstance(file, str):
            full = _relpath(wdir_rel, file, where, "params")
            rel = posixpath.relpath(full, package) if package else full
            return {rel: keys}
    raise LoadError(f"a params entry is a key or {{file: [keys]}}, not {entry!r:.60}", location=where,
                    field=f"{stage}.params")


def _add_tracked(raw: dict, tracked: dict, package: str) -> None:
    """Params read by `${}` in keyed fields become params of the target (DVC tracks them the same way)."""
    if not tracked:
        return
    entries = raw.setdefault("params", [])
    for file, keys in tracked.items():
        rel = posixpath.relpath(file, package) if package else file
        entries.append(keys[0] if rel == DEFAULT_PARAMS and len(keys) == 1 else {rel: list(keys)})


def _attach_plots(targets: dict, plots, package: str, doc) -> None:
    """Top-level plots: each definition is shown with the stage that writes the file it draws."""
    if plots is None:
        return
    if not isinstance(plots, list):
        raise LoadError("plots must be a list of plot files and definitions", location=doc.where(("plots",)))
    producers = {}
    for label, target in targets.items():
        for field in ("outs", "metrics", "plots"):
            for out in target.attrs.get(field, ()):
                producers[_join(package, out.rstrip("/"))] = label
    for i, entry in enumerate(plots):
        where = doc.where(("plots", i))
        if isinstance(entry, str):
            name, props = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            (name, props), = entry.items()
            props = props or {}
            if not isinstance(props, dict):
                raise LoadError(f"plot {name!r}: its properties must be a mapping", location=where)
        else:
            raise LoadError("a plots entry is a file or {id: {x: .., y: .., template: ..}}", location=where)
        files = [name]
        for axis in ("x", "y"):
            if isinstance(props.get(axis), dict):
                files.extend(props[axis])
        for file in files:
            label = producers.get(_join(package, str(file)))
            if label is None:
                continue
            target = targets[label]
            attrs = dict(target.attrs)
            attrs["plot_defs"] = (*attrs.get("plot_defs", ()), (str(name), props))
            targets[label] = Target(target.label, target.kind, MappingProxyType(attrs), target.doc, target.path)
