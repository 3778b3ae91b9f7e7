"""The rebuilder: turn a target's resolved inputs into an Action and decide whether it must run.

Keys are computed from input *content* digests (a dependency's output digests, never its key),
so an upstream rebuild that yields identical bytes does not re-run anything downstream.
Decisions carry their reasons, so `status` and `explain` only print what is known here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from buildml.action import Action, InputFile
from buildml.action import IMAGE_EXECUTOR
from buildml.errors import AnalysisError, CacheCorruption, UserError
from buildml.events import Outcome
from buildml.executors.sandbox import Staged
from buildml.store.progress import LARGE_DIR_FILES, files_progress
from buildml.trust import check_manifest_paths, undecodable
from buildml.load.workspace import SKIP_DIRS, inside

RERUN_TESTS = "test results not taken from the cache (--no-cache-test-results)"
ALWAYS_CHANGED = "always_changed: runs on every build"


def _under(path: str, outs) -> bool:
    return any(path == o or path.startswith(o + "/") for o in outs)

@dataclass(frozen=True)
class Decision:
    """What to do with an action, and why."""

    what: Outcome  # RUN, RESTORE or UP_TO_DATE
    reasons: tuple = ()
    manifest: dict | None = None


class Rebuilder:
    """Builds actions from the graph and the results of their dependencies, and decides."""

    def __init__(self, graph, state, hasher, params, store, materializer, rerun_tests: bool = False, externals=None,
                 base_images=None, missing=None, fetch_policy=None, transfer=None):
        self.rerun_tests = rerun_tests
        self.transfer = transfer  # (what, total, label, **counting) -> store/progress.Progress: large directory deps
        self.fetch_policy = fetch_policy  # engine/fetch_or_rebuild.FetchOrRebuild: remote hits worth fetching
        self.missing = missing or (lambda action: "")  # action -> why a result kept outside the store is gone, or ''
        self.externals = externals  # external.ExternalData: URL deps -> pinned store blobs
        self.base_images = base_images  # base_images.BaseImages: FROM references -> pinned digests
        self.graph, self.state, self.hasher = graph, state, hasher
        self.params, self.store, self.materializer = params, store, materializer
        self.root = str(graph.workspace.root)
        self._dir_inside: dict = {}

    # -- actions ------------------------------------------------------------------
    def action_for(self, label, dep_results: dict) -> tuple[Action, list[Staged]]:
        """The action of label, given the results (outputs) of the targets it depends on."""
        spec = self.graph.specs[label]
        inputs = self.graph.inputs[label]
        staged: dict[str, Staged] = {}
        stats: dict = {}  # this build's stats of files found by walking directory deps
        files = self._source_files(label, inputs.sources, stats)
        if spec.context_filter:  # an image's context: what survives its .dockerignore
            from buildml.executors.docker.dockerignore import filter_context

            files = filter_context(self.root, *spec.context_filter, files)
        fulls = [os.path.join(self.root, p) for p in files]
        progress = self._hash_progress(label, inputs.sources, fulls, stats)
        digests = self.hasher.files(fulls, stats, progress)
        if progress is not None:
            progress.finish()
        for path in files:
            full = os.path.join(self.root, path)
            fd = digests[full]
            staged[path] = Staged(path, fd.digest, fd.executable, full, size=fd.size)
        for producer, sub in inputs.from_targets:
            outputs = dep_results[producer].outputs
            chosen = {p: m for p, m in outputs.items() if sub is None or p == sub or p.startswith(sub + "/")}
            if sub is not None and not chosen and not any(o == sub for o in self.graph.specs[producer].outs):
                raise AnalysisError(f"{label} reads {sub!r}, which {producer} did not produce")
            for p, m in chosen.items():
                staged.setdefault(p, Staged(p, m["digest"], m.get("exec", False),
                                            fallback=os.path.join(self.materializer.out_root, p), size=m.get("size")))
        if inputs.external:  # URL deps, staged at external/<scheme>/<host>/<path> by locked digest
            staged.update((item.path, item) for item in self.externals.staged(inputs.external))
        param_values = {f: self.params.select(f, keys, str(label)) for f, keys in spec.params}
        image_key = None
        if spec.image is not None:
            image_key = dep_results[spec.image].key  # the image target's key, never the engine's image ID
        pins = ()
        if spec.executor == IMAGE_EXECUTOR and self.base_images is not None:  # its FROM references' digests
            from buildml.executors.docker.base_images import dockerfile_pins

            pins = dockerfile_pins(self.base_images, self.root, spec)
        action = Action(spec, {p: InputFile(s.digest, 0, s.executable) for p, s in staged.items()},
                        param_values, image_key, pins)
        return action, list(staged.values()) + self._persisted(spec)

    def _hash_progress(self, label, sources, fulls: list[str], stats: dict):
        """Progress of hashing the files of label's directory deps ("hash data/"), shown from LARGE_DIR_FILES files
        on (files and bytes, of totals known from the walk); None when nothing can show it or no dep is a directory."""
        if self.transfer is None or len(fulls) < LARGE_DIR_FILES:
            return None
        dirs = [rel for rel in sources if os.path.isdir(os.path.join(self.root, rel))]
        if not dirs:
            return None
        sizes = [stats[p].st_size for p in fulls if p in stats]
        total = sum(sizes) if len(sizes) == len(fulls) else None  # a plain file dep is stat'ed only by the hasher
        shown = ", ".join(f"{d}/" for d in dirs[:3]) + (f" (+{len(dirs) - 3} more)" if len(dirs) > 3 else "")
        return files_progress(self.transfer, f"hash {shown}", label, total, len(fulls))

    def _persisted(self, spec) -> list[Staged]:
        """The files of persist: true outs as they are now, staged (not keyed) so the command finds them."""
        if not spec.persist:
            return []
        root = self.materializer.out_root
        found = []
        for out in spec.persist:
            full = os.path.join(root, out)
            if os.path.islink(full) or not inside(root, full):
                continue  # never read through a link
            if os.path.isfile(full):
                found.append(out)
            elif os.path.isdir(full):
                found.extend(os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/")
                             for d, _dirs, names in os.walk(full) for n in names
                             if not os.path.islink(os.path.join(d, n)))
        digests = self.hasher.files([os.path.join(root, p) for p in found])
        return [Staged(p, digests[os.path.join(root, p)].digest, digests[os.path.join(root, p)].executable,
                       os.path.join(root, p), writable=True) for p in sorted(found)]

    def _source_files(self, label, sources, stats: dict) -> list[str]:
        files: list[str] = []
        for rel in sources:
            full = os.path.join(self.root, rel)
            _check_name(label, rel)
            if self._escapes(full):
                raise UserError(f"{rel} (a dep of {label}) is a symlink pointing outside the workspace",
                                hint="declared inputs must stay inside the workspace")
            if os.path.isdir(full):
                files.extend(self._walk(label, rel, full, stats))
            elif os.path.isfile(full):
                files.append(rel)
            else:
                raise UserError(f"dep {rel} of {label} does not exist", hint="create it or fix the deps of the target")
        return sorted(set(files))

    def _escapes(self, full: str) -> bool:
        """True when full resolves outside the workspace; realpath only for links and new directories."""
        if os.path.islink(full):
            return not inside(self.root, full)
        parent = os.path.dirname(full)
        ok = self._dir_inside.get(parent)
        if ok is None:
            ok = self._dir_inside[parent] = inside(self.root, parent)
        return not ok

    def _walk(self, label, rel: str, full: str, stats: dict) -> list[str]:
        """The files under a directory dep (not other targets' outs, not SKIP_DIRS), by scandir: the file type
        comes with the listing and each file's stat is kept for the hasher (in stats), so a dataset of many
        files costs one stat per file. Symlinked directories are not followed; a symlinked file must stay inside."""
        owner = self.graph.out_owner
        out = []
        todo = [(full, os.path.relpath(full, self.root).replace(os.sep, "/"))]
        while todo:
            dirpath, drel = todo.pop()
            with os.scandir(dirpath) as entries:
                listing = sorted(entries, key=lambda e: e.name)
            for entry in listing:
                p = f"{drel}/{entry.name}"
                if p in owner:
                    continue
                if entry.is_symlink():
                    if os.path.isdir(entry.path):
                        continue  # a symlinked directory is not followed
                    if not inside(self.root, entry.path):
                        raise UserError(f"{p} (in dep {rel} of {label}) is a symlink pointing outside the workspace",
                                        hint="declared inputs must stay inside the workspace")
                    if os.path.isfile(entry.path):
                        _check_name(label, p, rel)
                        out.append(p)
                elif entry.is_dir():
                    if entry.name not in SKIP_DIRS:
                        todo.append((entry.path, p))
                elif entry.is_file():
                    _check_name(label, p, rel)
                    out.append(p)
                    stats[entry.path] = entry.stat()
        return out

    # -- decisions -------------------------------------------------------------------
    def decide(self, label, action: Action) -> Decision:
        """UP_TO_DATE (outputs in place), RESTORE (a usable cache entry) or RUN, with reasons."""
        if action.spec.is_test and self.rerun_tests:
            return Decision(Outcome.RUN, (RERUN_TESTS,))
        if not action.spec.cacheable:
            return Decision(Outcome.RUN, (ALWAYS_CHANGED,))
        last = self.state.last_build(str(label))
        same = last is not None and (last.get("key") == action.key or action.spec.frozen)
        if same and self.materializer.intact(last["outputs"]):
            gone = self.missing(action)  # e.g. an image removed from the engine since
            return Decision(Outcome.RUN, (gone,)) if gone else Decision(Outcome.UP_TO_DATE)
        manifest = self.store.get_action(action.key) if action.spec.cacheable else None
        why = self.unusable(action, manifest)
        if not why:
            note = self.fetch_policy.judge(action, manifest)[1] if self.fetch_policy is not None else ""
            return Decision(Outcome.RESTORE, (note or "outputs restored from cache",), manifest)
        if manifest is None or manifest.get("exit_code") != 0:
            return Decision(Outcome.RUN, self.reasons(label, action))
        return Decision(Outcome.RUN, (why,))

    def unusable(self, action: Action, manifest: dict | None) -> str:
        """Why the cache entry `manifest` cannot stand for running `action`, or '' when it can.

        The one test of a cache entry: asked when deciding, and again under the action's lock before running
        (another process may have built the key meanwhile). A corrupt entry never reaches it: the stores reject
        it on read (trust.validate_manifest) and a corrupt blob is removed when found, so it is then missing.
        """
        if manifest is None:
            return "not in the cache"
        if not action.spec.cacheable:
            return "not cacheable"
        if action.spec.is_test and self.rerun_tests:
            return RERUN_TESTS
        if manifest.get("exit_code") != 0:
            return "its cached run failed"
        try:
            check_manifest_paths(manifest.get("outputs", {}), action.spec.outs, manifest.get("out_dirs", ()))
        except CacheCorruption as exc:  # a poisoned entry naming paths outside the declared outs
            return exc.message
        gone = self.missing(action)
        if gone:
            return gone
        local_only = action.spec.local_only
        for path, meta in manifest.get("outputs", {}).items():
            if self.store.has_blob(meta["digest"]):
                continue
            if local_only and _under(path, local_only) and self.materializer.intact({path: meta}):
                continue  # a cache: false out, in place with the recorded bytes (e.g. committed to git)
            return "a cached output blob is missing"
        if self.fetch_policy is not None:
            fetch, why = self.fetch_policy.judge(action, manifest)
            if not fetch:
                return why
        return ""

    def reasons(self, label, action: Action) -> tuple:
        """Why the action must run, compared with the last successful build of label."""
        last = self.state.last_build(str(label))
        if last is None:
            return ("never built",)
        return explain_difference(last, build_record(action, {}))


def _check_name(label, path: str, dep: str = "") -> None:
    """A UserError for an input whose name is not UTF-8 (keys, records and the state hold paths as UTF-8)."""
    shown = undecodable(path)
    if shown:
        where = f" (in dep {dep})" if dep else ""
        raise UserError(f"{shown}{where} of {label} has a file name that is not valid UTF-8",
                        hint="rename it (buildml records paths as UTF-8 text), or move it out of the target's deps")


def build_record(action: Action, outputs: dict) -> dict:
    """What the state remembers of a successful build, to explain the next one."""
    s = action.spec
    settings = _settings(action)
    return {
        "key": action.key,
        "argv": list(s.argv),
        "env": dict(s.env),
        "inputs": {p: f.digest for p, f in action.inputs.items()},
        "params": action.param_values,
        "image": action.image_key,
        "outs": list(s.outs),
        "rule": f"{s.kind}/{s.rule_version}",
        "outputs": outputs,
        **({"settings": settings} if settings else {}),
    }


def _settings(action: Action) -> dict:
    """The keyed fields beyond command, env, inputs and params (only those set), to name them when they change."""
    material = action.key_material()
    named = {"extra": "rule settings", "checks": "checks", "base_images": "base images", "network": "network"}
    return {label: material[field] for field, label in named.items() if material.get(field)}


def _plain(value):
    """value as the state database gives it back (JSON: tuples become lists), so both sides compare alike."""
    return json.loads(json.dumps(value, default=str))


def _short(d) -> str:
    return (d or "none")[:8]


def explain_difference(old: dict, new: dict) -> tuple:
    """Human reasons: which file, param key, command, env var, image or out changed."""
    reasons = []
    if old.get("argv") != new["argv"]:
        reasons.append("command changed")
    if old.get("rule") != new["rule"]:
        reasons.append(f"rule changed ({old.get('rule')} -> {new['rule']})")
    old_env, new_env = old.get("env", {}), new["env"]
    for name in sorted(set(old_env) | set(new_env)):
        if old_env.get(name) != new_env.get(name):
            reasons.append(f"env {name} changed")
    old_in, new_in = old.get("inputs", {}), new["inputs"]
    for path in sorted(set(old_in) | set(new_in)):
        a, b = old_in.get(path), new_in.get(path)
        if a is None:
            reasons.append(f"input {path} added")
        elif b is None:
            reasons.append(f"input {path} removed")
        elif a != b:
            reasons.append(f"input {path} changed ({_short(a)} -> {_short(b)})")
    old_p, new_p = old.get("params", {}), new["params"]
    for file in sorted(set(old_p) | set(new_p)):
        a, b = old_p.get(file, {}), new_p.get(file, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<unset>") != b.get(key, "<unset>"):
                reasons.append(f"param {key} changed ({a.get(key, '<unset>')} -> {b.get(key, '<unset>')})")
    if old.get("image") != new["image"]:
        reasons.append(f"image changed ({_short(old.get('image'))} -> {_short(new['image'])})")
    if sorted(old.get("outs", [])) != sorted(new["outs"]):
        reasons.append("outs changed")
    old_s, new_s = _plain(old.get("settings", {})), _plain(new.get("settings", {}))  # the state holds lists
    reasons.extend(f"{name} changed" for name in sorted(set(old_s) | set(new_s)) if old_s.get(name) != new_s.get(name))
    if not reasons:
        reasons.append("outputs missing from the cache" if old.get("key") == new["key"] else "cache schema changed")
    return tuple(reasons)
