"""The live terminal view in a real tmux pane, and plain output when piped."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
import uuid

import pytest

from conftest import BIN

COUNTS = re.compile(r"done \d+ · cached \d+ · running \d+ · failed \d+ · to do \d+")
RUNNING = re.compile(r"running\s+(//:\w+)\s+\d+\.\ds\s+\[local\]")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class Pane:
    """A detached tmux session on its own server running one shell script."""

    def __init__(self, ws, command: str, env: dict | None = None, width: int = 120, height: int = 40):
        self.socket = f"buildml-test-{uuid.uuid4().hex[:8]}"
        base = {k: v for k, v in ws.env().items() if k in ("PATH", "BUILDML_CACHE_DIR", "HOME", "LANG", "PYTHONPATH")}
        exports = "unset NO_COLOR CI FORCE_COLOR\n" + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in {**base, **(env or {})}.items())
        script = ws.root.parent / f"{self.socket}.sh"
        script.write_text(f"{exports}cd {shlex.quote(str(ws.root))}\n{command}\necho EXIT=$?\nsleep 120\n")
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), f"bash {shlex.quote(str(script))}")

    def _tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def capture(self, escapes: bool = False) -> str:
        return self._tmux("capture-pane", "-p", *(["-e"] if escapes else []))

    def wait_for(self, pattern: str, timeout: float = 60) -> list[str]:
        """Capture every 0.1 s until pattern shows; return every capture taken."""
        shots = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shots.append(self.capture())
            if re.search(pattern, shots[-1]):
                return shots
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} never appeared; last screen:\n{shots[-1] if shots else ''}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def pane_factory():
    panes = []

    def make(*args, **kwargs) -> Pane:
        panes.append(Pane(*args, **kwargs))
        return panes[-1]
    yield make
    for pane in panes:
        pane.close()


def test_quickstart_on_a_tty_shows_the_live_view(quickstart, pane_factory):
    """On a terminal the quickstart build shows counts, running actions with elapsed time, a log line, progress, then what ran."""
    pane = pane_factory(quickstart, f"{BIN}/buildml build //...")
    shots = pane.wait_for(r"EXIT=\d+")
    live = "\n".join(shots[:-1])
    assert COUNTS.search(live), live[-2000:]
    assert {"//:prepare", "//:train", "//:evaluate"} <= set(RUNNING.findall(live)), live[-2000:]
    total = re.search(r"\d+/(\d+) targets", live).group(1)
    assert re.search(r"//:\w+> \S", live), "no log line shown"
    final = shots[-1]
    assert "EXIT=0" in final
    assert "what ran" in final and f"BUILD OK: {total} executed, 0 cached, 0 up to date" in final
    assert not COUNTS.search(final), "the live view must be cleared at the end"


def test_failure_log_tail_shows_while_other_actions_still_run(ws, pane_factory):
    """A failing action's log tail is printed at once, while a slow sibling is still running."""
    ws.write("BUILD.yaml", """\
        targets:
          broken:
            command: 'echo "boom: bad input at row 7"; exit 3'
          slow:
            command: sleep 4; mkdir -p out; echo ok > out/slow.txt
            outs: [out/slow.txt]
        """)
    pane = pane_factory(ws, f"{BIN}/buildml build -j 2 //...")
    pane.wait_for(r"boom: bad input at row 7", timeout=30)
    screen = pane.wait_for(r"full log: buildml log //:broken", timeout=10)[-1]  # the whole block, not a half-drawn frame
    assert "boom: bad input at row 7" in screen
    assert "FAILED //:broken: exit code 3" in screen
    assert "full log: buildml log //:broken" in screen
    assert "EXIT=" not in screen
    final = pane.wait_for(r"EXIT=\d+")[-1]
    assert "EXIT=1" in final and "BUILD FAILED" in final


def test_piped_build_has_no_control_characters(quickstart):
    """The same build piped (CI) prints plain timestamped lines without any control character."""
    proc = quickstart.run("build", "//...", check=0, env=quickstart.env(TERM="xterm-256color"))
    assert proc.stdout.count("\n") >= 10
    assert not CONTROL.search(proc.stdout), repr(CONTROL.search(proc.stdout))
    lines = proc.stdout.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", l) for l in lines)
    assert any(l.endswith("DONE      //:train in " + l.split(" in ")[-1]) for l in lines if "//:train" in l)
    ran = sum(1 for l in lines if " DONE " in l)
    assert ran >= 3 and lines[-1].split(" ", 1)[1].startswith(f"{ran} executed, 0 cached")


def test_color_follows_flag_and_no_color(ws, pane_factory):
    """--color colours piped lines; NO_COLOR turns colour off on a terminal; --no-color keeps pipes plain."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo hi\n")
    coloured = ws.run("build", "--color", check=0).stdout
    assert "\x1b[32mDONE\x1b[0m      //:a" in coloured
    assert "\x1b[" not in ws.run("build", "--no-color", check=0, env=ws.env(NO_COLOR="")).stdout
    ws.write("BUILD.yaml", "targets:\n  b:\n    command: echo there\n")
    pane = pane_factory(ws, f"{BIN}/buildml build //...", env={"NO_COLOR": "1"})
    pane.wait_for(r"EXIT=0")
    screen = pane.capture(escapes=True)
    assert "BUILD OK" in screen
    assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|38;5;\d+)m", screen), repr(screen)


def test_live_view_shows_byte_progress_of_transfers():
    """A Transfer event shows a byte progress row under the running actions until it reports done == total."""
    import io

    from rich.console import Console

    from buildml.events import BuildStarted, TargetStarted, Transfer
    from buildml.labels import Label
    from buildml.report.live import LiveReporter

    label = Label("", "fetch")
    reporter = LiveReporter(console=Console(file=io.StringIO(), width=100))
    reporter(BuildStarted((label, Label("", "train"))))
    reporter(TargetStarted(label, "local"))
    reporter(Transfer("download data/raw.parquet", 5_000_000, 20_000_000, label))

    def screen() -> str:
        out = Console(file=io.StringIO(), width=100, color_system=None)
        out.print(reporter)
        return out.file.getvalue()
    try:
        assert "running 1 · failed 0 · to do 1" in screen()
        assert re.search(r"//:fetch\s+download data/raw\.parquet .*5\.0 MB / 20\.0 MB", screen()), screen()
        reporter(Transfer("download data/raw.parquet", 20_000_000, 20_000_000, label))
        assert "raw.parquet" not in screen()
    finally:
        reporter.close()


def test_live_counts_name_up_to_date_as_the_summary_does():
    """A target already up to date counts as "up to date" in the live view, not as "cached" (the summary's words)."""
    import io

    from rich.console import Console

    from buildml.events import BuildStarted, Outcome, Result, TargetFinished
    from buildml.labels import Label
    from buildml.report.live import LiveReporter

    a, b = Label("", "a"), Label("", "b")
    reporter = LiveReporter(console=Console(file=io.StringIO(), width=100))
    reporter(BuildStarted((a, b)))
    reporter(TargetFinished(Result(a, Outcome.UP_TO_DATE)))
    reporter(TargetFinished(Result(b, Outcome.CACHED)))
    out = Console(file=io.StringIO(), width=100, color_system=None)
    out.print(reporter)
    try:
        assert "cached 1 · running 0 · failed 0 · up to date 1" in out.file.getvalue(), out.file.getvalue()
    finally:
        reporter.close()


def test_ci_and_dumb_terminals_get_plain_lines_and_force_color_colours_pipes(ws, pane_factory):
    """With CI set (runners that allocate a pty) or TERM=dumb, a terminal gets plain timestamped lines, no redraw;
    FORCE_COLOR colours piped output, and NO_COLOR still wins over it."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo hi\n")
    for env in ({"CI": "true"}, {"TERM": "dumb"}):
        (ws.root / "BUILD.yaml").write_text(f"targets:\n  a:\n    command: echo {sorted(env)[0]}\n")
        pane = pane_factory(ws, f"{BIN}/buildml build //...", env=env)
        screen = pane.wait_for(r"EXIT=\d+")[-1]
        assert "EXIT=0" in screen
        assert re.search(r"\d\d:\d\d:\d\d DONE +//:a", screen), screen  # the plain reporter's lines
        assert not COUNTS.search(screen) and "what ran" not in screen, screen
    (ws.root / "BUILD.yaml").write_text("targets:\n  a:\n    command: echo forced\n")
    coloured = ws.run("build", "//...", check=0, env=ws.env(FORCE_COLOR="1")).stdout
    assert "\x1b[32mDONE\x1b[0m" in coloured
    (ws.root / "BUILD.yaml").write_text("targets:\n  a:\n    command: echo plain\n")
    plain = ws.run("build", "//...", check=0, env=ws.env(FORCE_COLOR="1", NO_COLOR="1")).stdout
    assert "\x1b[" not in plain


def test_an_attached_run_is_not_shown_as_a_new_run():
    """A TargetStarted that attaches (a detached remote run) reads ATTACH in plain lines (and in the JSON
    'started' line), and 'attached' in the live view, never RUN / 'running'."""
    import io
    import json

    from rich.console import Console

    from buildml.events import BuildStarted, TargetStarted
    from buildml.labels import Label
    from buildml.report.console import JsonReporter, PlainReporter
    from buildml.report.live import LiveReporter

    label, how = Label("", "train"), "attached to the run already going on gpu (ray auto), not a new one"
    plain = io.StringIO()
    PlainReporter(plain)(TargetStarted(label, "gpu", ("never built",), how))
    assert f"ATTACH    //:train [gpu] {how}" in plain.getvalue() and "RUN" not in plain.getvalue()
    lines = io.StringIO()
    JsonReporter(lines)(TargetStarted(label, "gpu", (), how))
    assert json.loads(lines.getvalue())["attached"] == how
    reporter = LiveReporter(console=Console(file=io.StringIO(), width=120))
    reporter(BuildStarted((label,)))
    reporter(TargetStarted(label, "gpu", (), how))
    out = Console(file=io.StringIO(), width=120, color_system=None)
    out.print(reporter)
    try:
        assert re.search(r"attached\s+//:train", out.file.getvalue()), out.file.getvalue()
    finally:
        reporter.close()
