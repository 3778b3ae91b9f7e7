"""Executors declared in buildml.yaml (`executor:`, `executors:`) and which one runs each target.

Resolution per target: `--executor NAME` > the target's `executor:` > the workspace's `executor:` >
`docker` when the target has `image:`, else `local`. A local-type executor runs the target here,
ignoring its `image:`; a docker-type one runs it in its image (a target without `image:` then
runs here); other types (ray, fake, third-party) come from buildml.load.executor_types, made once per session (api.Session).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from buildml.action import IMAGE_EXECUTOR as IMAGE_BUILD
from buildml import units
from buildml.errors import LoadError, UserError, did_you_mean
from buildml.load import executor_types as registry

BUILTIN = ("local", "docker")
CAPACITY_KEYS = ("cpus", "gpus", "memory")


@dataclass(frozen=True)
class ExecutorConfig:
    """One executor: its name, type, type-specific options and the capacity it declares."""

    name: str
    type: str
    options: dict = field(default_factory=dict, hash=False)
    capacity: dict = field(default_factory=dict, hash=False)  # declared cpus, gpus, memory (bytes); others found

    def option(self, key: str, default=None):
        return self.options.get(key, default)


@dataclass(frozen=True)
class ExecutorSettings:
    """The workspace default and every executor by name (the built-in local and docker always present)."""

    default: str | None = None
    executors: dict = field(default_factory=lambda: {n: ExecutorConfig(n, n) for n in BUILTIN}, hash=False)

    def get(self, name: str) -> ExecutorConfig:
        return self.executors[name]

    def check(self, name: str, location=None, field: str = "", what: str = "executor") -> str:
        """name, or a UserError listing the known executors with a did-you-mean."""
        if name in self.executors or name == IMAGE_BUILD:
            return name
        known = sorted(self.executors)
        raise (LoadError if location else UserError)(
            f"unknown {what} {name!r}", location=location, field=field,
            hint=(did_you_mean(name, known) + " " if did_you_mean(name, known) else "") + "executors: " + ", ".join(known)
            + " (define more under executors: in buildml.yaml)")

    def resolve(self, spec, cli: str | None = None) -> str:
        """The executor name that runs spec."""
        if spec.executor == IMAGE_BUILD:
            return IMAGE_BUILD
        name = cli or spec.executor or self.default or ("docker" if spec.image is not None else "local")
        if self.executors[name].type == "docker" and spec.image is None:
            return "local"  # a container needs an image: a target without one runs here
        return name


def executor_settings(settings) -> ExecutorSettings:
    """The ExecutorSettings of a workspace's Settings (defaults when it has none)."""
    return getattr(settings, "executors", None) or ExecutorSettings()


# -- buildml.yaml ---------------------------------------------------------------------------
def parse_executor_settings(data: dict, doc) -> ExecutorSettings:
    """`executor:` and `executors:` of buildml.yaml, with file:line errors."""
    raw = data.get("executors") or {}
    if not isinstance(raw, dict):
        raise LoadError("executors must be a mapping of NAME: {type: local|docker|ray, ...}",
                        location=doc.where(("executors",)), hint="e.g. executors: {trainer: {type: ray, address: auto}}")
    configs = {n: ExecutorConfig(n, n) for n in BUILTIN}
    for name, entry in raw.items():
        configs[name] = _parse_one(name, entry, doc)
    settings = ExecutorSettings(None, configs)
    default = data.get("executor")
    if default is not None:
        if not isinstance(default, str):
            raise LoadError("executor must be the name of an executor", location=doc.where(("executor",)),
                            hint="e.g. executor: local")
        settings.check(default, doc.where(("executor",)), "executor")
    return dataclasses.replace(settings, default=default)


def _parse_one(name, entry, doc) -> ExecutorConfig:
    where = ("executors", name)
    if not isinstance(name, str) or not name or name == IMAGE_BUILD:
        raise LoadError(f"invalid executor name {name!r}", location=doc.where(where))
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise LoadError(f"executor {name!r} must be a mapping", location=doc.where(where),
                        hint="e.g. {type: local, gpus: 1}")
    kind = entry.get("type", name if name in BUILTIN else None)
    types = registry.type_names()
    if kind not in types:
        raise LoadError(f"executor {name!r} needs a type: local, docker or ray" if kind is None else
                        f"unknown executor type {kind!r}", location=doc.where(where + ("type",)), field=f"executors.{name}",
                        hint=did_you_mean(str(kind), types) or "types: " + ", ".join(types))
    if name in BUILTIN and kind != name:
        raise LoadError(f"the built-in executor {name!r} cannot change its type to {kind!r}",
                        location=doc.where(where + ("type",)), hint=f"give the {kind} executor another name")
    capacity, options, accepted = {}, {}, registry.accepted_options(kind)
    for key, value in entry.items():
        if key == "type":
            continue
        if key in CAPACITY_KEYS:
            capacity[key] = _capacity_value(key, value, doc, where + (key,), f"executors.{name}.{key}")
        elif accepted is None or key in accepted:
            options[key] = value
        else:
            known = ("type",) + CAPACITY_KEYS + tuple(accepted)
            raise LoadError(f"unknown option {key!r} for a {kind} executor", location=doc.where(where + (key,)),
                            field=f"executors.{name}", hint=did_you_mean(str(key), known) or "options: " + ", ".join(known))
    return ExecutorConfig(name, kind, options, capacity)


def _capacity_value(key, value, doc, path, field):
    if key == "memory":
        try:
            return units.parse_size(value)
        except ValueError:
            raise LoadError(f"invalid size {value!r}", location=doc.where(path), field=field,
                            hint="e.g. 512MB, 4GB, 1.5GiB") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (key == "gpus" and value != int(value)):
        raise LoadError(f"{key} must be a non-negative {'integer' if key == 'gpus' else 'number'}, not {value!r}",
                        location=doc.where(path), field=field)
    return value


# -- the session side ---------------------------------------------------------------------------
def assign_executors(graph, settings: ExecutorSettings, cli: str | None, warn) -> list:
    """Resolve each spec's executor in the graph (spec.executor := name); run local-type ones without image.

    Image targets nobody needs any more (every user runs locally) are dropped from the graph when
    they would themselves resolve to a local-type executor. Returns the dropped image labels.
    """
    if cli is not None:
        settings.check(cli, what="executor (--executor)")
    for label, spec in list(graph.specs.items()):
        if spec.executor and spec.executor != IMAGE_BUILD:
            settings.check(spec.executor, graph.targets[label].where("executor"), f"{label.name}.executor")
        name = settings.resolve(spec, cli)
        if name != IMAGE_BUILD and settings.get(name).type == "local" and spec.image is not None:
            spec = dataclasses.replace(spec, image=None, network=False)  # runs here: the image is not keyed
        if name != (spec.executor or "local") or spec is not graph.specs[label]:  # None means local
            graph.specs[label] = dataclasses.replace(spec, executor=name)
    used = {spec.image for spec in graph.specs.values() if spec.image is not None}
    image_default = cli or settings.default or "docker"
    dropped = [l for l, s in graph.specs.items()
               if s.executor == IMAGE_BUILD and l not in used and settings.get(image_default).type == "local"]
    for label in dropped:
        for table in (graph.specs, graph.inputs, graph.targets):
            table.pop(label, None)
        graph.dag.remove_node(label)
    if dropped and cli is not None:
        warn(f"--executor {cli}: {len(dropped)} image target(s) skipped; targets that use them run on this machine")
    return dropped


def explain_dropped(exc, patterns, dropped, package: str):
    """exc, or a clearer UserError when a pattern names an image target that local execution dropped."""
    from buildml.labels import parse_pattern

    for text in patterns:
        try:
            pattern = parse_pattern(text, package)
        except Exception:
            continue
        hit = next((l for l in dropped if pattern.matches(l)), None)
        if hit is not None:
            return UserError(f"{hit} is an image target, skipped because its executor is local (everything runs here)",
                             hint=f"build it with --executor docker: buildml build --executor docker {hit}")
    return exc
