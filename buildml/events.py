"""Events the engine emits; reporters turn them into output. The engine never prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from buildml.labels import Label

class Outcome(str, Enum):
    """The one vocabulary of what the rebuilder decided (Decision.what) and what happened (Result.status).

    A member is its text: it compares, hashes, formats and serializes to JSON exactly as the string does.
    """

    # decisions (engine/rebuilder.py)
    RUN = "run"  # execute the action
    RESTORE = "restore"  # take its outputs from the action cache
    UP_TO_DATE = "up-to-date"  # outputs already in place, nothing to do (also a result)
    # results
    EXECUTED = "executed"
    CACHED = "cached"  # restored from the action cache (local or remote)
    FAILED = "failed"
    NOT_BUILT = "not built"  # a dependency failed, or the build stopped
    STALE = "stale"  # dry run: would execute
    RESTORABLE = "restorable"  # dry run: in cache, outputs not in place
    DETACHED = "detached"  # handed to a remote executor and not awaited (--detach, executors/remote_runs.py)

    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__


@dataclass
class Result:
    """What happened to one target."""

    label: Label
    status: Outcome
    key: str | None = None
    outputs: dict = field(default_factory=dict)  # path -> {"digest", "size", "exec"}
    reasons: tuple = ()
    duration: float = 0.0
    source: str = ""  # executor name, or the store a hit came from
    manifest: dict | None = None
    error: str = ""
    log_tail: str = ""
    log_digest: str | None = None
    is_test: bool = False
    user_error: object = None  # the UserError behind a FAILED status, if it was a configuration problem
    attempts: int = 1  # executions it took (tests with retries)

    @property
    def flaky(self) -> bool:
        return self.is_test and self.status == Outcome.EXECUTED and self.attempts > 1

    @property
    def ok(self) -> bool:
        return self.status in (Outcome.EXECUTED, Outcome.CACHED, Outcome.UP_TO_DATE, Outcome.RESTORABLE)


@dataclass(frozen=True)
class BuildStarted:
    targets: tuple


@dataclass(frozen=True)
class TargetStarted:
    label: Label
    executor: str
    reasons: tuple = ()
    attached: str = ""  # not a new run: how it joins one under way (Executor.attaching)


@dataclass(frozen=True)
class TargetLog:
    label: Label
    line: str


@dataclass(frozen=True)
class TargetFinished:
    result: Result


@dataclass(frozen=True)
class Warning:
    message: str


@dataclass(frozen=True)
class Transfer:
    """Byte progress of a long transfer (remote cache, external data, image build, a large directory hashed, staged or
    stored, which counts files too); emit done == total at the end."""

    what: str  # e.g. "download data/raw.parquet"
    done: int
    total: int | None = None
    label: Label | None = None
    files: int | None = None  # files done, where the transfer counts them (a large directory hashed, staged, stored)
    total_files: int | None = None
    elapsed: float | None = None  # seconds since the transfer began


@dataclass(frozen=True)
class BuildFinished:
    results: tuple
    duration: float
    interrupted: bool = False

    def count(self, *statuses) -> int:
        return sum(1 for r in self.results if r.status in statuses)
