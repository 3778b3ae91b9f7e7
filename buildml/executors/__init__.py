"""Executors run one Action in a prepared sandbox and report how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from buildml.action import Action
from buildml.executors.masking import mask_text as mask  # noqa: F401  (executors mask each log line with it)
from buildml.executors.sandbox import Sandbox


@dataclass(frozen=True)
class RunRequest:
    """Everything an executor needs: the action, its sandbox, the env, where to log."""

    action: Action
    sandbox: Sandbox
    env: dict
    log_path: Path
    on_line: Callable[[str], None] = lambda line: None
    masks: tuple[str, ...] = ()  # forms of the secret values to hide in the log, longest first (masking.masks_for)


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended."""

    exit_code: int
    duration: float
    executor: str
    host: str = ""
    timed_out: bool = False
    detail: str = ""  # e.g. "killed by SIGKILL", "out of memory"
    extra: dict = field(default_factory=dict)
    cpu_s: float | None = None  # user + system CPU seconds of the command and what it waited for; None: not known
    peak_rss_bytes: int | None = None  # the largest resident set among them; None: not known


@dataclass(frozen=True)
class ExecutorContext:
    """What an executor made from buildml.yaml may use of the build (not the Session): where remote runs are
    remembered, the workspace settings (the raw buildml.yaml and its doc, for file:line errors), the build's store
    (its .remote is what remote executors share), --detach, and how image targets are referred to by nodes."""

    state_dir: Path
    settings: object
    store: object
    detach: bool = False
    image_ref: Callable = lambda label, key: None  # (image target label, image key) -> a pullable reference


class Executor(Protocol):
    """What every executor does; executors subclass it explicitly and override the optional capabilities."""

    name: str
    config_options: tuple | None = ()  # the buildml.yaml options its type accepts; None: any, it checks its own

    @classmethod
    def from_config(cls, config, context: ExecutorContext) -> "Executor":
        """The executor for one buildml.yaml entry (an ExecutorConfig), given what it may use of the build."""
        return cls(config, context)

    def run(self, request: RunRequest) -> RunOutcome: ...

    def cancel(self) -> None:
        """Stop every running action (Ctrl-C)."""

    def capacity(self) -> dict | None:
        """The cpus/gpus/memory this executor reports, or None: not known (declared, machine or engine capacity)."""
        return None

    def attaching(self, action) -> str:
        """How running action would join a run already under way or finished elsewhere (a detached remote run),
        e.g. 'attached to the run ... on gpu'; '' when it starts a new run (the default)."""
        return ""

    def missing(self, action) -> str:
        """Why a result kept outside the store (e.g. an image in the Docker engine) is gone, or '' (nothing)."""
        return ""

    @staticmethod
    def probe(record: dict) -> dict | None:
        """For `buildml status`: {state, node, last_line} of a run this type detached (remote_runs record), or None
        when it is over; types that never detach have no such runs."""
        return None

    def shell(self, request: RunRequest, argv: list, tty: bool) -> int:
        """Run argv interactively in the prepared sandbox; by default an executor cannot."""
        from buildml.errors import UserError

        raise UserError(f"executor {self.name!r} cannot open a shell", hint="use a local or docker executor")

