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

    done = import_dvc(Session("."), path, output)
    if done.written is None:
        click.echo(done.text, nl=False)
        return 0
    count = f"{done.targets} target{'s' if done.targets != 1 else ''}"
    if done.in_place:
        click.echo(f"wrote {done.written} ({count}); buildml reads it from now on instead of dvc.yaml beside it",
                   err=True)
    else:
        click.echo(f"wrote {done.written} ({count}); its paths are relative to {done.package_dir}: "
                   "it takes effect as the BUILD.yaml there", err=True)
    return 0
