"""`buildml schema build|workspace`: print the JSON Schema of BUILD.yaml or buildml.yaml for editors."""

from __future__ import annotations

import json

import click


@click.command("schema")
@click.argument("file", type=click.Choice(["build", "workspace"]))
def schema(file):
    """Print the JSON Schema (draft 2020-12) of BUILD.yaml (build) or buildml.yaml (workspace).

    Inside a workspace, the BUILD.yaml schema includes its own kinds (rules: and templates:).
    """
    from pathlib import Path

    from buildml.api import default_registry
    from buildml.errors import UserError
    from buildml.load.json_schema import build_schema, workspace_schema
    from buildml.load.workspace import load_workspace

    if file == "workspace":
        out = workspace_schema()
    else:
        try:
            ws = load_workspace(Path("."))
        except UserError as exc:  # no buildml.yaml here: the built-in kinds
            if type(exc) is not UserError:
                raise
            ws = None
        out = build_schema(default_registry(ws))
    click.echo(json.dumps(out, indent=2))
    return 0
