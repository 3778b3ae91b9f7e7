"""The experiment commands: `buildml metrics`, `buildml params`, and `--sweep`/`--sort` on `buildml build`."""

from __future__ import annotations

import json
import os
import sys

import click

from buildml.cli.completion import complete_labels

SORT_HELP = "rank sweep variants by METRIC: highest first, or METRIC:asc for lowest first (e.g. loss:asc)"


def _dump(obj) -> None:
    """A --json answer: one JSON line, the summary object (as every --json output ends)."""
    click.echo(json.dumps({"event": "summary", **obj}, sort_keys=True, default=str))


def _session(options=None):
    from buildml.api import Options, Session

    return Session(".", options or Options())


def _at(rev: str):
    """A session on REV's tree (removed when the command ends) with the current stores."""
    from buildml.api import Options
    from buildml.features.history import session_at

    return click.get_current_context().with_resource(session_at(rev, Options()))


def sweep_options(f):
    """--sweep and --sort, added to `buildml build`."""
    f = click.option("--sort", "sort", metavar="METRIC[:asc]", help=SORT_HELP)(f)
    return click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
                        help="build every combination of these param values, each as its own cached variant")(f)


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_labels)
@click.option("--history", "past", is_flag=True, help="every past result of TARGET in the local cache: date, commit, params, metrics")
@click.option("--compare", "rev", metavar="REV", help="beside the results of git revision REV's tree, with the change")
@click.option("--json", "as_json", is_flag=True, help="one JSON line (the summary object)")
def metrics(targets, past, rev, as_json):
    """Show the metrics of the current builds of TARGETS (default: every target with metrics)."""
    from buildml.features import experiments as ex
    from buildml.report import tables as text
    from buildml.errors import UserError

    if past and rev:
        raise UserError("--history and --compare do not go together", hint="use one of them")
    session = _session()
    if past:
        if len(targets) > 1:
            raise UserError("--history takes one TARGET", hint="e.g. buildml metrics --history //:evaluate")
        label = targets[0] if targets else _only_metrics_target(session)
        info = ex.history(session, label)
        _dump(info) if as_json else click.echo(text.render_history(info))
        return 0
    current = ex.current_metrics(session, targets)
    if not rev:
        _dump({"targets": current}) if as_json else click.echo(text.render_current(current))
        return 0
    at = _at(rev)
    info = ex.compare(current, ex.metrics_at(at, [ex.one_label(session, e["target"]) for e in current], rev), rev,
                      at.options.at_revision)
    _dump(info) if as_json else click.echo(text.render_compare(info))
    return 0


def _only_metrics_target(session) -> str:
    from buildml.errors import UserError
    from buildml.features.experiments import metric_labels

    labels = metric_labels(session, ())
    if len(labels) != 1:
        raise UserError("--history needs a TARGET", hint="targets with metrics: " + ", ".join(map(str, labels)))
    return str(labels[0])


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_labels)
@click.option("--compare", "rev", metavar="REV", help="only the params whose value differs from git revision REV's")
@click.option("--param", "overrides", multiple=True, metavar="KEY=VALUE", help="as `build --param` would set it")
@click.option("--json", "as_json", is_flag=True, help="one JSON line (the summary object)")
def params(targets, rev, overrides, as_json):
    """Show the params TARGETS (default //...) select and their values in effect."""
    from buildml.features import experiments as ex
    from buildml.report import tables as text
    from buildml.api import Options
    from buildml.load.params import parse_override

    session = _session(Options(param_overrides=dict(parse_override(p) for p in overrides)))
    rows = ex.params_in_effect(session, targets)
    if not rev:
        _dump({"params": rows}) if as_json else click.echo(text.render_params(rows))
        return 0
    at = _at(rev)
    present = [t for t in targets if _defined(at, t)] if targets else []
    old = ex.params_in_effect(at, present) if present or not targets else []
    diff = ex.compare_params(rows, old)
    if as_json:
        _dump({"rev": rev, "commit": at.options.at_revision, "params": diff})
    else:
        click.echo(text.render_params_compare(rev, at.options.at_revision, diff))
    return 0


def _defined(session, pattern: str) -> bool:
    from buildml.errors import UserError

    try:
        session.select([pattern])
        return True
    except UserError:
        return False


def build_sweep(targets, sweeps, sort_text, options, at, as_json, quiet) -> int:
    """`buildml build --sweep ...`: every variant, then the table (or one JSON object)."""
    from buildml.report import tables as text
    from buildml.features import sweep as sw
    from buildml.errors import UserError
    from buildml.events import Warning

    if not sweeps:
        raise UserError("--sort ranks the variants of a sweep", hint="add --sweep KEY=V1,V2,...")
    if at:
        raise UserError("--sweep cannot be combined with --at", hint="check the revision out, then sweep there")
    axes = sw.parse_axes(sweeps)
    sort = sw.parse_sort(sort_text)
    session = _session(options)
    labels = sw.sweep_labels(session, targets)
    sw.check_keys(session, labels, axes)
    sw.check_sort(session, labels, sort)
    todo = sw.variants(session, axes, options.out_root)
    jobs = options.jobs or session.ws.settings.jobs or os.cpu_count() or 2

    def emit_for(variant):
        def emit(event):
            if isinstance(event, Warning):
                click.echo(f"WARNING   variant {variant.id}: {event.message}", err=True)
        return emit

    if not (as_json or quiet):
        click.echo(f"sweep: {len(todo)} variants of {', '.join(map(str, labels))}")
    done = []
    checked, bad_sort = [], []  # --sort is checked on the first variant with metrics; a bad one stops the others

    def on_done(result):
        if bad_sort and result.finished is None:
            return  # never started: the sweep was stopped
        done.append(result)
        if sort and result.metrics and not checked:
            checked.append(result)
            try:
                sw.resolve_metric([result], sort.metric)
            except UserError as exc:
                bad_sort.append(exc)
                sweep.stop()
        if as_json:  # a JSON line per variant as it ends; the summary object closes the output
            row = sw.report([result], axes, None)["variants"][0]
            click.echo(json.dumps({"event": "variant", **row}, sort_keys=True, default=str))
            sys.stdout.flush()
        elif not quiet or not result.ok:
            click.echo(text.render_variant(result, len(done), len(todo)))
            sys.stdout.flush()

    sweep = sw.Sweep(".", options, labels, jobs, emit_for)
    results = sweep.run(todo, on_done)
    if bad_sort:
        info = sw.report([r for r in results if r.finished is not None], axes, None)
        _dump(info) if as_json else click.echo(text.render_sweep(info))
        exc = bad_sort[0]
        raise UserError(f"{exc.message} (in the first variant built; the sweep was stopped)", hint=exc.hint)
    try:
        info = sw.report(results, axes, sort)
    except UserError:  # an unknown --sort metric: still show what was built (a re-run is all cached)
        info = sw.report(results, axes, None)
        _dump(info) if as_json else click.echo(text.render_sweep(info))
        raise
    _dump(info) if as_json else click.echo(text.render_sweep(info))
    return 0 if info["ok"] else 1
