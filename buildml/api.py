"""The facade: one object per invocation that loads, analyses and builds a workspace.

The CLI is a thin layer over this; tests and scripts can use it directly.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from buildml.errors import UserError
from buildml.events import Warning
from buildml.analyse.graph import analyse
from buildml.engine.hasher import Hasher
from buildml.labels import parse_label
from buildml.load.loader import load_targets
from buildml.engine.materialize import Materializer
from buildml.load.params import ParamsReader
from buildml.engine.rebuilder import Rebuilder
from buildml.load.schema import RuleRegistry
from buildml.engine.runner import Runner
from buildml.engine.scheduler import Scheduler
from buildml.engine.state import State
from buildml.store.local import LocalStore
from buildml.load.workspace import STATE_DIR, default_cache_dir, load_workspace


@dataclass
class Options:
    """What a command line (or a script) can set for one invocation."""

    jobs: int | None = None
    keep_going: bool = False
    cache_dir: str | None = None
    out_root: str | None = None  # None: outputs go in place in the workspace
    state_dir: str | None = None  # None: the workspace's .buildml/ (a sweep keeps one per variant)
    param_overrides: dict = field(default_factory=dict)
    executor: str | None = None
    rerun_tests: bool = False  # --no-cache-test-results
    test_retries: int | None = None  # --retries
    at_revision: str | None = None  # --at: the commit being built (external data is then taken from the lock)
    update_lock: bool = False  # --update-lock: re-pin drifted external data instead of stopping
    remote_cache: str | None = None  # --remote-cache URL (else $BUILDML_REMOTE_CACHE, else cache.remote)
    remote_upload: bool | None = None  # --remote-upload/--no-remote-upload (None: the cache.upload setting)
    data_repo: str | None = None  # the DVC repo whose cache and config hold DVC-tracked data (--at: the user's repo)
    download: str = "all"  # --download=minimal: cached results of targets not named are not written into place
    detach: bool = False  # --detach: remote (ray) actions are submitted, not awaited (buildml/remote_runs.py)


def default_registry(ws=None) -> RuleRegistry:
    """The built-in kinds, plus the workspace's own (rules: and templates: in its buildml.yaml) when ws is given."""
    from buildml.rules import builtin_rules  # the facade wires the built-in kinds in; the engine never does

    if ws is None:
        return RuleRegistry(builtin_rules())
    from buildml.load.user_rules import workspace_rules

    return RuleRegistry(workspace_rules(ws, builtin_rules()))


class Session:
    """A loaded workspace with its stores; build(), status(), explain() and queries."""

    def __init__(self, start: Path | str = ".", options: Options | None = None, emit=lambda e: None,
                 executor=None, registry: RuleRegistry | None = None, store=None):
        self.options = options or Options()
        self.emit = emit
        self.ws = load_workspace(Path(start))
        self.cwd = Path(start).resolve()
        self.registry = registry or default_registry(self.ws)
        self._executor = executor
        self._injected = executor is not None  # a test's executor runs everything
        self._graph = None
        self._store = store  # a Store (e.g. MemoryStore in tests); None: the configured local/tiered store
        self.state = State(self.options.state_dir or self.ws.state_dir)
        self.commit_files: list[str] = []  # git files a no-op certificate watches (engine/commit_record.py)

    # -- lazily built parts ------------------------------------------------------------
    @property
    def graph(self):
        if self._graph is None:
            self._graph = analyse(self.ws, load_targets(self.ws, self.registry, self.options.param_overrides),
                                  self.registry, self.dvc_data())
            from buildml.load.executor_settings import assign_executors, executor_settings  # who runs what; local ones skip images

            self.dropped_images = assign_executors(self._graph, executor_settings(self.ws.settings),
                                                   self.options.executor, self.warn)
        return self._graph

    def dvc_data(self):
        """DVC-tracked data (load/dvc_pointers.py): missing deps a pointer names are fetched, changed ones warned of."""
        from buildml.load.dvc_pointers import DvcData

        dvc = DvcData(self.ws.root, self.options.data_repo, self.warn, self.options.state_dir or self.ws.state_dir,
                      at_revision=self.options.at_revision)
        if self.options.at_revision is None:
            return dvc
        from buildml.engine.commit_record import AtRevisionData, RecordedSources, where_in_git

        place = where_in_git(self.ws.root)  # the checkout: its HEAD is the revision
        recorded = RecordedSources(self.ws.root, self.store, place[0], place[1]) if place else None
        return AtRevisionData(dvc, recorded)

    @property
    def store(self):
        if self._store is None:
            cache = self.options.cache_dir or default_cache_dir(self.ws.settings, self.ws.root)
            from buildml.store.tiered import open_store

            self._store = open_store(LocalStore(cache), self.ws.settings, self.options, self.warn, self.transfer)
        return self._store

    @property
    def current_package(self) -> str:
        try:
            rel = self.cwd.relative_to(self.ws.root)
        except ValueError:
            return ""
        return "" if str(rel) == "." else rel.as_posix()

    def executor(self):
        """The local executor (or the one a test injected)."""
        if self._executor is None:
            from buildml.executors.local import LocalExecutor

            self._executor = LocalExecutor()
        return self._executor

    def executor_for(self, spec):
        """The executor that runs spec (its executor name resolved by the graph), or the one a test injected."""
        from buildml.action import IMAGE_EXECUTOR
        from buildml.load.executor_settings import executor_settings

        if self._injected:
            return self.executor()
        if spec.executor == IMAGE_EXECUTOR:
            return self.containers.executor_for(spec)
        config = executor_settings(self.ws.settings).get(spec.executor or "local")
        if config.type == "local":
            return self.executor()
        if config.type == "docker":
            return self.containers.executor_for(spec)
        return self._named(config)

    def _named(self, config):
        """The executor of a registry type (ray, fake, third-party) named config.name, made once."""
        made = self.__dict__.setdefault("_named_executors", {})
        if config.name not in made:
            made[config.name] = make_executor(config, self.executor_context())
        return made[config.name]

    def executor_context(self):
        """What executors made from buildml.yaml may use of this build (executors.ExecutorContext)."""
        from buildml.executors import ExecutorContext

        return ExecutorContext(self.ws.state_dir, self.ws.settings, self.store, self.options.detach,
                               lambda label, key: self.containers.image_ref(label, key))

    def probe_run(self, record: dict) -> dict | None:
        """What the executor type that detached a run says of it now (Executor.probe); None when it is over."""
        from buildml.load.executor_settings import executor_settings
        from buildml.load.executor_types import executor_class

        name = record.get("executor")
        configs = executor_settings(self.ws.settings).executors
        kind = configs[name].type if name in configs else "ray"  # an executor since removed from buildml.yaml
        return executor_class(kind, name or "").probe(record)

    def _capacity_source(self, config):
        """The executor whose capacity() the resource ledger asks for config, or None (local, docker)."""
        if self._injected:
            return self.executor()
        return None if config.type in ("local", "docker") else self._named(config)

    def _engine_capacity(self) -> dict:
        """The Docker engine's NCPU and MemTotal (unknown when the engine cannot say)."""
        try:
            info = self.containers.engine.client().info()
            return {"cpus": info.get("NCPU"), "memory": info.get("MemTotal")}
        except Exception:  # no engine: the container executor reports that itself when it runs
            return {"cpus": None, "memory": None}

    @property
    def containers(self):
        """The Docker engine side (image builds, container runs), made when a target first needs it."""
        if self.__dict__.get("_containers") is None:
            from buildml.executors.docker.containers import Containers

            self._containers = Containers(self.ws.settings.raw.get("docker"), self.graph.targets, self.warn, self.transfer)
        return self._containers

    def cancel_all(self) -> None:
        """Stop every running action on every executor in use (Ctrl-C)."""
        self.executor().cancel()
        for executor in self.__dict__.get("_named_executors", {}).values():
            executor.cancel()
        if self.__dict__.get("_containers") is not None:
            self._containers.cancel()

    def warn(self, message: str) -> None:
        self.emit(Warning(message))

    def transfer(self, what: str, total: int | None = None, label=None, **counting):
        """A byte counter for a long transfer; reporters show it (live view rows, JSON lines). counting: total_files
        and quiet_below of a transfer that counts files (store/progress.files_progress: large directories)."""
        from buildml.store.progress import Progress

        return Progress(lambda event: self.emit(event), what, total, label, **counting)

    # -- commands --------------------------------------------------------------------------
    def select(self, patterns) -> list:
        from buildml.errors import LabelError

        try:
            return self.graph.select(list(patterns) or ["//..."], self.current_package)
        except LabelError as exc:  # maybe an image target its executor made unnecessary
            from buildml.load.executor_settings import explain_dropped

            raise explain_dropped(exc, patterns, getattr(self, "dropped_images", ()), self.current_package) from None

    def build(self, patterns, dry_run: bool = False, known: dict | None = None):
        """Build (or, with dry_run, only decide) the targets matched by patterns and their deps.

        known: label -> Result of targets proven unchanged since (`buildml watch`): taken as up to date, not
        examined again."""
        return self._run(self.build_labels(patterns), dry_run, known)

    def build_labels(self, patterns) -> list:
        """Targets to build: wildcards (//..., :all) match no test targets; a test named exactly is included."""
        from buildml.labels import parse_pattern

        named = {(p.package, p.name) for p in (parse_pattern(t, self.current_package) for t in patterns) if p.name}
        return [l for l in self.select(patterns) if not self.graph.specs[l].is_test or tuple(l) in named]

    def test_labels(self, patterns) -> list:
        """The test targets matched by patterns (only tests)."""
        labels = [l for l in self.select(patterns) if self.graph.specs[l].is_test]
        if not labels:
            raise UserError(f"no test targets match {' '.join(patterns) or '//...'}",
                            hint="test targets have `kind: test` in their BUILD.yaml")
        return labels

    def test(self, patterns):
        """Build what the matched tests need and run the tests (passes are cached by key)."""
        return self._run(self.test_labels(patterns), False)

    def _run(self, labels, dry_run: bool, known: dict | None = None):
        from buildml.store.admin import cache_lock, record_build

        self._check_overrides()
        self.graph.check_buildable(labels)
        scheduler = self.scheduler(dry_run)
        try:
            local = self.store.local
            if not dry_run:
                from buildml.store.leftovers import sweep

                sweep(local.root / "tmp", lambda: cache_lock(local, exclusive=True))  # what killed builds left
            with cache_lock(local):
                finished = scheduler.build(labels, known)
                if not dry_run and self.options.at_revision is None:
                    self._record_commit(finished)
            if not dry_run:
                record_build(self.store, finished)
            return finished
        finally:
            self.state.close()

    def _record_commit(self, finished) -> None:
        """Add this build to HEAD's commit record: inputs outside git for `--at`, result keys for remote gc."""
        from buildml.engine.commit_record import commit_files, record

        dvc = self.dvc_data()
        of_head = not self.options.param_overrides and self.options.state_dir is None  # not a --param/--sweep variant
        if record(self.ws, self.graph, finished, self.store, self.hasher,
                  pinned=lambda path: dvc.enabled and dvc.pin_for(path) is not None, of_head=of_head):
            self.commit_files = commit_files(self.ws.root)  # the no-op certificate watches HEAD too

    def _check_overrides(self) -> None:
        """A --param key that no target of the workspace selects is a typo: say so instead of ignoring it."""
        from buildml.errors import did_you_mean

        selected = {key for spec in self.graph.specs.values() for _, keys in spec.params for key in keys}
        files = {(file, keys) for spec in self.graph.specs.values() for file, keys in spec.params}
        reader = ParamsReader(self.ws.root)
        for key in self.options.param_overrides:
            if key not in selected and not any(reader.covers(f, ks, key) for f, ks in files if os.path.exists(
                    os.path.join(self.ws.root, f))):
                raise UserError(f"--param {key}: no target selects the param {key!r}",
                                hint=did_you_mean(key, selected) or "targets select params with `params: [key, ...]`")

    def scheduler(self, dry_run: bool = False) -> Scheduler:
        """The build's wiring, made here once: the scheduler and the rebuilder, runner and ledger it drives
        (build, test, status, explain, verify and the features that need an action all go through it)."""
        from buildml.engine.external import ExternalData
        from buildml.engine.fetch_or_rebuild import FetchOrRebuild
        from buildml.store import bandwidth
        from buildml.engine.param_overrides import overrides_of
        from buildml.engine.resources import Ledger, pools_for
        from buildml.executors.docker.base_images import BaseImages
        from buildml.load.executor_settings import executor_settings
        from buildml.load.lockfile import LOCK_FILE

        hasher = self.hasher = Hasher(self.state)  # kept: buildml/noop.py checks what it read
        out_root = self.options.out_root or str(self.ws.root)
        materializer = Materializer(out_root, self.state, hasher, self.store, self.warn, self.ws.state_dir / "displaced")
        params = ParamsReader(self.ws.root, self.options.param_overrides)
        check, update, lock = self.options.at_revision is None, self.options.update_lock, self.ws.root / LOCK_FILE
        externals = ExternalData(lock, self.store, self.warn, check=check, update=update, dry_run=dry_run,
                                 transfer=self.transfer)
        base_images = BaseImages(lock, lambda: self.containers.engine, check=check, update=update, dry_run=dry_run)
        missing = lambda action: self.executor_for(action.spec).missing(action)  # noqa: E731  (declared by Executor)
        ledger = Ledger(pools_for(executor_settings(self.ws.settings), self._capacity_source, self._engine_capacity))
        remote = self.store.remote
        policy = FetchOrRebuild(self.store, self.ws.settings.prefer, ledger.lacking,
                                lambda: bandwidth.estimate(self.store.local.root, remote.url)) if remote else None
        rebuilder = Rebuilder(self.graph, self.state, hasher, params, self.store, materializer, self.options.rerun_tests,
                              externals, base_images, missing, policy, transfer=self.transfer)
        runner = Runner(self.store, self.executor_for, functools.cache(lambda: git_provenance(self.ws.root)),
                        devices=ledger.device_env, overrides=lambda action: overrides_of(action, params),
                        unusable=rebuilder.unusable, root=self.ws.root, transfer=self.transfer, warn=self.warn,
                        max_files_per_folder=self.ws.settings.max_files_per_folder)
        jobs = self.options.jobs or self.ws.settings.jobs or os.cpu_count() or 2
        return Scheduler(self.graph, rebuilder, runner, materializer, self.state, self.emit, jobs,
                         self.options.keep_going, dry_run, cancel=self.cancel_all, retries=self.options.test_retries,
                         resources=ledger, download_minimal=self.options.download == "minimal")

    def action_for(self, label, results: dict):
        """(Action, staged inputs) of label, given the Results of its dependencies (shell, serve, verify)."""
        return self.scheduler().rebuilder.action_for(label, results)

    def explain(self, pattern: str) -> dict:
        """The key inputs of one target and how they differ from its last build."""
        label = parse_label(pattern if pattern.startswith(("//", ":")) else "//" + pattern, self.current_package)
        self.graph.select([str(label)])
        finished = self.build([str(label)], dry_run=True)
        result = {r.label: r for r in finished.results}[label]
        last = State(self.ws.state_dir).last_build(str(label))
        info = {"target": str(label), "status": result.status, "key": result.key, "reasons": list(result.reasons),
                "last_key": last.get("key") if last else None}
        found = self.graph.inputs[label].python_deps
        if found:  # python_deps: auto
            info["python_deps"] = [list(pair) for pair in found]
        if last:
            info["last_inputs"] = last.get("inputs", {})
            info["last_params"] = last.get("params", {})
        return info

    def deps(self, pattern: str, reverse: bool = False) -> list:
        labels = self.select([pattern])
        found = set()
        for label in labels:
            found |= (self.graph.dag.descendants if reverse else self.graph.dag.ancestors)(label)
        return sorted(found)

    def log(self, pattern: str) -> bytes:
        """The log of the last run of the target; its digest comes from the state and is checked there."""
        from buildml.errors import EnvironmentProblem
        from buildml.store.local import BlobMissing

        label = self.select([pattern])[0]
        digest = self.state.last_log(str(label))
        if digest is None:
            raise UserError(f"{label} has no recorded log", hint=f"build it first: buildml build {label}")
        try:
            return self.store.read_bytes(digest)
        except BlobMissing:
            raise EnvironmentProblem(f"the log of {label}'s last run ({digest[:12]}) is not in the cache "
                                     f"{self.store.local.root}",
                                     hint="it was removed by `buildml cache gc`, or BUILDML_CACHE_DIR changed; "
                                          "it comes back when the target runs again") from None

    def clean(self, everything: bool = False, displaced: bool = False):
        """Remove the outputs buildml wrote that are still as it wrote them (and, with everything, the workspace
        state but .buildml/displaced/; with displaced, that too). A Cleaned says what went and what stayed."""
        from buildml.engine.clean import Cleaned, clean_state_dir, remove_at_trees, remove_outputs, remove_variant_trees

        labels = list(self.graph.specs)  # a workspace that does not load is an error before anything is touched
        cleaned = Cleaned()
        remove_outputs(self.ws.root, self.state, Hasher(self.state), cleaned)
        for label in labels:
            self.state.forget_build(str(label))
        self.state.flush()
        self.state.close()
        remove_variant_trees(self.ws.root, cleaned)
        remove_at_trees(self.ws.root, cleaned)
        clean_state_dir(self.ws.root / STATE_DIR, everything, displaced, cleaned)
        return cleaned


def make_executor(config, context):
    """A named executor of a registry type (ray, fake, third-party), its module imported only now."""
    from buildml.load.executor_types import executor_class

    return executor_class(config.type, config.name).from_config(config, context)


def git_provenance(root) -> dict:
    """The commit of the workspace and whether the tree has uncommitted changes, if it is a git repo."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"git_commit": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None}


