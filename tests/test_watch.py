"""`buildml watch` in a real tmux pane: a save rebuilds what it feeds, a BUILD.yaml edit reloads the workspace, a
build's own outputs never trigger another build, and Ctrl-C ends it with the cache consistent."""

from __future__ import annotations

import os
import time

from test_ui_live import Pane

BUILD = """\
targets:
  upper:
    command: tr a-z A-Z < in.txt > out.txt
    deps: [in.txt]
    outs: [out.txt]
  count:
    command: wc -c < out.txt > count.txt
    deps: [out.txt]
    outs: [count.txt]
  other:
    command: cat other.txt > other.out
    deps: [other.txt]
    outs: [other.out]
"""


def wait_file(path, text: str, timeout: float = 30) -> float:
    """Seconds until path holds text."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if path.exists() and path.read_text() == text:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{path} never held {text!r}: {path.read_text() if path.exists() else '(missing)'}")


def test_watch_rebuilds_on_save_and_stops_on_ctrl_c(ws):
    ws.write("BUILD.yaml", BUILD)
    ws.write("in.txt", "hello\n")
    ws.write("other.txt", "o\n")
    pane = Pane(ws, "buildml watch")
    try:
        pane.wait_for("watching .* for changes")
        assert (ws.root / "count.txt").read_text().strip() == "6"
        (ws.root / "in.txt").write_text("hello world\n")
        wait_file(ws.root / "out.txt", "HELLO WORLD\n")
        wait_file(ws.root / "count.txt", "12\n")
        pane.wait_for("changed: in.txt")
        pane.wait_for("2 executed, 0 cached, 1 up to date")  # upper and count; other stands as it was
        time.sleep(1.0)  # the build wrote out.txt and count.txt: no build follows from that
        screen = pane.capture()
        assert screen.count("changed:") == 1, screen
        (ws.root / "other.txt").write_text("o2\n")
        wait_file(ws.root / "other.out", "o2\n")
        pane.wait_for("1 executed, 0 cached, 2 up to date")

        ws.write("BUILD.yaml", BUILD.replace("wc -c", "wc -l"))
        wait_file(ws.root / "count.txt", "1\n")
        pane.wait_for("changed: BUILD.yaml; loading the workspace again")

        ws.write("BUILD.yaml", "targets: [")  # a broken BUILD file is shown, and the watch goes on
        pane.wait_for("fix it and save: the watch goes on")
        ws.write("BUILD.yaml", BUILD)
        wait_file(ws.root / "count.txt", "12\n")

        pane._tmux("send-keys", "C-c")
        pane.wait_for("EXIT=130")
        assert "stopped" in pane.capture() and "Traceback" not in pane.capture()
        assert not [n for n in os.listdir(ws.cache / "tmp")]
    finally:
        pane.close()
