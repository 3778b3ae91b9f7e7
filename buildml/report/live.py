"""The live terminal view (rich) for a build on a TTY: counts, running actions, latest log line, progress."""

from __future__ import annotations

import threading
import time

from buildml.events import (
    BuildFinished,
    BuildStarted,
    Outcome,
    TargetFinished,
    TargetLog,
    TargetStarted,
    Transfer,
    Warning,
)
from buildml.report.console import summary_line

MAX_RUNNING_LINES = 12
MAX_TABLE_ROWS = 20


class LiveReporter:
    """Redraws one screen while the build runs; prints failures above it at once; ends with what ran."""

    def __init__(self, console=None, verbosity: int = 1, show_outputs=(), color: bool = True):
        self.console = console
        self.verbosity = verbosity
        self.show_outputs = set(show_outputs)
        self.color = color
        self._lock = threading.Lock()
        self._live = None
        self.total = 0
        self.finished = {Outcome.EXECUTED: 0, Outcome.CACHED: 0, Outcome.UP_TO_DATE: 0, Outcome.FAILED: 0,
                         Outcome.NOT_BUILT: 0}
        self.running: dict = {}  # label -> (monotonic start, executor, attached to a run under way)
        self.last_line = ""
        self.transfers: dict = {}  # (label, what) -> its last Transfer event

    # -- events ------------------------------------------------------------------------------
    def __call__(self, event) -> None:
        if isinstance(event, BuildStarted):
            self._start(len(event.targets))
        elif isinstance(event, TargetStarted):
            with self._lock:
                self.running[event.label] = (time.monotonic(), event.executor, bool(event.attached))
        elif isinstance(event, TargetLog):
            self._log(event)
        elif isinstance(event, TargetFinished):
            self._finished(event.result)
        elif isinstance(event, Transfer):
            self._transfer(event)
        elif isinstance(event, Warning):
            self._print(f"[yellow]WARNING[/] {_escape(event.message)}")
        elif isinstance(event, BuildFinished):
            self.close()
            self._summary(event)

    def _console(self):
        if self.console is None:
            from rich.console import Console

            self.console = Console(no_color=not self.color, highlight=False)
        return self.console

    def _start(self, total: int) -> None:
        from rich.live import Live

        self.total = total
        self._live = Live(self, console=self._console(), refresh_per_second=8, transient=True, redirect_stdout=False,
                          redirect_stderr=False)
        self._live.start()

    def _log(self, event) -> None:
        with self._lock:
            self.last_line = f"{event.label}> {event.line}"
        if self.verbosity >= 3:
            self._print(f"[dim]{_escape(self.last_line)}[/]")

    def _transfer(self, event) -> None:
        key = (event.label, event.what)
        with self._lock:
            files_done = event.files is None or event.total_files is None or event.files >= event.total_files
            if event.total is not None and event.done >= event.total and files_done:
                self.transfers.pop(key, None)
            else:
                self.transfers[key] = event

    def _finished(self, r) -> None:
        with self._lock:
            self.running.pop(r.label, None)
            if r.status in self.finished:  # up to date counted as such, as the summary names it
                self.finished[r.status] += 1
        if r.status == Outcome.FAILED:
            self._failure(r)
        elif r.status == Outcome.NOT_BUILT and self.verbosity >= 1:
            self._print(f"[yellow]NOT BUILT[/] {r.label}: {_escape(r.error)}")
        elif r.status == Outcome.EXECUTED and self.verbosity >= 2:
            self._print(f"[green]DONE[/] {r.label} in {r.duration:.2f}s")

    def _failure(self, r) -> None:
        from rich.rule import Rule

        self._print(f"[bold red]FAILED[/] {r.label}: {_escape(r.error)}")
        if r.log_tail:
            self._console().print(Rule(f"last lines of the log of {r.label}", style="red", align="left"))
            self._console().print(r.log_tail, markup=False, highlight=False)
            self._console().print(Rule(f"full log: buildml log {r.label}", style="red", align="left"))

    def _print(self, markup: str) -> None:
        self._console().print(markup)

    def close(self) -> None:
        """Stop redrawing (idempotent); the CLI calls it if the build ends without BuildFinished."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- the screen ----------------------------------------------------------------------------
    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            done = sum(self.finished.values())
            running = sorted(self.running.items(), key=lambda kv: kv[1][0])
            counts = self._counts_text(done, len(running))
            last = self.last_line
            transfers = sorted(self.transfers.items(), key=lambda kv: str(kv[0]))
        now = time.monotonic()
        rows = Table.grid(padding=(0, 2))
        for label, (start, executor, attached) in running[:MAX_RUNNING_LINES]:
            rows.add_row(Text("  attached" if attached else "  running", style="magenta" if attached else "blue"),
                         Text(str(label), style="bold"),
                         Text(f"{now - start:5.1f}s"), Text(f"[{executor}]", style="dim"))
        if len(running) > MAX_RUNNING_LINES:
            rows.add_row("", Text(f"... and {len(running) - MAX_RUNNING_LINES} more running"), "", "")
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=max(self.total, 1), completed=done, width=40), Text(f"{done}/{self.total} targets"))
        parts = [counts, rows, *(_transfer_row(key, event) for key, event in transfers), bar]
        if last:
            parts.insert(2, Text(f"  {last}", style="dim", no_wrap=True, overflow="ellipsis"))
        return Group(*parts)

    def _counts_text(self, done: int, running: int):
        from rich.text import Text

        f = self.finished
        text = Text()
        text.append(f"done {f[Outcome.EXECUTED]}", style="green")
        text.append(f" · cached {f[Outcome.CACHED]}", style="cyan")
        text.append(f" · running {running}", style="blue")
        text.append(f" · failed {f[Outcome.FAILED]}", style="red" if f[Outcome.FAILED] else "")
        if f[Outcome.UP_TO_DATE]:
            text.append(f" · up to date {f[Outcome.UP_TO_DATE]}", style="dim")
        if f[Outcome.NOT_BUILT]:
            text.append(f" · not built {f[Outcome.NOT_BUILT]}", style="yellow")
        text.append(f" · to do {max(self.total - done - running, 0)}")
        return text

    # -- the end -------------------------------------------------------------------------------
    def _summary(self, finished: BuildFinished) -> None:
        if self.verbosity >= 1:
            self._what_ran(finished)
            self._outputs(finished)
        ok, line = summary_line(finished)
        self._print(("[bold green]BUILD OK:[/] " if ok else "[bold red]BUILD FAILED:[/] ") + line)

    def _what_ran(self, finished: BuildFinished) -> None:
        from rich.table import Table

        rows = [r for r in finished.results if r.status in (Outcome.EXECUTED, Outcome.CACHED, Outcome.FAILED)]
        if not rows:
            return
        rows.sort(key=lambda r: -r.duration)
        table = Table(title="what ran", title_justify="left", box=None, header_style="bold")
        for column in ("target", "status", "executor or cache", "duration"):
            table.add_column(column, justify="right" if column == "duration" else "left")
        style = {Outcome.EXECUTED: "green", Outcome.CACHED: "cyan", Outcome.FAILED: "red"}
        for r in rows[:MAX_TABLE_ROWS]:
            where = f"cache ({r.source})" if r.status == Outcome.CACHED else r.source or "-"
            table.add_row(str(r.label), f"[{style[r.status]}]{r.status}[/]", where, f"{r.duration:.2f}s")
        if len(rows) > MAX_TABLE_ROWS:
            table.add_row(f"... and {len(rows) - MAX_TABLE_ROWS} more", "", "", "")
        self._console().print(table)

    def _outputs(self, finished: BuildFinished) -> None:
        for r in finished.results:
            if r.label in self.show_outputs and r.ok and r.outputs:
                paths = sorted(r.outputs)
                more = [f"... and {len(paths) - 10} more"] if len(paths) > 10 else []
                self._console().print(f"{r.label} outputs:", highlight=False)
                for path in paths[:10] + more:
                    self._console().print(f"  {path}", markup=False, highlight=False)


def _transfer_row(key, event):
    """A transfer's row: bytes done of the total; a large directory's files done of theirs (the bar follows them),
    bytes and elapsed time too."""
    from rich.filesize import decimal
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    label, what = key
    done, total = event.done, event.total
    row = Table.grid(padding=(0, 1))
    size = f"{decimal(done)} / {decimal(total)}" if total else decimal(done)
    if event.files is None:
        bar = ProgressBar(total=total or None, completed=done, width=20)
    else:
        bar = ProgressBar(total=event.total_files or None, completed=event.files, width=20)
        of = f" / {event.total_files:,}" if event.total_files else ""
        size = f"{event.files:,}{of} files, {size}" + (f", {event.elapsed:.1f}s" if event.elapsed is not None else "")
    row.add_row(Text(f"  {label} " if label else "  ", style="bold"), Text(what), bar, Text(size))
    return row


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
