"""The command line: parse arguments, call the facade, map typed errors to messages and exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from buildml import __version__
from buildml.cli.completion import complete_labels
from buildml.errors import BuildmlError, Interrupted, UserError
from buildml.events import Outcome
from buildml.cli.experiments import build_sweep, sweep_options  # `metrics`, `params`, `build --sweep`

JSON_HELP = "machine-readable JSON lines"


def _sigterm(_signum, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> None:
    """Entry point of the `buildml` console script."""
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        code = cli.main(args=argv, prog_name="buildml", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = 2
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        code = 130
    except (KeyboardInterrupt, Interrupted):
        click.echo("buildml: interrupted; running actions were stopped and the cache is consistent", err=True)
        code = 130
    except BuildmlError as exc:
        click.echo(f"buildml: error: {exc.render()}", err=True)
        code = exc.exit_code
        if "--json" in (sys.argv[1:] if argv is None else argv):  # a JSON reader gets the error as a line too
            click.echo(json.dumps(error_object(exc, code), sort_keys=True))
    except Exception as exc:  # a bug: say so plainly, without a traceback unless asked
        if os.environ.get("BUILDML_DEBUG"):
            raise
        click.echo(f"buildml: internal error: {type(exc).__name__}: {exc}\n  hint: this is a bug in buildml; "
                   "rerun with BUILDML_DEBUG=1 for the traceback and report it", err=True)
        code = 3
    sys.exit(code or 0)


def error_object(exc: BuildmlError, code: int) -> dict:
    """The JSON line of an error: message, where (file:line:col), field, hint, who must act, exit code."""
    where = str(exc.location) if exc.location else None
    return {"event": "error", "error": exc.message, "location": where, "field": exc.field or None,
            "hint": exc.hint or None, "who": exc.who, "exit_code": code}


def _session(options=None, emit=lambda e: None, at=None):
    from buildml.api import Options, Session

    if at is None:
        return Session(".", options or Options(), emit)
    from buildml.features.history import session_at  # the checkout lives until the command ends, however it ends

    return click.get_current_context().with_resource(session_at(at, options or Options(), emit))


def _at_option(f):
    return click.option("--at", "at", metavar="REV",
                        help="use git revision REV's tree (sha, tag, branch, HEAD~3) with the same caches")(f)


def _out_options(f):
    f = click.option("--update-lock", is_flag=True, help="re-pin external data that drifted from buildml.lock")(f)
    return click.option("--out", "out", type=click.Path(file_okay=False),
                        help="put outputs under DIR (with --at, default buildml-out/@SHA)")(f)


COLOR_HELP = "colour the output (default: on a terminal; NO_COLOR turns it off, FORCE_COLOR on)"
EXECUTOR_HELP = "run targets on NAME: local (here, ignoring image:), docker, or an executor of buildml.yaml"
REMOTE_CACHE_HELP = "shared remote cache (any fsspec URL); overrides cache.remote"

# One declaration per option that several commands take, so each reads and behaves the same everywhere.
_param_option = click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="override a param for this run")
_color_option = click.option("--color/--no-color", default=None, help=COLOR_HELP)
_executor_option = click.option("--executor", metavar="NAME", help=EXECUTOR_HELP)
_remote_cache_option = click.option("--remote-cache", metavar="URL", help=REMOTE_CACHE_HELP)


def _run_options(f):
    """The options `build` and `test` share."""
    for option in reversed([
        click.option("-j", "--jobs", type=click.IntRange(min=1), help="actions to run at once (default: cores)"),
        click.option("-k", "--keep-going", is_flag=True, help="keep going after a failure"),
        _param_option,
        click.option("--json", "as_json", is_flag=True, help=JSON_HELP),
        click.option("-v", "--verbose", count=True, help="more output (-vv: action logs)"),
        click.option("-q", "--quiet", is_flag=True, help="only failures and the summary"),
        _remote_cache_option,
        click.option("--remote-upload/--no-remote-upload", default=None,
                     help="upload results to the remote cache (default: cache.upload)"),
        _color_option,
        _executor_option,
        click.option("--download", type=click.Choice(["all", "minimal"]), default="all", show_default=True,
                     help="minimal: cached results are written into the workspace only for the targets named, not "
                          "for what they need (their bytes come only when an action reads them)"),
    ]):
        f = option(f)
    return f


def _reporter(as_json: bool, verbose: int, quiet: bool, show=(), color=False):
    from buildml.report.console import JsonReporter, PlainReporter

    if as_json:
        return JsonReporter()
    return PlainReporter(_stdout(color), verbosity=0 if quiet else 1 + verbose, show_outputs=show)


def _stdout(color):
    """stdout, colouring each line's status word when `color` (True, or --color/--no-color's None: decide)."""
    from buildml.report.color import ColorStream, use_color

    return ColorStream(sys.stdout) if color is not False and use_color(color, sys.stdout) else sys.stdout


def _display(as_json: bool, verbose: int, quiet: bool, color, show=()):
    """The live view on a terminal, else plain timestamped lines (coloured only if asked), or JSON."""
    if as_json:
        return _reporter(True, verbose, quiet)
    from buildml.report.color import ColorStream, live_view, use_color

    colored = use_color(color, sys.stdout)
    if live_view(sys.stdout) and not quiet:
        from buildml.report.live import LiveReporter

        return LiveReporter(verbosity=1 + verbose, show_outputs=show, color=colored)
    from buildml.report.console import PlainReporter

    return PlainReporter(ColorStream(sys.stdout) if colored else None, 0 if quiet else 1 + verbose, show)


def _recorded(session, display, command: str = "build"):
    """display, plus the recorder that writes .buildml/last-build.json for `buildml report`."""
    from buildml.report.record import RECORD_FILE, BuildRecorder, Tee

    return Tee(BuildRecorder(session.ws.state_dir / RECORD_FILE, session.graph.dag, command,
                             {label: spec.plots for label, spec in session.graph.specs.items() if spec.plots}), display)


def _overrides(params) -> dict:
    from buildml.load.params import parse_override

    return dict(parse_override(p) for p in params)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="buildml")
def cli():
    """buildml: build ML repos (data, images, models, endpoints) from BUILD.yaml targets, running only what changed."""


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=complete_labels)
@_run_options
@click.option("--detach", is_flag=True, help="submit remote (ray) actions and return; a later build attaches")
@_at_option
@_out_options
@sweep_options
def build(targets, jobs, keep_going, params, as_json, verbose, quiet, color, remote_cache, remote_upload, at, out,
          update_lock, executor, download, sweeps, sort, detach):
    """Build TARGETS (default //...) and everything they need, skipping what is up to date."""
    from buildml.features.noop import NoopCertificate  # a no-op proven by stats alone, before loading anything (buildml/noop.py)

    noop = NoopCertificate(click.get_current_context().params)
    if noop.replay(lambda show: _display(as_json, verbose, quiet, color, show=show)) is not None:
        if verbose and not as_json:
            click.echo("no-op certificate: used: nothing it records changed, so nothing was loaded or hashed", err=True)
        return 0
    from buildml.api import Options
    from buildml.engine.scheduler import exit_status

    options = Options(jobs=jobs, keep_going=keep_going, param_overrides=_overrides(params),
                      remote_cache=remote_cache, remote_upload=remote_upload,
                      out_root=out and os.path.abspath(out), update_lock=update_lock, executor=executor, detach=detach,
                      download=download)
    if sweeps or sort:  # a sweep: every combination as its own variant (buildml/sweep.py)
        return build_sweep(targets, sweeps, sort, options, at, as_json, quiet)
    early: list = []  # warnings of loading and analysis, shown once the display exists
    session = _session(options, emit=early.append, at=at)
    display = _display(as_json, verbose, quiet, color, show=session.select(targets))
    session.emit = noop.watch(_recorded(session, display))
    for event in early:
        session.emit(event)
    known = noop.vouched()  # after an edit: the targets it cannot have touched, taken as they were
    try:
        finished = session.build(targets, known=known)
    finally:
        getattr(display, "close", lambda: None)()
    if verbose and not as_json and noop.vouched_for:
        click.echo(f"no-op certificate: partly used: {noop.vouched_for[0]} of {noop.vouched_for[1]} targets read "
                   "nothing that changed and were taken as they were; the rest were examined", err=True)
    why_not = noop.certify(session, finished)
    if verbose and not as_json:  # why the next identical build does (or does not) answer from stats alone
        click.echo("no-op certificate: " + (f"not written: {why_not}" if why_not else  # stderr: stdout is the build's
                                            "written: the next identical build answers from stats, without loading"),
                   err=True)
    from buildml.executors.remote_runs import detached_lines  # --detach: what was submitted (buildml/remote_runs.py)

    for line in detached_lines(finished):
        click.echo(line, err=as_json)
    if at:
        click.echo(f"outputs of {at} are in {session.options.out_root}", err=as_json)
    return exit_status(finished)


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=complete_labels)
@_run_options
@click.option("--no-cache-test-results", is_flag=True, help="re-run tests even when a passing result is cached")
@click.option("--retries", type=click.IntRange(min=0), help="re-run a failing test up to N times (passes are flaky)")
@click.option("--junit-xml", type=click.Path(dir_okay=False), help="write a JUnit XML report here")
@_at_option
@_out_options
def test(targets, jobs, keep_going, params, as_json, verbose, quiet, remote_cache, remote_upload, color, executor,
         download, no_cache_test_results, retries, junit_xml, at, out, update_lock):
    """Run the test targets matched by TARGETS (default //...), building what they need; passes are cached."""
    from buildml.api import Options
    from buildml.engine.scheduler import exit_status
    from buildml.report.junit import TestReporter, write_junit

    options = Options(jobs=jobs, keep_going=keep_going, param_overrides=_overrides(params),
                      rerun_tests=no_cache_test_results, test_retries=retries,
                      remote_cache=remote_cache, remote_upload=remote_upload,
                      out_root=out and os.path.abspath(out), update_lock=update_lock, executor=executor,
                      download=download)
    early: list = []
    session = _session(options, emit=early.append, at=at)
    reporter = _reporter(as_json, verbose, quiet, color=color)
    session.emit = _recorded(session, reporter if as_json else TestReporter(reporter, _stdout(color)), "test")
    for event in early:
        session.emit(event)
    finished = session.test(targets)
    if junit_xml:
        write_junit(finished, junit_xml)
    return exit_status(finished)


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=complete_labels)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("--exit-code", is_flag=True, help="exit 1 when anything is stale (as `git diff --exit-code`)")
@click.option("--live", is_flag=False, flag_value="", default=None, metavar="[URL]",
              help="for one endpoint: does the running server (the one `buildml run` started, or the one at URL) "
                   "serve what the graph builds now, and if not, what changed")
@_param_option
@_executor_option
@_at_option
def status(targets, as_json, exit_code, live, params, executor, at):
    """Show which targets are stale and why (nothing is built)."""
    from buildml.api import Options

    session = _session(Options(param_overrides=_overrides(params), executor=executor), at=at)
    if live is not None:
        return _status_live(session, targets, live, as_json, exit_code)
    finished = session.build(targets, dry_run=True)
    rows = [r for r in finished.results if r.status in (Outcome.STALE, Outcome.RESTORABLE, Outcome.FAILED)]
    from buildml.executors.remote_runs import render_running, running  # remote actions still running (buildml/remote_runs.py)

    remote = running(session.ws.state_dir, session.store, session.probe_run)
    if as_json:
        click.echo(json.dumps({"event": "summary", "stale": [{"target": str(r.label), "status": r.status,
                                                             "reasons": list(r.reasons), "error": r.error} for r in rows],
                                "remote_running": remote, "targets": len(finished.results)}, sort_keys=True))
        return 1 if exit_code and rows else 0
    for line in render_running(remote):
        click.echo(line)
    if not rows:
        click.echo(f"all {len(finished.results)} targets up to date")
    for r in rows:
        if r.status == Outcome.FAILED:
            click.echo(f"{r.label}: cannot decide: {r.error}")
            continue
        restorable = r.status == Outcome.RESTORABLE
        click.echo(f"{r.label}: {'would restore from cache' if restorable else 'stale'}")
        for reason in r.reasons:
            click.echo(f"    {reason}")
    return 1 if exit_code and rows else 0


def _status_live(session, targets, url: str, as_json: bool, exit_code: bool) -> int:
    from buildml.executors.serving_image import endpoint_of
    from buildml.features import endpoint_drift
    from buildml.features.serve import endpoint_label

    if len(targets) != 1:
        raise UserError("status --live takes one endpoint target", hint="e.g. buildml status //serve:api --live")
    label = endpoint_label(session, targets[0])
    if url:
        where = url.rstrip("/")
        served = endpoint_drift.served_key(where + endpoint_of(session.graph.specs[label])["health"])
    else:
        entry = endpoint_drift.running(session, label)
        if entry is None:
            raise UserError(f"no server of {label} that `buildml run` started is running here",
                            hint=f"start one with `buildml run {label}`, or name a running one: --live URL")
        where, served = entry["url"], entry["key"]
    info = endpoint_drift.drift(session, label, served, where)
    if as_json:
        click.echo(json.dumps({"event": "summary", **info}, sort_keys=True))
    else:
        for line in endpoint_drift.render(info):
            click.echo(line)
    return 1 if exit_code and info["stale"] else 0


@cli.command()
@click.argument("target", shell_complete=complete_labels)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@_at_option
def explain(target, as_json, at):
    """Show TARGET's key inputs and what changed since its last build."""
    info = _session(at=at).explain(target)
    if as_json:
        click.echo(json.dumps({"event": "summary", **info}, sort_keys=True))
        return 0
    click.echo(f"{info['target']}: {info['status']}")
    click.echo(f"  key:      {info['key'] or '(unknown until its deps are built)'}")
    click.echo(f"  last key: {info['last_key'] or '(never built)'}")
    for reason in info["reasons"]:
        click.echo(f"  - {reason}")
    if info.get("python_deps"):
        click.echo("  python deps (python_deps: auto):")
        for path, by in info["python_deps"]:
            click.echo(f"    {path}  (imported by {by})")
    if info.get("last_inputs"):
        click.echo("  inputs at the last build:")
        for path, digest in sorted(info["last_inputs"].items()):
            click.echo(f"    {digest[:12]}  {path}")
    for file, values in (info.get("last_params") or {}).items():
        for key, value in values.items():
            click.echo(f"  param {key} = {value!r} ({file})")
    return 0


@cli.command()
@click.argument("relation", type=click.Choice(["deps", "rdeps"]))
@click.argument("target", shell_complete=complete_labels)
def query(relation, target):
    """List what TARGET depends on (deps) or what depends on it (rdeps)."""
    for label in _session().deps(target, reverse=relation == "rdeps"):
        click.echo(str(label))
    return 0


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=complete_labels)
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "svg", "png"]), default="dot", show_default=True,
              help="svg and png need Graphviz")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write to FILE instead of stdout")
def graph(targets, fmt, output):
    """Print the dependency graph of TARGETS, stale targets highlighted."""
    from buildml.report.graph_render import to_dot, to_image, to_mermaid

    session = _session()
    finished = session.build(targets, dry_run=True)
    labels = [r.label for r in finished.results]
    stale = {r.label for r in finished.results if r.status == Outcome.STALE}
    text = (to_mermaid if fmt == "mermaid" else to_dot)(session.graph.dag, labels, stale)
    data = to_image(text, fmt) if fmt in ("svg", "png") else text.encode()
    if output:
        with open(output, "wb") as f:
            f.write(data)
        click.echo(f"wrote {output}", err=True)
    elif fmt == "png" and sys.stdout.isatty():
        from buildml.errors import UserError

        raise UserError("a PNG cannot be shown in the terminal", hint="write it to a file: -o graph.png")
    else:
        sys.stdout.buffer.write(data)
    return 0


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False), help="where to write it (default .buildml/report.html)")
@click.option("--open", "open_it", is_flag=True, help="open it in the default browser")
def report(out, open_it):
    """Write an HTML report of the last build: targets, timeline with the critical path, cache hits, metrics, plot definitions, logs."""
    from pathlib import Path

    from buildml.report.record import RECORD_FILE, read_record
    from buildml.report.html import write_report

    session = _session()
    record = read_record(session.ws.state_dir / RECORD_FILE)
    path, logs = write_report(record, Path(out or session.ws.state_dir / "report.html"), session.store.read_bytes)
    shown = os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else path
    click.echo(f"wrote {shown} ({len(record['targets'])} targets, {logs} logs next to it)")
    if open_it:  # the report is written either way: no browser is a warning (exit 0), with where to find it
        import webbrowser

        url = path.resolve().as_uri()
        if not webbrowser.open(url):
            click.echo(f"buildml: warning: no browser could open the report; open {url} yourself\n"
                       "  hint: set $BROWSER to a browser command, or copy the file to a machine with one", err=True)
    return 0


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
def init(directory):
    """Start a workspace in DIRECTORY: buildml.yaml, a commented BUILD.yaml, .gitignore entries; never overwrites."""
    from buildml.features.scaffold import init_workspace

    for name in init_workspace(directory):
        click.echo(f"wrote {name}")
    click.echo("next: buildml build //...   (then edit BUILD.yaml; see BUILD.example.yaml for every field)")
    return 0


@cli.command()
@click.argument("target", shell_complete=complete_labels)
@click.option("-c", "--command", help="run this command there instead of an interactive shell")
def shell(target, command):
    """Open a shell where TARGET's action runs (its container, or its sandbox), its inputs in place."""
    from buildml.features.shell import open_shell

    from buildml.report.console import PlainReporter

    session = _session()
    session.emit = PlainReporter(stream=sys.stderr, verbosity=0)  # stdout is the shell's
    return open_shell(session, target, command)


@cli.command()
@click.argument("target", shell_complete=complete_labels)
def log(target):
    """Print the full log of TARGET's last execution."""
    sys.stdout.buffer.write(_session().log(target))
    return 0


@cli.command()
@click.option("--all", "everything", is_flag=True, help="also forget the workspace state (.buildml/, but displaced/)")
@click.option("--displaced", is_flag=True, help="also delete .buildml/displaced/ (files builds moved aside)")
def clean(everything, displaced):
    """Remove the outputs buildml wrote into the workspace (buildml-out/@SHA/ of --at builds too), if unchanged since.

    An output edited since buildml wrote it is left and listed; nothing is removed through a symlink.
    """
    cleaned = _session().clean(everything, displaced)
    click.echo(f"removed {len(cleaned.removed)} output files")
    if cleaned.kept:
        click.echo(f"left {len(cleaned.kept)} files that are not as buildml wrote them:")
        for path, why in cleaned.kept:
            click.echo(f"  {path}: {why}")
    n, size = cleaned.displaced_files, cleaned.displaced_bytes
    held = f"{n} file{'s' if n != 1 else ''}, " + (f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} bytes")
    if cleaned.displaced_removed:
        click.echo(f"removed .buildml/displaced/ ({held} that builds had moved aside)")
    elif cleaned.displaced_files:
        click.echo(f".buildml/displaced/ holds {held} that builds moved aside instead of overwriting; "
                   "`buildml clean --displaced` removes them")
    return 0


@cli.group()
def cache():
    """Inspect and maintain the cache."""


@cache.command()
@click.option("--repair", is_flag=True, help="remove corrupt blobs and the entries that name them or do not parse")
@click.option("--remote", is_flag=True, help="check the remote cache instead (read-only)")
@click.option("--remote-cache", metavar="URL", help="the remote cache to check (implies --remote); overrides cache.remote")
def verify(repair, remote, remote_cache):
    """Re-hash every blob and check every action-cache entry."""
    from buildml.api import Options
    from buildml.store.admin import verify as run_verify, verify_target

    session = _session(Options(remote_cache=remote_cache))
    report = run_verify(verify_target(session.store, remote or bool(remote_cache), repair), repair)
    click.echo(f"checked {report.blobs} blobs and {report.actions} action-cache entries")
    for digest in report.corrupt_blobs:
        click.echo(f"corrupt blob {digest}" + (" (removed)" if repair else ""))
    for key, reason in report.bad_actions:
        click.echo(f"bad entry {key}: {reason}" + (" (removed)" if repair else ""))
    if report.ok:
        click.echo("no corrupt entries")
    return 0 if report.ok else 1


@cache.command()
def stats():
    """Sizes and entry counts of the local cache, their recorded cost summed, and hit rates of the last builds."""
    import time

    from buildml.report.cost import totals as cost_totals_text
    from buildml.store.admin import stats as read_stats

    session = _session()
    info = read_stats(session.store, session.ws.state_dir)
    click.echo(f"local: {info.blobs} blobs, {info.blob_bytes / 1e6:.1f} MB, {info.actions} action-cache entries")
    click.echo(f"remote: {info.remote or '(none configured)'}")
    click.echo(cost_totals_text(info.cost))
    for b in info.builds[-10:]:
        rate = info.hit_rate(b)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b["time"]))
        click.echo(f"build at {when}: {b['executed']} executed, {b['cached_local']} cached local, "
                   f"{b['cached_remote']} cached remote, {b['up_to_date']} up to date, hit rate "
                   + ("-" if rate is None else f"{rate:.0%}"))
    return 0


@cache.command()
@click.option("--max-size", metavar="SIZE", help="shrink the local cache to this size, e.g. 20GB")
@click.option("--remote", is_flag=True, help="collect the remote cache: keep what the refs, recent builds and pins need")
@click.option("--ref", "refs", multiple=True, metavar="REF", help="--remote: keep what REF's head needs (default: "
              "every branch and tag); repeatable")
@click.option("--keep-days", type=float, default=7.0, show_default=True, metavar="DAYS",
              help="--remote: keep every entry written within DAYS (the builds of recent CI runs)")
@click.option("--keep", "keep_labels", multiple=True, metavar="LABEL", help="--remote: keep every result of LABEL")
@click.option("--dry-run", is_flag=True, help="--remote: say what would be deleted, delete nothing")
@click.option("--remote-cache", metavar="URL", help="the remote cache (else $BUILDML_REMOTE_CACHE, else cache.remote)")
def gc(max_size, remote, refs, keep_days, keep_labels, dry_run, remote_cache):
    """Shrink the local cache (--max-size), or collect the remote one by reachability (--remote).

    --remote keeps everything `--at` of the refs' heads needs (the commit records of their builds), every entry
    written in the last --keep-days, and the results of --keep targets; entries go first, blobs last, never an
    object written after the collection started.
    """
    if remote:
        return _gc_remote(refs, keep_days, keep_labels, dry_run, remote_cache)
    if max_size is None:
        raise UserError("cache gc needs --max-size SIZE (the local cache) or --remote",
                        hint="e.g. `buildml cache gc --max-size 20GB`, or `buildml cache gc --remote --dry-run`")
    from buildml.store.admin import gc as run_gc
    from buildml.units import parse_size

    try:
        limit = parse_size(max_size)
    except ValueError:
        raise UserError(f"cannot read size {max_size!r}", hint="e.g. 20GB, 500MB, 1.5GiB (powers of 1024)") from None
    report = run_gc(_session().store, limit)
    click.echo(f"removed {report.actions_removed} entries and {report.blobs_removed} blobs: "
               f"{report.before / 1e6:.1f} MB -> {report.after / 1e6:.1f} MB")
    return 0


def _gc_remote(refs, keep_days, keep_labels, dry_run, remote_cache) -> int:
    from buildml.api import Options
    from buildml.features.remote_gc import gc_remote, render

    if keep_days < 0:
        raise UserError(f"--keep-days {keep_days:g} is negative", hint="give a number of days, 0 or more")
    session = _session(Options(remote_cache=remote_cache))
    store = session.store
    if store.remote is None:
        raise UserError("no remote cache configured", hint="set cache.remote in buildml.yaml, $BUILDML_REMOTE_CACHE "
                        "or --remote-cache")
    labels = [str(session.graph.select([label], session.current_package)[0]) for label in keep_labels]
    report = gc_remote(session.ws.root, store.remote, refs, keep_days, labels, dry_run, say=click.echo)
    for line in render(report):
        click.echo(line)
    return 0


def _transfer(direction, targets, remote_cache):
    from buildml.api import Options
    from buildml.store.admin import transfer
    from buildml.errors import UserError

    session = _session(Options(remote_cache=remote_cache), emit=_reporter(False, 0, True))
    if session.store.remote is None:
        raise UserError("no remote cache configured", hint="set cache.remote in buildml.yaml, $BUILDML_REMOTE_CACHE or --remote-cache")
    finished = session.build(targets, dry_run=True)
    done, missing = transfer(session.store, finished.results, direction)
    click.echo(f"{direction}ed {len(done)} targets")
    refused = not session.store.remote_ok or session.store.write_denied
    why = ("the remote cache failed or refused it: see the warning above" if refused
           else f"not in the {'local' if direction == 'push' else 'remote'} cache")
    for label in missing:
        click.echo(f"not {direction}ed: {label} ({why})")
    return 0 if not missing and session.store.remote_ok else 1


@cache.command()
@click.argument("targets", nargs=-1)
@_remote_cache_option
def push(targets, remote_cache):
    """Upload the cached results of TARGETS to the remote cache."""
    return _transfer("push", targets, remote_cache)


@cache.command()
@click.argument("targets", nargs=-1)
@_remote_cache_option
def pull(targets, remote_cache):
    """Download the results of TARGETS from the remote cache into the local cache."""
    return _transfer("pull", targets, remote_cache)


@cli.command()
@click.argument("targets", nargs=-1)
def lock(targets):
    """Pin the external data and base images TARGETS use (default: all, dropping unused pins) in buildml.lock."""
    from buildml.features.lock import lock as relock

    rows = relock(_session(), targets)
    for dep, what in rows:
        click.echo(f"{what:9} {dep}")
    if not rows:
        click.echo("no external data deps and no base images with a registry digest")
    return 0


@cli.command()
@click.argument("target")
@_at_option
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@_param_option
def show(target, at, as_json, params):
    """Show how TARGET's outputs were made (provenance) and where they are."""
    from buildml.api import Options
    from buildml.features.provenance import render_show, show as run_show

    info = run_show(_session(Options(param_overrides=_overrides(params)), at=at), target)
    click.echo(json.dumps({"event": "summary", **info}, sort_keys=True) if as_json else render_show(info))
    return 0


@cli.command()
@click.argument("rev1")
@click.argument("rev2")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def diff(rev1, rev2, target, as_json):
    """Show what differs between TARGET's builds at two git revisions: params, inputs, command, image, metrics."""
    from buildml.api import Options
    from buildml.features.history import session_at
    from buildml.features.provenance import diff as run_diff, render_diff

    info = run_diff(rev1, rev2, target, lambda rev: session_at(rev, Options()))
    click.echo(json.dumps({"event": "summary", **info}, sort_keys=True) if as_json else render_diff(info))
    return 0


@cli.command("verify")
@click.argument("targets", nargs=-1)
@_at_option
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="actions to run at once (default: cores)")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def verify_targets(targets, at, jobs, as_json):
    """Re-execute TARGETS ignoring their cached results and compare with the recorded outputs."""
    from dataclasses import asdict

    from buildml.api import Options
    from buildml.report.console import PlainReporter
    from buildml.features.reproduce import render, verify as run_verify

    session = _session(Options(jobs=jobs), emit=PlainReporter(sys.stderr, verbosity=0), at=at)
    verdicts = run_verify(session, targets)
    if as_json:
        click.echo(json.dumps({"event": "summary", "verdicts": [{**asdict(v), "ok": v.ok} for v in verdicts]}))
    else:
        click.echo(render(verdicts))
    return 0 if all(v.ok for v in verdicts) else 1


from buildml.cli.run import run as _run  # noqa: E402  `buildml run`: serve an endpoint (buildml/serve.py)
cli.add_command(_run)
from buildml.cli.experiments import metrics as _metrics, params as _params  # noqa: E402  (buildml/experiments.py)
cli.add_command(_metrics)
cli.add_command(_params)
from buildml.cli.schema import schema as _schema  # noqa: E402  `buildml schema`: JSON Schemas for editors
cli.add_command(_schema)
from buildml.cli.importing import import_ as _import  # noqa: E402  `buildml import`: dvc.yaml -> BUILD.yaml
cli.add_command(_import)
from buildml.cli.watching import watch as _watch  # noqa: E402  `buildml watch`: rebuild on save
cli.add_command(_watch)

if __name__ == "__main__":  # pragma: no cover
    main()
