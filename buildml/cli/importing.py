"""`buildml import [PATH/dvc.yaml]`: write the equivalent BUILD.yaml (buildml/features/import_dvc.py)."""

from __future__ import annotations

import click


@click.command("import")
@click.argument("path", required=False, metavar="[PATH/dvc.yaml]")
@click.option("-o", "--output", metavar="FILE", help="write FILE instead of BUILD.yaml beside dvc.yaml; - for stdout")
def import_(path, output):
    """Write a BUILD.yaml equivalent to dvc.yaml (default ./dvc.yaml): same targets, same action keys, values
    resolved, comments where it differs. Never overwrites a file."""
    from buildml.api import Session
    from buildml.features.import_dvc import import_dvc

    text, written, count = import_dvc(Session("."), path, output)
    if written is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {written} ({count} target{'s' if count != 1 else ''}); buildml now reads it instead of "
                   "dvc.yaml in that directory", err=True)
    return 0
