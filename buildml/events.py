"""Events the engine emits; reporters turn them into output. The engine never prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from buildml.labels import Label

# Result statuses
EXECUTED = "executed"
CACHED = "cached"  # restored from the action cache (local or remote)
UP_TO_DATE = "up-to-date"  # outputs already in place, nothing to do
FAILED = "failed"
SKIPPED = "not built"  # a dependency failed, or the build stopped
WOULD_RUN = "stale"  # dry run: would execute
WOULD_RESTORE = "restorable"  # dry run: in cache, outputs not in place


@dataclass
class Result:
    """What happened to one target."""

    label: Label
    status: str
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
        return self.is_test and self.status == EXECUTED and self.attempts > 1

    @property
    def ok(self) -> bool:
        return self.status in (EXECUTED, CACHED, UP_TO_DATE, WOULD_RESTORE)


@dataclass(frozen=True)
class BuildStarted:
    targets: tuple


@dataclass(frozen=True)
class TargetStarted:
    label: Label
    executor: str
    reasons: tuple = ()


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
    """Byte progress of a long transfer (remote cache, external data, image build); emit done == total at the end."""

    what: str  # e.g. "download data/raw.parquet"
    done: int
    total: int | None = None
    label: Label | None = None


@dataclass(frozen=True)
class BuildFinished:
    results: tuple
    duration: float
    interrupted: bool = False

    def count(self, *statuses) -> int:
        return sum(1 for r in self.results if r.status in statuses)
