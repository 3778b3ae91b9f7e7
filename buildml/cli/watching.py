"""`buildml watch [TARGETS]`: rebuild on every save, the graph held in memory (buildml/features/watch.py)."""

from __future__ import annotations

import click


@click.command("watch")
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="actions to run at once (default: cores)")
@click.option("-v", "--verbose", count=True, help="more output (-vv: action logs)")
@click.option("-q", "--quiet", is_flag=True, help="only failures and the summary")
@click.option("--color/--no-color", default=None, help="colour the status words (default: on a terminal)")
@click.option("--executor", metavar="NAME", help="run every action on this executor of buildml.yaml")
def watch(targets, jobs, verbose, quiet, color, executor):
    """Build TARGETS (default //...), then again whenever a file they depend on is saved, until Ctrl-C."""
    from buildml.api import Options, Session
    from buildml.errors import BuildmlError, Interrupted
    from buildml.cli import _display, _recorded
    from buildml.features.watch import watch as run_watch

    options = Options(jobs=jobs, keep_going=True, executor=executor)

    def build(session, known):
        display = _display(False, verbose, quiet, color, show=session.select(targets))
        session.emit = _recorded(session, display)
        try:
            return session.build(targets, known=known)
        except Interrupted:
            raise
        except BuildmlError as exc:  # shown; the next save tries again
            click.echo(f"buildml: error: {exc.render()}", err=True)
            return None
        finally:
            getattr(display, "close", lambda: None)()

    try:
        run_watch(lambda: Session(".", options), build, lambda line: click.echo(f"buildml watch: {line}", err=True))
    except KeyboardInterrupt:
        click.echo("buildml watch: stopped", err=True)
        return 130
    return 0
