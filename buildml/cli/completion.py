"""Shell completion of target labels, shared by the command modules."""

from __future__ import annotations


def complete_labels(ctx, param, incomplete):
    """Shell completion: the target labels of the workspace around the current directory."""
    from click.shell_completion import CompletionItem

    try:
        from buildml.api import default_registry
        from buildml.load.loader import load_targets
        from buildml.load.workspace import load_workspace

        ws = load_workspace(".")
        labels = sorted(str(l) for l in load_targets(ws, default_registry(ws)))
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [CompletionItem(c) for c in ["//...", *labels] if c.startswith(incomplete)]
