"""The command line: parse arguments, call the facade, map typed errors to messages and exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from .errors import BuildmlError, Interrupted

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
    except Exception as exc:  # a bug: say so plainly, without a traceback unless asked
        if os.environ.get("BUILDML_DEBUG"):
            raise
        click.echo(f"buildml: internal error: {type(exc).__name__}: {exc}\n  hint: this is a bug in buildml; "
                   "rerun with BUILDML_DEBUG=1 for the traceback and report it", err=True)
        code = 3
    sys.exit(code or 0)


def _session(options=None, emit=lambda e: None):
    from .api import Options, Session

    return Session(".", options or Options(), emit)


def _reporter(as_json: bool, verbose: int, quiet: bool, show=()):
    from .reporters import JsonReporter, PlainReporter

    if as_json:
        return JsonReporter()
    return PlainReporter(verbosity=0 if quiet else 1 + verbose, show_outputs=show)


def _overrides(params) -> dict:
    from .params import parse_override

    return dict(parse_override(p) for p in params)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="buildml")
def cli():
    """buildml: build ML repos (data, images, models, endpoints) from BUILD.yaml targets, running only what changed."""


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="actions to run at once (default: cores)")
@click.option("-k", "--keep-going", is_flag=True, help="keep building other targets after a failure")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="override a param for this build")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("-v", "--verbose", count=True, help="more output (-vv: action logs)")
@click.option("-q", "--quiet", is_flag=True, help="only failures and the summary")
def build(targets, jobs, keep_going, params, as_json, verbose, quiet):
    """Build TARGETS (default //...) and everything they need, skipping what is up to date."""
    from .api import Options
    from .scheduler import exit_status

    session = _session(Options(jobs=jobs, keep_going=keep_going, param_overrides=_overrides(params)))
    session.emit = _reporter(as_json, verbose, quiet, show=session.select(targets))
    finished = session.build(targets)
    return exit_status(finished)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="actions to run at once (default: cores)")
@click.option("-k", "--keep-going", is_flag=True, help="run the other tests after a failure")
@click.option("--no-cache-test-results", is_flag=True, help="re-run tests even when a passing result is cached")
@click.option("--retries", type=click.IntRange(min=0), help="re-run a failing test up to N times (passes are flaky)")
@click.option("--junit-xml", type=click.Path(dir_okay=False), help="write a JUnit XML report here")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="override a param for this run")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("-v", "--verbose", count=True, help="more output (-vv: action logs)")
@click.option("-q", "--quiet", is_flag=True, help="only test results and the summary")
def test(targets, jobs, keep_going, no_cache_test_results, retries, junit_xml, params, as_json, verbose, quiet):
    """Run the test targets matched by TARGETS (default //...), building what they need; passes are cached."""
    from .api import Options
    from .scheduler import exit_status
    from .test_report import TestReporter, write_junit

    options = Options(jobs=jobs, keep_going=keep_going, param_overrides=_overrides(params),
                      rerun_tests=no_cache_test_results, test_retries=retries)
    session = _session(options)
    reporter = _reporter(as_json, verbose, quiet)
    session.emit = reporter if as_json else TestReporter(reporter)
    finished = session.test(targets)
    if junit_xml:
        write_junit(finished, junit_xml)
    return exit_status(finished)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def status(targets, as_json):
    """Show which targets are stale and why (nothing is built)."""
    session = _session()
    finished = session.build(targets, dry_run=True)
    rows = [r for r in finished.results if r.status in ("stale", "restorable", "failed")]
    if as_json:
        click.echo(json.dumps({"stale": [{"target": str(r.label), "status": r.status, "reasons": list(r.reasons),
                                          "error": r.error} for r in rows]}, indent=2))
        return 0
    if not rows:
        click.echo(f"all {len(finished.results)} targets up to date")
    for r in rows:
        if r.status == "failed":
            click.echo(f"{r.label}: cannot decide: {r.error}")
            continue
        click.echo(f"{r.label}: {'would restore from cache' if r.status == 'restorable' else 'stale'}")
        for reason in r.reasons:
            click.echo(f"    {reason}")
    return 0


@cli.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def explain(target, as_json):
    """Show TARGET's key inputs and what changed since its last build."""
    info = _session().explain(target)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return 0
    click.echo(f"{info['target']}: {info['status']}")
    click.echo(f"  key:      {info['key'] or '(unknown until its deps are built)'}")
    click.echo(f"  last key: {info['last_key'] or '(never built)'}")
    for reason in info["reasons"]:
        click.echo(f"  - {reason}")
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
@click.argument("target")
def query(relation, target):
    """List what TARGET depends on (deps) or what depends on it (rdeps)."""
    for label in _session().deps(target, reverse=relation == "rdeps"):
        click.echo(str(label))
    return 0


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default="dot", show_default=True)
def graph(targets, fmt):
    """Print the dependency graph of TARGETS, stale targets highlighted."""
    from .render_graph import to_dot, to_mermaid

    session = _session()
    finished = session.build(targets, dry_run=True)
    labels = [r.label for r in finished.results]
    stale = {r.label for r in finished.results if r.status == "stale"}
    click.echo((to_dot if fmt == "dot" else to_mermaid)(session.graph.dag, labels, stale), nl=False)
    return 0


@cli.command()
@click.argument("target")
def log(target):
    """Print the full log of TARGET's last execution."""
    sys.stdout.buffer.write(_session().log(target))
    return 0


@cli.command()
@click.option("--all", "everything", is_flag=True, help="also forget the workspace state (.buildml/)")
def clean(everything):
    """Remove the outputs buildml wrote into the workspace (the cache is kept)."""
    removed = _session().clean(everything)
    click.echo(f"removed {len(removed)} output files")
    return 0


@cli.group()
def cache():
    """Inspect and maintain the cache."""


@cache.command()
@click.option("--repair", is_flag=True, help="remove corrupt blobs")
def verify(repair):
    """Re-hash every blob and check every action-cache entry."""
    from .cache_admin import verify as run_verify

    report = run_verify(_session().store, repair)
    click.echo(f"checked {report.blobs} blobs and {report.actions} action-cache entries")
    for digest in report.corrupt_blobs:
        click.echo(f"corrupt blob {digest}" + (" (removed)" if repair else ""))
    for key, reason in report.bad_actions:
        click.echo(f"bad entry {key}: {reason}")
    if report.ok:
        click.echo("no corrupt entries")
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    main()
