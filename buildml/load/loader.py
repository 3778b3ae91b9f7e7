"""Load phase: find every BUILD.yaml under the workspace and turn it into validated Targets."""

from __future__ import annotations

import json
import os
import time
from types import MappingProxyType

from buildml.errors import LoadError, did_you_mean
from buildml.labels import _NAME, Label
from buildml.errors import UserError
from buildml.load.schema import RuleRegistry, Target, params_files
from buildml.load.dvc import DVC_FILE, load_dvc_package
from buildml.load.interpolate import Context, expand, has_template, resolve, to_text
from buildml.load.params import ParamsReader
from buildml.load.workspace import BUILD_FILE, DVC_DIR, ROOT_FILE, SKIP_DIRS, Workspace
from buildml.hashing import RACY_NS
from buildml.trust import undecodable
from buildml.load.yamlsrc import LazyDocument, load_yaml_file

_TOP_KEYS = ("targets",)


def find_packages(root) -> list[str]:
    """Package paths (workspace-relative, '' for the root) of every directory holding BUILD.yaml or dvc.yaml."""
    packages = []
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel.replace(os.sep, "/")
        if rel and (ROOT_FILE in filenames or DVC_DIR in dirnames):  # a nested workspace (or DVC repo) is not ours
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        if BUILD_FILE in filenames or DVC_FILE in filenames:
            if undecodable(rel):
                raise LoadError(f"package directory {undecodable(rel)} has a name that is not valid UTF-8",
                                hint="rename it: labels and paths are UTF-8 text")
            packages.append(rel)
    return packages


def load_package(ws: Workspace, package: str, registry: RuleRegistry, cache: "LoadCache | None" = None,
                 params: ParamsReader | None = None) -> dict[Label, Target]:
    """Parse and validate one package's BUILD.yaml (or, when it has none, its dvc.yaml)."""
    if not os.path.isfile(os.path.join(ws.abspath(package), BUILD_FILE)):
        return load_dvc_package(ws, package, registry, params or ParamsReader(ws.root))
    display = f"{package}/{BUILD_FILE}" if package else BUILD_FILE
    path = os.path.join(ws.abspath(package), BUILD_FILE)
    cached = cache.get(path) if cache else None
    if cached is not None:
        doc, data = LazyDocument(path, display), cached
    else:
        doc = load_yaml_file(path, display)
        data = doc.data
        if cache:
            cache.put(path, data)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LoadError("a BUILD file must be a mapping with a 'targets:' key", location=doc.where(()),
                        hint="start the file with `targets:` and indent each target under it")
    for key in data:
        if key not in _TOP_KEYS:
            raise LoadError(f"unknown top-level key {key!r}", location=doc.where((key,)),
                            hint=did_you_mean(str(key), _TOP_KEYS) or "a BUILD file has one key: targets")
    targets = data.get("targets") or {}
    if not isinstance(targets, dict):
        raise LoadError("'targets' must be a mapping from target name to its fields", location=doc.where(("targets",)))
    out = {}
    params = params or ParamsReader(ws.root)
    for name, raw in targets.items():
        for target in _load_entry(doc, package, name, raw, registry, params):
            if target.label in out:
                raise LoadError(f"target {target.label.name!r} is defined twice", location=doc.where(target.path),
                                hint="a foreach/matrix entry makes NAME@KEY targets; rename one of them")
            out[target.label] = target
    return out


def _load_entry(doc, package: str, name, raw, registry: RuleRegistry, params: ParamsReader) -> list[Target]:
    """The target of one `targets:` entry, or the NAME@KEY targets its foreach/matrix makes (`${item}`, `${key}`)."""
    path = ("targets", name)
    if not (isinstance(raw, dict) and ("foreach" in raw or "matrix" in raw)):
        return [load_target(doc, package, name, raw, registry, params)]
    if not isinstance(name, str) or not _NAME.match(name):
        raise LoadError(f"invalid target name {name!r}", location=doc.where(path),
                        hint="names use letters, digits and _ . - + = , @ ~")
    for field in ("foreach", "matrix"):
        if has_template(raw.get(field)):
            raise LoadError(f"{name}.{field}: a BUILD.yaml {field} lists its values", location=doc.where(path + (field,)),
                            field=f"{name}.{field}", hint="write the list or mapping here; only dvc.yaml templates "
                                                          "it from params files")
    made = []
    for target_name, body, ctx, sub in expand(name, raw, Context(), doc.where(path),
                                              lambda p: doc.where(path + p)):
        body = resolve(body, ctx, doc.where(path + sub), "a target field", track=False,
                       locate=lambda p, s=sub: doc.where(path + s + p), lenient=True)
        made.append(load_target(doc, package, target_name, body, registry, params, path + sub))
    return made


def load_target(doc, package: str, name, raw, registry: RuleRegistry, params: ParamsReader,
                path: tuple | None = None) -> Target:
    """One validated target from its raw fields; `${key}` of its selected params in its command replaced."""
    path = path or ("targets", name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise LoadError(f"invalid target name {name!r}", location=doc.where(path),
                        hint="names use letters, digits and _ . - + = , @ ~")
    if not isinstance(raw, dict):
        raise LoadError(f"target {name!r} must be a mapping of fields", location=doc.where(path),
                        hint="e.g.\n    train:\n      command: python train.py")
    kind = raw.get("kind", "command")
    rule = registry.get(kind) if isinstance(kind, str) else None
    if rule is None:
        raise LoadError(f"unknown kind {kind!r}", location=doc.where(path + ("kind",)), field=f"{name}.kind",
                        hint=did_you_mean(str(kind), registry.kinds()) or "kinds: " + ", ".join(registry.kinds()))
    attrs = rule.validate(name, raw, doc, path, package)
    attrs.setdefault("kind", kind)
    target = Target(Label(package, name), kind, MappingProxyType(attrs), doc, path)
    if attrs.get("params") and has_template(attrs.get("command")):
        attrs["command"] = _with_params(target, params)
        target = Target(target.label, kind, MappingProxyType(attrs), doc, path)
    return target


def _with_params(target: Target, params: ParamsReader):
    """target's command with `${key}` of its selected params replaced (overrides applied: keyed by the command and
    the params, so --param and --sweep vary it); other `${...}` stay for the shell."""
    values: dict = {}
    for file, keys in params_files(target):
        try:
            selected = params.select(file, keys)
        except (UserError, OSError):  # a missing file or key: analysis reports it with its location
            continue
        for dotted, value in selected.items():
            node = values
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
            node[last] = value
    ctx = Context()
    ctx.data = values
    command = resolve(target.attrs["command"], ctx, target.where("command"), "command", track=False, lenient=True)
    return command if isinstance(command, str) else [v if isinstance(v, str) else to_text(v) for v in command]


def load_targets(ws: Workspace, registry: RuleRegistry, overrides: dict | None = None) -> dict[Label, Target]:
    """Every target of the workspace (unchanged BUILD files come from the load cache); `${}` sees the --param
    overrides."""
    targets: dict[Label, Target] = {}
    cache = LoadCache(ws.state_dir / "load-cache.json", registry)
    params = ParamsReader(ws.root, overrides)
    for package in find_packages(ws.root):
        targets.update(load_package(ws, package, registry, cache, params))
    cache.save()
    return targets


class LoadCache:
    """Parsed BUILD file data keyed by the file's stat signature, in one JSON file.

    JSON, never pickle: a cache file committed by mistake (or by an attacker) is data, not code.
    Validation still runs on every load; only YAML parsing is skipped.
    """

    def __init__(self, path, registry: RuleRegistry):
        from buildml import __version__

        self.path = path
        self.stamp = f"{__version__}:{','.join(registry.kinds())}"
        self.entries: dict = {}
        self.dirty = False
        try:
            with open(path) as f:
                saved = json.load(f)
            if saved.get("stamp") == self.stamp:
                self.entries = saved.get("files", {})
        except (OSError, ValueError, AttributeError):
            pass

    @staticmethod
    def _sig(path: str):
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def get(self, path: str):
        entry = self.entries.get(path)
        if entry is None or entry[0] != self._sig(path) or time.time_ns() - entry[0][1] < RACY_NS:
            return None
        return entry[1]

    def put(self, path: str, data) -> None:
        try:
            if json.loads(json.dumps(data)) != data:  # only plain JSON-shaped data round-trips exactly
                return
        except (TypeError, ValueError):
            return
        self.entries[path] = [self._sig(path), data]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"stamp": self.stamp, "files": self.entries}, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs speed
