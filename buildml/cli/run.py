"""`buildml run TARGET`: serve an endpoint target until Ctrl-C."""

from __future__ import annotations

import sys

import click


@click.command("run")
@click.argument("target")
@click.option("--port", type=click.IntRange(1, 65535), help="host port to serve on (default: the endpoint's port, "
                                                            "or a free one if it is taken)")
@click.option("--ready-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="seconds to wait for the health check to pass")
@click.option("--executor", metavar="NAME", help="local (a process here, ignoring image:), docker (a container of "
                                                  "the serving image), or an executor of buildml.yaml")
@click.option("-q", "--quiet", is_flag=True, help="only failures from the build")
def run(target, port, ready_timeout, executor, quiet):
    """Build endpoint TARGET and what it needs, start its server, and stream its log until Ctrl-C."""
    from buildml.api import Options, Session
    from buildml.report.console import PlainReporter
    from buildml.features.serve import Hooks, endpoint_label, serve

    session = Session(".", Options(executor=executor), PlainReporter(sys.stderr, verbosity=0 if quiet else 1))
    label = endpoint_label(session, target)

    def ready(url: str) -> None:
        click.echo(f"serving {label} at {url}  (Ctrl-C stops it)")

    hooks = Hooks(on_line=lambda line: click.echo(line), on_ready=ready,
                  say=lambda message: click.echo(f"buildml: {message}", err=True))
    try:
        serve(session, str(label), port, ready_timeout, hooks)
    except KeyboardInterrupt:
        click.echo(f"stopped {label}", err=True)
        return 130
    return 0
