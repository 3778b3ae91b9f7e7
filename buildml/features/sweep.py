"""Parameter sweeps: build the same targets once per combination of param values, each a cached variant.

A variant is the build with one combination applied as `--param` overrides. Its outputs go to
`buildml-out/sweep/<variant id>/` (never over the work tree's) and its workspace state to
`.buildml/sweep/<variant id>/`, so a re-run finds every variant up to date (or in the cache)
and executes nothing. The variant id is a digest of all its overrides. Variants share the
cache, whose per-key locks make each action execute once even when variants run at once.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from buildml.errors import Interrupted, UserError, did_you_mean
from buildml.events import Outcome
from buildml.hashing import digest_record
from buildml.load.params import ParamsReader, parse_value
from buildml.features.provenance import flat_metrics
from buildml.load.workspace import OUT_DIR, STATE_DIR, SWEEP_DIR



@dataclass(frozen=True)
class Variant:
    """One combination of a sweep: its id, the swept values, where its outputs and state go."""

    id: str
    params: tuple  # ((key, value), ...) in the order of the --sweep options
    out_root: str
    state_dir: str

    @property
    def overrides(self) -> dict:
        return dict(self.params)


@dataclass
class VariantResult:
    """What building one variant gave: the build (None if it never started), its metrics, an error."""

    variant: Variant
    finished: object = None
    metrics: dict | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.finished is not None and not any(
            not r.ok for r in self.finished.results)


@dataclass(frozen=True)
class Sort:
    """Rank variants by a metric: highest first unless ascending."""

    metric: str
    ascending: bool = False

    def __str__(self) -> str:
        return f"{self.metric}:{'asc' if self.ascending else 'desc'}"


# -- parsing ------------------------------------------------------------------------------------
def parse_axes(texts) -> dict:
    """('train.C=0.1,1', 'train.seed=1,2') -> {'train.C': [0.1, 1], 'train.seed': [1, 2]}; values read as YAML."""
    axes: dict = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        items = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(items):
            raise UserError(f"invalid --sweep {text!r}", hint="use KEY=V1,V2,..., e.g. --sweep train.C=0.1,1,10")
        if key in axes:
            raise UserError(f"--sweep {key} is given twice", hint=f"list every value once: --sweep {key}=V1,V2,...")
        parsed = [parse_value(v, "--sweep", key) for v in items]
        if len({digest_record("Value", v) for v in parsed}) != len(parsed):
            raise UserError(f"--sweep {text!r} lists a value twice")
        axes[key] = parsed
    return axes


def parse_sort(text: str | None) -> Sort | None:
    """'accuracy' or 'accuracy:desc' (highest first), 'loss:asc' (lowest first)."""
    if not text:
        return None
    name, order = text, "desc"
    for suffix in (":asc", ":desc"):
        if text.endswith(suffix):
            name, order = text[: -len(suffix)], suffix[1:]
    if not name:
        raise UserError(f"invalid --sort {text!r}", hint="use METRIC, METRIC:desc (highest first) or METRIC:asc (lowest first)")
    return Sort(name, order == "asc")


# -- planning -----------------------------------------------------------------------------------
def sweep_labels(session, patterns) -> list:
    """The targets to build per variant: those matched, plus the metrics targets downstream of them (for the table)."""
    chosen = session.build_labels(patterns)
    closure = set(session.graph.closure(chosen))
    specs = session.graph.specs
    downstream = set()
    for label in chosen:
        downstream |= session.graph.dag.descendants(label)
    extra = sorted(l for l in downstream - closure if specs[l].metrics and not specs[l].is_test)
    return chosen + extra


def check_sort(session, labels, sort: Sort | None) -> None:
    """Before anything runs: --sort needs a target of the sweep that declares `metrics:`."""
    if sort is None:
        return
    specs = session.graph.specs
    if not any(specs[l].metrics for l in session.graph.closure(labels) if not specs[l].is_test):
        raise UserError(f"--sort {sort.metric}: no target of this sweep declares metrics",
                        hint="sweep targets that declare `metrics:` (or whose downstream targets do)")


def check_keys(session, labels, axes: dict) -> None:
    """Every swept key must be a param some target of the build selects."""
    selections = {(f, ks) for l in session.graph.closure(labels) for f, ks in session.graph.specs[l].params}
    declared = {k for _, keys in selections for k in keys}
    reader = ParamsReader(session.ws.root)
    for key in axes:
        if key not in declared and not any(reader.covers(f, ks, key) for f, ks in selections
                                           if os.path.isfile(session.ws.abspath(f))):
            raise UserError(f"--sweep {key}: no target of this build selects param {key!r}",
                            hint=did_you_mean(key, declared) or ("params selected: " + ", ".join(sorted(declared))
                                                                 if declared else "no target of this build selects params"))
    clash = sorted(set(axes) & set(session.options.param_overrides))
    if clash:
        raise UserError(f"{clash[0]} is both swept and set with --param", hint="drop one of the two")


def variants(session, axes: dict, out_base: str | None = None) -> list[Variant]:
    """Every combination of the axes, in order (the first axis varies slowest)."""
    root = Path(session.ws.root)
    out = Path(out_base) if out_base else root / OUT_DIR / SWEEP_DIR
    base = dict(session.options.param_overrides)
    found = []
    for combo in itertools.product(*axes.values()):
        params = tuple(zip(axes, combo))
        vid = digest_record("SweepVariant", {**base, **dict(params)})[:10]
        found.append(Variant(vid, params, str(out / vid), str(root / STATE_DIR / SWEEP_DIR / vid)))
    return found


# -- running ------------------------------------------------------------------------------------
class Sweep:
    """Builds every variant (up to `parallel` at once), reporting each as it finishes."""

    def __init__(self, start, options, labels, jobs: int, emit_for=lambda variant: (lambda event: None)):
        self.start, self.options, self.labels = start, options, [str(l) for l in labels]
        self.jobs, self.emit_for = max(1, jobs), emit_for
        self._load_lock = threading.Lock()  # BUILD files are loaded (and the load cache written) one at a time
        self._sessions: dict = {}
        self._stop = threading.Event()

    def stop(self) -> None:
        """Start no further variant and stop the running ones' actions (the cache stays consistent)."""
        self._stop.set()
        for session in list(self._sessions.values()):
            session.cancel_all()

    def run(self, todo: list[Variant], on_done=lambda result: None) -> list[VariantResult]:
        parallel = min(len(todo), self.jobs)
        per_variant = max(1, self.jobs // max(1, parallel))
        results = []
        with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="buildml-sweep") as pool:
            pending = {pool.submit(self._build, v, per_variant): v for v in todo}
            try:
                while pending:
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in done:
                        pending.pop(future)
                        result = future.result()
                        results.append(result)
                        on_done(result)
            except KeyboardInterrupt:
                self._stop.set()
                for future in pending:
                    future.cancel()
                for session in list(self._sessions.values()):
                    session.cancel_all()
                wait(pending)
                raise Interrupted("sweep interrupted; running actions were stopped and the cache is consistent") from None
        order = {v.id: i for i, v in enumerate(todo)}
        return sorted(results, key=lambda r: order[r.variant.id])

    def _build(self, variant: Variant, jobs: int) -> VariantResult:
        from buildml.api import Session
        from buildml.errors import BuildmlError

        if self._stop.is_set():
            return VariantResult(variant, error="sweep interrupted")
        overrides = {**self.options.param_overrides, **variant.overrides}
        options = replace(self.options, param_overrides=overrides, out_root=variant.out_root,
                          state_dir=variant.state_dir, jobs=jobs)
        try:
            session = Session(self.start, options, self.emit_for(variant))
            with self._load_lock:
                session.graph  # noqa: B018 - load and analyse now, under the lock
            self._sessions[variant.id] = session
            finished = session.build(self.labels)
        except Interrupted:
            raise
        except BuildmlError as exc:
            return VariantResult(variant, error=exc.render())
        finally:
            self._sessions.pop(variant.id, None)
        return VariantResult(variant, finished, variant_metrics(finished))


def variant_metrics(finished) -> dict:
    """Flat metrics of every built target that has some; names are prefixed with the target when two collide."""
    per_target = [(str(r.label), flat_metrics(r.manifest.get("metrics") or {}))
                  for r in finished.results if r.ok and r.manifest and r.manifest.get("metrics")]
    names = [n for _, m in per_target for n in m]
    out = {}
    for label, metrics in per_target:
        for name, value in metrics.items():
            out[name if names.count(name) == 1 else f"{label}:{name}"] = value
    return out


# -- ranking --------------------------------------------------------------------------------------
def rank(results: list[VariantResult], sort: Sort | None) -> list[VariantResult]:
    """Best first by sort's metric; variants without a number for it come last, in sweep order."""
    if sort is None:
        return list(results)
    name = resolve_metric(results, sort.metric)

    def key(r):
        value = (r.metrics or {}).get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return (1, 0)
        return (0, value if sort.ascending else -value)

    return sorted(results, key=key)


def resolve_metric(results, metric: str) -> str:
    """The metric column named (exactly, or the one column ending in ':metric'); an error naming the choices."""
    names = sorted({n for r in results for n in (r.metrics or {})})
    if metric in names:
        return metric
    endings = [n for n in names if n.endswith(":" + metric)]
    if len(endings) == 1:
        return endings[0]
    if not names:
        raise UserError(f"--sort {metric}: no variant produced metrics",
                        hint="sweep targets that declare `metrics:` (or whose downstream targets do)")
    raise UserError(f"--sort {metric}: no such metric", hint=did_you_mean(metric, names) or "metrics: " + ", ".join(names))


def report(results: list[VariantResult], axes: dict, sort: Sort | None) -> dict:
    """The sweep as one JSON-ready object: a row per variant, best first, and the total counts."""
    from buildml.report.console import summary_counts

    rows = []
    for r in rank(results, sort):
        counts = summary_counts(r.finished) if r.finished is not None else {}
        failed = [f"{x.label}: {x.error}" for x in (r.finished.results if r.finished else ()) if x.status == Outcome.FAILED]
        rows.append({"id": r.variant.id, "params": r.variant.overrides, "out": r.variant.out_root, "ok": r.ok,
                     "metrics": r.metrics or {}, "executed": counts.get("executed", 0), "cached": counts.get("cached", 0),
                     "up_to_date": counts.get("up_to_date", 0), "failed": counts.get("failed", 0),
                     "errors": ([r.error] if r.error else []) + failed})
    totals = {k: sum(row[k] for row in rows) for k in ("executed", "cached", "up_to_date", "failed")}
    return {"sweep": {k: list(v) for k, v in axes.items()}, "sort": str(sort) if sort else None,
            "variants": rows, **totals, "ok": all(row["ok"] for row in rows)}
