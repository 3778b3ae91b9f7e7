"""Analysis phase: rules turn targets into ActionSpecs; deps resolve to sources and producers; a DAG."""

from __future__ import annotations

import glob as globmod
import os
from dataclasses import dataclass, field, replace


from buildml.action import IMAGE_EXECUTOR, ActionSpec
from buildml.analyse.python_deps import scan
from buildml.dag import Dag
from buildml.errors import AnalysisError, LabelError, LoadError, did_you_mean
from buildml.labels import Label, parse_label, parse_pattern
from buildml.load.schema import RuleRegistry, Target
from buildml.trust import relpath_problem, symlinked_part
from buildml.load.workspace import SKIP_DIRS, Workspace, normalize_relpath

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Inputs:
    """Where an action's inputs come from."""

    sources: tuple[str, ...] = ()  # workspace-relative files or directories
    from_targets: tuple[tuple[Label, str | None], ...] = ()  # (producer, out path or None for all)
    external: tuple[str, ...] = ()  # fsspec URLs or URL globs, pinned in buildml.lock (see external.py)
    python_deps: tuple[tuple[str, str], ...] = ()  # (module file, importing file) added by python_deps: auto


@dataclass
class BuildGraph:
    """The analysed workspace: specs, their inputs, the DAG (edge: producer -> consumer)."""

    workspace: Workspace
    targets: dict
    specs: dict
    inputs: dict
    dag: Dag
    out_owner: dict  # out path -> label
    unbuildable: dict = field(default_factory=dict)  # label -> why it cannot be built (--at: a dep nothing provides)

    def check_buildable(self, labels) -> None:
        """Raise the first reason why labels, or what they need, cannot be built."""
        if self.unbuildable:
            for label in self.closure(labels):
                if label in self.unbuildable:
                    raise self.unbuildable[label]

    def select(self, patterns: list[str], current_package: str = "") -> list[Label]:
        """Labels matched by command-line patterns; an unmatched one raises with suggestions."""
        chosen: dict[Label, None] = {}
        for text in patterns:
            pattern = parse_pattern(text, current_package)
            hits = [l for l in self.specs if pattern.matches(l)]
            if not hits:
                names = [str(l) for l in self.specs]
                raise LabelError(f"no target matches {text!r}",
                                 hint=did_you_mean(str(pattern), names) or "list targets with `buildml query deps //...`")
            chosen.update(dict.fromkeys(sorted(hits)))
        return list(chosen)

    def closure(self, labels) -> list[Label]:
        """labels and everything they need, in a topological order."""
        needed = set(labels)
        frontier = list(needed)
        pred = self.dag.pred
        while frontier:
            for dep in pred[frontier.pop()]:
                if dep not in needed:
                    needed.add(dep)
                    frontier.append(dep)
        sub = self.dag.subgraph(needed)
        return sub.topological_order()


def analyse(ws: Workspace, targets: dict[Label, Target], registry: RuleRegistry, data=None) -> BuildGraph:
    """Run every rule's analysis and resolve every dep; raise on conflicts, unknown labels and cycles.

    data (a load/dvc_pointers.DvcData, or None) places DVC-tracked data a missing dep names, and warns when a present
    one differs from its pointer; with `missing(path)` it may say why a dep is absent (`--at` sees only git)."""
    specs = {label: registry.get(t.kind).analyse(t) for label, t in targets.items()}
    out_owner = _out_owners(specs, targets)
    _check_out_places(ws, specs, targets)
    resolver = _Resolver(ws, specs, targets, out_owner, data)
    inputs = {label: resolver.resolve(label) for label in specs}
    for label, spec in specs.items():
        if spec.executor != IMAGE_EXECUTOR and (targets[label].get("python_deps") or ws.settings.python_deps) == "auto":
            inputs[label] = resolver.with_python_deps(label, inputs[label])
    dag = Dag()
    dag.add_nodes_from(specs)
    for label, inp in inputs.items():
        for producer, _ in inp.from_targets:
            dag.add_edge(producer, label)
        if specs[label].image is not None:
            _check_image(specs, targets, label)
            dag.add_edge(specs[label].image, label)
    _check_acyclic(dag)
    return BuildGraph(ws, targets, specs, inputs, dag, out_owner, resolver.unbuildable)


def _out_owners(specs, targets) -> dict:
    owner: dict[str, Label] = {}
    for label, spec in sorted(specs.items()):
        for out in spec.outs:
            if out in owner and owner[out] != label:
                raise AnalysisError(f"{out!r} is an out of both {owner[out]} and {label}",
                                    location=targets[label].where("outs"), field=f"{label.name}.outs",
                                    hint="each output path must be produced by exactly one target")
            owner[out] = label
    for out, label in owner.items():
        parent = os.path.dirname(out)
        while parent:
            other = owner.get(parent)
            if other is not None:
                raise AnalysisError(f"out {out!r} of {label} lies inside out {parent!r} of {other}",
                                    location=targets[label].where("outs"), hint="outputs may not nest")
            parent = os.path.dirname(parent)
    return owner


def _check_out_places(ws: Workspace, specs, targets) -> None:
    """No out is in buildml's or git's own paths, or is or lies under a symlink of the workspace (it would be
    written outside it). Checked on every analysis, never cached: the file system changes between loads."""
    root = str(ws.root)
    links: dict[str, str] = {}  # parent directory -> its first symlinked part, or '' (each looked at once)
    for label, spec in specs.items():
        for i, out in enumerate(spec.outs):
            problem = relpath_problem(out)  # rule.out_path checked what BUILD files say; this, what rules compute
            hint = "declare outputs elsewhere in the workspace, e.g. out/ or models/"
            if not problem:
                parent = out.rpartition("/")[0]
                link = links.get(parent)
                if link is None:
                    link = links[parent] = symlinked_part(root, parent) if parent else ""
                link = link or (out if os.path.islink(f"{root}/{out}") else "")
                if link:
                    problem = f"{'is' if link == out else 'lies under'} the symlink {link!r} in the workspace, " \
                              f"so it would be written outside it"
                    hint = f"buildml writes outputs only inside the workspace: make {link!r} a real directory, " \
                           f"or declare the out elsewhere"
            if problem:
                raise AnalysisError(f"out {out!r} of {label} {problem}", location=_out_where(targets[label], spec, i),
                                    field=f"{label.name}.outs", hint=hint)


def _out_where(target: Target, spec: ActionSpec, i: int):
    """Where out number i of spec is written: its outs entry, its metrics entry, or the target."""
    if i < len(target.get("outs", ())):
        return target.where("outs", i)
    if spec.outs[i] in spec.metrics:
        return target.where("metrics", spec.metrics.index(spec.outs[i]))
    return target.where()


class _Resolver:
    def __init__(self, ws, specs, targets, out_owner, data=None):
        self.ws, self.specs, self.targets, self.out_owner, self.data = ws, specs, targets, out_owner, data
        self.unbuildable: dict = {}  # label -> the AnalysisError of a dep nothing provides (data.defer)
        self.out_dirs = {}
        for out in out_owner:  # every ancestor directory of an out
            parent = os.path.dirname(out)
            while parent:
                self.out_dirs.setdefault(parent, []).append(out)
                parent = os.path.dirname(parent)

    def resolve(self, label: Label) -> Inputs:
        spec, target = self.specs[label], self.targets[label]
        sources: list[str] = []
        producers: list[tuple] = []
        external: list[str] = []
        excludes = [d[1:] for d in spec.deps if d.startswith("!")] + list(spec.excludes)
        for i, dep in enumerate(spec.deps):
            where = target.where("deps", i)
            if dep.startswith("!"):
                continue
            if dep.startswith(("//", ":")):
                producers.append((self._label(dep, label, where), None))
            elif "://" in dep:
                external.append(dep)
            elif _GLOB_CHARS & set(dep):
                sources.extend(self._glob(label.package, dep, excludes, where))
            else:
                self._path(label, dep, where, sources, producers)
        for producer, _ in producers:
            if producer == label:
                raise AnalysisError(f"{label} depends on its own output", location=target.where("deps"))
        return Inputs(tuple(dict.fromkeys(sources)), tuple(dict.fromkeys(producers)), tuple(dict.fromkeys(external)))

    def with_python_deps(self, label: Label, inputs: Inputs) -> Inputs:
        """inputs plus the workspace modules its declared .py files import (python_deps: auto)."""
        found = tuple(scan(self.ws.root, inputs.sources, self.specs[label].workdir, self._in_out))
        return replace(inputs, sources=inputs.sources + tuple(p for p, _ in found), python_deps=found)

    def _label(self, text: str, label: Label, where) -> Label:
        try:
            dep = parse_label(text, label.package)
        except LabelError as exc:
            raise LoadError(exc.message, location=where, field="deps", hint=exc.hint) from None
        if dep not in self.specs:
            names = [str(l) for l in self.specs]
            raise AnalysisError(f"unknown target {dep}, needed by {label}", location=where, field="deps",
                                hint=did_you_mean(str(dep), names) or "check the package's BUILD.yaml")
        return dep

    def _path(self, label, dep, where, sources, producers):
        path = normalize_relpath(label.package, dep, where, "deps")
        owner = self.out_owner.get(path)
        if owner is None:  # inside a directory out?
            parent = os.path.dirname(path)
            while parent and owner is None:
                owner = self.out_owner.get(parent)
                parent = os.path.dirname(parent)
        if owner is not None:
            producers.append((owner, path))
            return
        for out in self.out_dirs.get(path, ()):  # a directory holding other targets' outs
            producers.append((self.out_owner[out], out))
        full = self.ws.abspath(path)
        if os.path.lexists(full):
            sources.append(path)
            if self.data is not None:
                self.data.check(path)
        elif path not in self.out_dirs:
            if self.data is not None and self.data.provide(path):  # DVC-tracked: fetched, then a source file
                sources.append(path)
                return
            why = self.data.missing(path) if self.data is not None else None
            if why is not None:
                error = AnalysisError(f"dep {dep!r} of {label}: {why[0]}", location=where, field="deps", hint=why[1])
                if getattr(self.data, "defer", False):  # --at: only an error if label is built
                    self.unbuildable.setdefault(label, error)
                    return
                raise error
            raise AnalysisError(f"dep {dep!r} of {label} is neither a file in the workspace nor an out of any target",
                                location=where, field="deps",
                                hint=did_you_mean(path, list(self.out_owner)) or f"create {path}, or add it to some target's outs")

    def _glob(self, package: str, pattern: str, excludes, where) -> list[str]:
        base = self.ws.abspath(package)
        matches = set(globmod.glob(pattern, root_dir=base, recursive=True))
        for ex in excludes:
            matches -= set(globmod.glob(ex, root_dir=base, recursive=True))
        out = []
        for m in sorted(matches):
            rel = normalize_relpath(package, m, where, "deps")
            parts = rel.split("/")
            if any(p in SKIP_DIRS for p in parts) or self._in_out(rel) or os.path.isdir(self.ws.abspath(rel)):
                continue
            out.append(rel)
        return out


    def _in_out(self, path: str) -> bool:
        """True when path is some target's out or lies inside one."""
        while path:
            if path in self.out_owner:
                return True
            path = os.path.dirname(path)
        return False


def _check_image(specs, targets, label) -> None:
    image = specs[label].image
    if image not in specs or specs[image].executor != IMAGE_EXECUTOR:
        what = "is not a target" if image not in specs else f"is a {specs[image].kind} target, not an image"
        raise AnalysisError(f"image {image} of {label} {what}", location=targets[label].where("image"),
                            field=f"{label.name}.image", hint="point image: at a target of kind image")


def _check_acyclic(dag: Dag) -> None:
    try:
        dag.topological_order()
        return
    except ValueError:
        pass
    import networkx as nx  # only to name the cycle

    cycle = nx.find_cycle(dag.to_networkx())
    chain = [str(edge[0]) for edge in cycle] + [str(cycle[0][0])]
    raise AnalysisError("dependency cycle: " + " -> ".join(chain), hint="break the cycle by removing one of these deps")
