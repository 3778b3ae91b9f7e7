"""Colour decisions (--color/--no-color, NO_COLOR, TTY) and ANSI colouring of plain reporter lines."""

from __future__ import annotations

import os
import re

_STYLES = {"FAILED": "31;1", "BUILD FAILED": "31;1", "NOT BUILT": "33", "WARNING": "33",
           "DONE": "32", "CACHED": "36", "RUN": "34", "ATTACH": "35", "UP-TO-DATE": "2",
           "PASSED": "32", "FLAKY": "33", "NOT RUN": "33"}  # the last three: `buildml test` lines
_WORD = re.compile(r"^(\d\d:\d\d:\d\d )(BUILD FAILED|NOT BUILT|NOT RUN|UP-TO-DATE|FAILED|WARNING|CACHED|DONE|RUN|ATTACH|PASSED|FLAKY)\b")


def use_color(flag: bool | None, stream, env=None) -> bool:
    """An explicit --color/--no-color wins; else NO_COLOR (any value) turns colour off; else FORCE_COLOR (any
    value but 0/false) turns it on; else colour on a terminal that is not TERM=dumb."""
    env = os.environ if env is None else env
    if flag is not None:
        return flag
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR", "") not in ("", "0", "false"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)()) and env.get("TERM") != "dumb"


def live_view(stream, env=None) -> bool:
    """Redraw in place only on a real terminal: not under CI (CI set: runners that allocate a pty), not TERM=dumb."""
    env = os.environ if env is None else env
    ci = env.get("CI", "") not in ("", "0", "false")
    return bool(getattr(stream, "isatty", lambda: False)()) and not ci and env.get("TERM") != "dumb"


def paint(line: str) -> str:
    """The line with its leading status word coloured (ANSI SGR), or unchanged."""
    return _WORD.sub(lambda m: f"{m.group(1)}\x1b[{_STYLES[m.group(2)]}m{m.group(2)}\x1b[0m", line)


class ColorStream:
    """A text stream wrapper that colours the status word of each plain reporter line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write("\n".join(paint(line) for line in text.split("\n")))

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()
