"""Typed errors: who must act (user, environment, internal) and where the problem is."""

from __future__ import annotations

from dataclasses import dataclass


USER = "user"
ENVIRONMENT = "environment"
INTERNAL = "internal"


@dataclass(frozen=True)
class Location:
    """A place in a file: 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


class LazyLocation:
    """A Location computed only when shown: documents from the load cache are parsed only for errors."""

    def __init__(self, doc, path: tuple):
        self._doc, self._path, self._resolved = doc, path, None

    def resolve(self) -> Location:
        if self._resolved is None:
            self._resolved = self._doc.where(self._path)
        return self._resolved

    file = property(lambda self: self.resolve().file)
    line = property(lambda self: self.resolve().line)
    column = property(lambda self: self.resolve().column)

    def __str__(self) -> str:
        return str(self.resolve())


class BuildmlError(Exception):
    """Base of every error buildml reports to users; `who` says who must act."""

    who = INTERNAL
    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", location: Location | None = None, field: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location
        self.field = field

    def render(self) -> str:
        """One-screen text: location, field, message, hint."""
        where = f"{self.location}: " if self.location else ""
        field = f"{self.field}: " if self.field else ""
        text = f"{where}{field}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class UserError(BuildmlError):
    """The user must fix a BUILD file, a setting or a flag."""

    who = USER
    exit_code = 2


class LoadError(UserError):
    """A BUILD file or buildml.yaml is malformed (load phase)."""


class AnalysisError(UserError):
    """Targets are individually valid but do not fit together (analysis phase)."""


class LabelError(UserError):
    """A label or pattern is malformed or names nothing."""


class EnvironmentProblem(BuildmlError):
    """Something outside buildml is wrong: disk, Docker, network, credentials."""

    who = ENVIRONMENT
    exit_code = 1


class ExecutionError(BuildmlError):
    """An action failed while executing (execute phase)."""

    who = USER
    exit_code = 1


class CacheCorruption(BuildmlError):
    """A stored blob or manifest does not match its digest."""

    who = ENVIRONMENT


class Interrupted(BuildmlError):
    """The build was stopped by SIGINT or SIGTERM."""

    who = USER
    exit_code = 130


def did_you_mean(word: str, choices) -> str:
    """A click-style hint naming the closest choices, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "did you mean " + " or ".join(repr(c) for c in close) + "?"
