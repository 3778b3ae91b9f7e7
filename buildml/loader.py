"""Load phase: find every BUILD.yaml under the workspace and turn it into validated Targets."""

from __future__ import annotations

import os
from types import MappingProxyType

from .errors import LoadError, did_you_mean
from .labels import _NAME, Label
from .rule import RuleRegistry, Target
from .workspace import BUILD_FILE, ROOT_FILE, SKIP_DIRS, Workspace
from .yamlsrc import load_yaml_file

_TOP_KEYS = ("targets",)


def find_packages(root) -> list[str]:
    """Package paths (workspace-relative, '' for the root) of every directory holding BUILD.yaml."""
    packages = []
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel.replace(os.sep, "/")
        if rel and ROOT_FILE in filenames:  # a nested workspace is not ours
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        if BUILD_FILE in filenames:
            packages.append(rel)
    return packages


def load_package(ws: Workspace, package: str, registry: RuleRegistry) -> dict[Label, Target]:
    """Parse and validate one package's BUILD.yaml."""
    display = f"{package}/{BUILD_FILE}" if package else BUILD_FILE
    doc = load_yaml_file(os.path.join(ws.abspath(package), BUILD_FILE), display)
    data = doc.data
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
    for name, raw in targets.items():
        target = _load_target(doc, package, name, raw, registry)
        out[target.label] = target
    return out


def _load_target(doc, package: str, name, raw, registry: RuleRegistry) -> Target:
    path = ("targets", name)
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
    return Target(Label(package, name), kind, MappingProxyType(attrs), doc, path)


def load_targets(ws: Workspace, registry: RuleRegistry) -> dict[Label, Target]:
    """Every target of the workspace."""
    targets: dict[Label, Target] = {}
    for package in find_packages(ws.root):
        targets.update(load_package(ws, package, registry))
    return targets
