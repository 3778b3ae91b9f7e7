"""The scheduler: walk the DAG in dependency order, running independent targets in parallel."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from buildml.errors import BuildmlError, CacheCorruption, Interrupted, UserError
from buildml.events import (
    BuildFinished,
    BuildStarted,
    Outcome,
    Result,
    TargetFinished,
    TargetLog,
    TargetStarted,
)
from buildml.engine.rebuilder import Decision, build_record
from buildml.executors.remote_runs import Detached
from buildml.engine.param_overrides import with_override_reasons
from buildml.engine.resources import Ledger
from buildml.engine.runner import failure_message
from buildml.store.local import BlobMissing


NOT_DOWNLOADED = "outputs left in the cache (--download=minimal: not a target asked for)"


class Scheduler:
    """Considers each target once its dependencies are done; at most `jobs` at a time."""

    def __init__(self, graph, rebuilder, runner, materializer, state, emit, jobs: int = 2,
                 keep_going: bool = False, dry_run: bool = False, cancel=lambda: None, retries: int | None = None,
                 resources=None, download_minimal: bool = False):
        self.download_minimal = download_minimal  # cached results of targets not asked for stay in the cache
        self._asked: set = set()
        self.retries = retries  # overrides every test's own retries when set
        self.resources = resources or Ledger()  # cpus/gpus/memory per executor (buildml/resources.py)
        self.graph, self.rebuilder, self.runner = graph, rebuilder, runner
        self.materializer, self.state, self.emit = materializer, state, emit
        self.jobs, self.keep_going, self.dry_run, self.cancel = max(1, jobs), keep_going, dry_run, cancel

    def build(self, labels, known: dict | None = None) -> BuildFinished:
        """Build labels and what they need; known: label -> a Result still valid (taken as up to date, unexamined)."""
        self._asked = set(labels)
        order = self.graph.closure(labels)
        start = time.monotonic()
        self.emit(BuildStarted(tuple(order)))
        wanted = set(order)
        results: dict = {l: Result(l, Outcome.UP_TO_DATE, r.key, r.outputs, manifest=r.manifest, is_test=r.is_test)
                         for l, r in (known or {}).items() if l in wanted and r.ok}
        for label in order:
            if label in results:
                self.emit(TargetFinished(results[label]))
        interrupted = False
        try:
            self._walk(order, results)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.state.flush()
        for label in order:
            results.setdefault(label, Result(label, Outcome.NOT_BUILT, is_test=self.graph.specs[label].is_test,
                                             error="build interrupted" if interrupted else "build stopped after a failure"))
        finished = BuildFinished(tuple(results[l] for l in order), time.monotonic() - start, interrupted)
        self.emit(finished)
        if interrupted:
            raise Interrupted("build interrupted; running actions were stopped and the cache is consistent")
        return finished

    def _walk(self, order, results) -> None:
        """Decide each ready target inline (cheap: stats and lookups); only work goes to the pool."""
        dag = self.graph.dag.subgraph(order)
        self._dag, self._results = dag, results
        self._waiting = {l: dag.in_degree(l) for l in order}
        for label in results:  # known before the walk: their dependents wait for them no longer
            for child in dag.successors(label):
                self._waiting[child] -= 1
        self._ready = deque(l for l in order if self._waiting[l] == 0 and l not in results)
        self._stopping = False
        queued: deque = deque()
        running: dict = {}
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="buildml") as pool:
            try:
                while running or (not self._stopping and (self._ready or queued)):
                    while self._ready and not self._stopping:
                        label = self._ready.popleft()
                        if label in results:
                            continue
                        prepared = self._prepare(label, {d: results[d] for d in dag.predecessors(label)})
                        if not isinstance(prepared, Result):  # an action that can never fit fails at once
                            prepared = self._guarded(label, self._refused, label, prepared) or prepared
                        if isinstance(prepared, Result):
                            self._finish(label, prepared)
                        else:
                            queued.append((label, prepared))
                    while queued and len(running) < self.jobs and not self._stopping:
                        item = self.resources.take(queued)  # the first whose resources fit on its executor now
                        if item is None:
                            break
                        label, prepared = item
                        running[pool.submit(self._complete, label, *prepared)] = label
                    if not running:
                        continue
                    done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in done:
                        self.resources.release(running[future])
                        self._finish(running.pop(future), future.result())
            except KeyboardInterrupt:
                self.cancel()
                for future in list(running):
                    future.cancel()
                wait(running)
                raise

    def _finish(self, label, result: Result) -> None:
        """Record a result and release (or skip) the targets waiting on it."""
        self._results[label] = result
        self.emit(TargetFinished(result))
        if result.status == Outcome.FAILED and not self.keep_going:
            self._stopping = True
        for child in sorted(self._dag.successors(label)):
            if result.ok or result.status == Outcome.STALE:
                self._waiting[child] -= 1
                if self._waiting[child] == 0 and child not in self._results:
                    self._ready.append(child)
            else:
                skipped = Outcome.DETACHED if result.status == Outcome.DETACHED else Outcome.NOT_BUILT
                self._skip(self._dag, child, label, self._results, skipped)

    def _skip(self, dag, label, failed, results, status=Outcome.NOT_BUILT) -> None:
        if label in results:
            return
        why = f"dependency {failed} failed" if status == Outcome.NOT_BUILT else f"waits for {failed} (detached)"
        result = Result(label, status, error=why, is_test=self.graph.specs[label].is_test)
        results[label] = result
        self.emit(TargetFinished(result))
        for child in sorted(dag.successors(label)):
            self._skip(dag, child, failed, results, status)

    # -- one target ----------------------------------------------------------------------
    def _prepare(self, label, deps: dict):
        """Hash inputs and decide. A Result when that settles it (up to date, dry run, error), else the work."""
        spec = self.graph.specs[label]
        stale = [str(d) for d, r in deps.items() if r.status == Outcome.STALE]
        if stale:
            return Result(label, Outcome.STALE, reasons=tuple(f"dependency {d} is stale" for d in stale), is_test=spec.is_test)
        return self._guarded(label, self._decide, label, deps)

    def _decide(self, label, deps):
        action, staged = self.rebuilder.action_for(label, deps)
        decision = with_override_reasons(self.rebuilder.decide(label, action), action, self.rebuilder.params)
        if decision.what == Outcome.UP_TO_DATE or self.dry_run:
            return self._act(label, action, staged, decision)
        return action, staged, decision

    def _refused(self, label, prepared) -> Result | None:
        """FAILED (a user error: exit 2) when the action asks for more than its executor has."""
        error = self.resources.refusal(label, prepared)
        return Result(label, Outcome.FAILED, error=error.render(), user_error=error) if error else None

    def _complete(self, label, action, staged, decision) -> Result:
        """Restore or execute (in a worker thread)."""
        return self._guarded(label, self._act, label, action, staged, decision)

    def _guarded(self, label, fn, *args):
        """Run fn, turning buildml errors into a FAILED result and timing Results."""
        start = time.monotonic()
        try:
            result = fn(*args)
        except Detached as exc:  # --detach: handed to a remote executor, not awaited (buildml/remote_runs.py)
            result = Result(label, Outcome.DETACHED, error=exc.message, source=exc.executor)
        except UserError as exc:
            result = Result(label, Outcome.FAILED, error=exc.render(), user_error=exc)
        except BuildmlError as exc:
            result = Result(label, Outcome.FAILED, error=exc.render())
        if isinstance(result, Result):
            result.duration = time.monotonic() - start
            result.is_test = self.graph.specs[label].is_test
        return result

    def _act(self, label, action, staged, decision) -> Result:
        last = self.state.last_build(str(label))
        if decision.what == Outcome.UP_TO_DATE:
            key = last.get("key", action.key) if action.spec.frozen else action.key  # frozen: the outputs' own key
            return Result(label, Outcome.UP_TO_DATE, key, last["outputs"], manifest=last.get("manifest"))
        if self.dry_run:
            what = Outcome.RESTORABLE if decision.what == Outcome.RESTORE else Outcome.STALE
            outputs = decision.manifest["outputs"] if decision.manifest else {}
            return Result(label, what, action.key, outputs, decision.reasons, manifest=decision.manifest)
        if decision.what == Outcome.RESTORE and self.download_minimal and label not in self._asked:
            return Result(label, Outcome.CACHED, action.key, decision.manifest["outputs"],
                          decision.reasons + (NOT_DOWNLOADED,), source=self.rebuilder.store.tier_of(action.key),
                          manifest=decision.manifest)  # its bytes come when a RUN stages them; nothing recorded
        if decision.what == Outcome.RESTORE:
            try:
                self._restore(label, action, decision.manifest)
                return Result(label, Outcome.CACHED, action.key, decision.manifest["outputs"], decision.reasons,
                              source=self.rebuilder.store.tier_of(action.key), manifest=decision.manifest)
            except (CacheCorruption, BlobMissing) as exc:
                reason = exc.message if isinstance(exc, CacheCorruption) else "a cached output blob is missing"
                return self._execute(label, action, staged, (reason,))
        return self._execute(label, action, staged, decision.reasons)

    def _execute(self, label, action, staged, reasons) -> Result:
        """Run the action (the runner asks the cache again under the action's lock)."""
        runs_on = self.runner.executor_for(action.spec)
        executor = runs_on.name
        self.emit(TargetStarted(label, executor, reasons, runs_on.attaching(action)))
        attempts = 0
        while True:
            attempts += 1
            manifest, outcome, log_digest, log_tail = self.runner.run(
                action, staged, lambda line: self.emit(TargetLog(label, line)))
            if manifest is not None or attempts > self._retries(action.spec):
                break
        if manifest is None:
            self.state.record_log(str(label), log_digest)
            return Result(label, Outcome.FAILED, action.key, reasons=reasons, source=executor, error=failure_message(outcome),
                          log_tail=log_tail, log_digest=log_digest, attempts=attempts)
        self._restore(label, action, manifest)
        self.state.record_log(str(label), log_digest)
        status = Outcome.EXECUTED if outcome is not None else Outcome.CACHED
        return Result(label, status, action.key, manifest["outputs"], reasons, source=executor if outcome else "local",
                      manifest=manifest, log_digest=log_digest, attempts=attempts)

    def rerun(self, label, deps: dict, on_line) -> tuple[dict | None, object, str]:
        """Execute label again, ignoring the cache, under the resource ledger as a build runs it (its GPUs in
        CUDA_VISIBLE_DEVICES, its executor's limits); record nothing. (manifest or None, outcome, log tail):
        `buildml verify` compares the manifest with the recorded one."""
        action, staged = self.rebuilder.action_for(label, deps)
        prepared = (action, staged, Decision(Outcome.RUN, ("verify",)))
        refused = self.resources.refusal(label, prepared)
        if refused:
            raise refused
        self.resources.take(deque([(label, prepared)]))  # alone on its executor, so it fits
        try:
            manifest, outcome, _log, log_tail = self.runner.rerun(action, staged, on_line)
        finally:
            self.resources.release(label)
        return manifest, outcome, log_tail

    def _retries(self, spec) -> int:
        if not spec.is_test:
            return 0
        return spec.retries if self.retries is None else self.retries

    def _restore(self, label, action, manifest) -> None:
        spec = action.spec
        self.materializer.restore(manifest["outputs"], spec.outs, manifest.get("out_dirs", ()))
        record = build_record(action, manifest["outputs"])
        record["manifest"] = {k: manifest[k] for k in ("key", "log", "metrics", "exit_code", "cost") if k in manifest}
        self.state.record_build(str(label), action.key, record)


def exit_status(finished: BuildFinished) -> int:
    """0 success, 1 build failure, 2 a configuration (user) error surfaced during the build."""
    failed = [r for r in finished.results if r.status == Outcome.FAILED]
    if any(getattr(r, "user_error", None) for r in failed):
        return 2
    return 1 if failed or finished.count(Outcome.NOT_BUILT) else 0



