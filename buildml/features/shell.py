"""`buildml shell`: a shell where a target's action would run (its container or sandbox), inputs in place."""

from __future__ import annotations

import os
import sys

from buildml.errors import UserError
from buildml.executors import RunRequest
from buildml.executors.action_env import action_env, params_by_file
from buildml.executors.sandbox import Sandbox

INTERACTIVE = ["sh", "-c", "command -v bash >/dev/null && exec bash || exec sh"]


def open_shell(session, pattern: str, command: str | None = None) -> int:
    """Build what the target needs, stage its sandbox, and run a shell (or `command`) there."""
    labels = session.select([pattern])
    if len(labels) != 1:
        raise UserError(f"{pattern!r} matches {len(labels)} targets", hint="name exactly one target")
    label = labels[0]
    results = _build_deps(session, label)
    action, staged = session.action_for(label, results)
    sandbox = Sandbox(session.store.tempdir("shell-"))
    try:
        spec = action.spec
        sandbox.stage(session.store, staged, params_by_file(action), spec.workdir, spec.outs, link=False)  # copies: a person at the shell may edit inputs
        env, masks = action_env(spec, sandbox, dict(os.environ))
        argv = ["sh", "-c", command] if command else INTERACTIVE
        executor = session.executor_for(spec)
        request = RunRequest(action, sandbox, env, sandbox.root / "action.log", masks=masks)
        return executor.shell(request, argv, tty=command is None and sys.stdin.isatty())
    finally:
        sandbox.remove()
        session.state.close()


def _build_deps(session, label) -> dict:
    deps = sorted(session.graph.dag.predecessors(label))
    if not deps:
        return {}
    finished = session.build([str(d) for d in deps])
    bad = [r for r in finished.results if not r.ok]
    if bad:
        raise UserError(f"cannot open a shell for {label}: {bad[0].label} did not build",
                        hint=f"fix it first: buildml build {bad[0].label}")
    return {r.label: r for r in finished.results}
