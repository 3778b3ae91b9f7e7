"""`buildml report`: a self-contained HTML page of the last build, rendered by real headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest

from buildml.report.html import CRITICAL_COLOUR, STATUS_COLOURS, cache_hit_rate, critical_path
from conftest import EXAMPLES, WS

# The documented screenshot command (README, "Build report"), minus the file names.
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The quickstart, built once with --json, then reported; yields (ws, labels built, report path)."""
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", root, ignore=shutil.ignore_patterns(".buildml", "data", "models", "metrics.json"))
    ws = WS(root, tmp / "cache")
    _, finished = ws.build_json("//...")
    out = tmp / "site" / "report.html"
    proc = ws.run("report", "--out", str(out), check=0)
    labels = [e["target"] for e in finished]
    assert f"wrote {out} ({len(labels)} targets, {len(labels)} logs next to it)" in proc.stdout
    return ws, labels, out


def dump_dom(path) -> str:
    proc = subprocess.run([*CHROMIUM, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_chromium_renders_every_target_of_a_real_build(built):
    """Headless Chromium's rendered DOM of the report lists every target the build finished, with its status."""
    ws, labels, out = built
    dom = dump_dom(out)
    assert {"//:prepare", "//:train", "//:evaluate"} <= set(labels)
    rows = dict(re.findall(r'<tr class="target" data-label="([^"]+)">(.*?)</tr>', dom, re.S))
    assert sorted(rows) == sorted(labels)
    for label in labels:
        assert ">executed<" in rows[label]
    assert f"cache hit rate (0 of {len(labels)})" in dom
    assert re.search(r"<td>metrics\.json</td><td>accuracy</td><td class=\"num\">0\.9\d+</td>", dom)
    assert "Critical path (violet outline): //:prepare → //:train → //:evaluate" in html.unescape(dom)
    outlines = re.findall(r'stroke="(#[0-9a-f]{6})" stroke-width="2"', dom)  # the critical path's bars
    assert outlines == [CRITICAL_COLOUR] * 3 and CRITICAL_COLOUR not in STATUS_COLOURS.values()  # never failure red
    assert STATUS_COLOURS["failed"] not in out.read_text()  # nothing of a build without failures is red


def test_report_links_to_logs_written_next_to_it(built):
    """Each executed target links to its log, copied next to the report so the page works offline."""
    _, labels, out = built
    page = out.read_text()
    links = re.findall(r"href='([^']+)'", page)
    assert "report-logs/train.log" in links and len(links) == len(labels)
    assert "trained on" in (out.parent / "report-logs" / "train.log").read_text()
    assert not re.search(r"(src|href)=['\"]https?:", page), "the report must not load anything from the network"


def test_documented_screenshot_command_writes_a_png(built, tmp_path):
    """The README's screenshot command produces a PNG of the report."""
    _, _, out = built
    shot = tmp_path / "report.png"
    proc = subprocess.run([*CHROMIUM, "--window-size=1200,1000", f"--screenshot={shot}", out.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_rebuild_reports_full_cache_hit_rate(built, tmp_path):
    """After a no-op rebuild, the default report (.buildml/report.html) shows a 100% hit rate."""
    ws, labels, _ = built
    ws.run("build", check=0)
    ws.run("report", check=0)
    page = (ws.root / ".buildml" / "report.html").read_text()
    assert f"<b>100%</b>cache hit rate ({len(labels)} of {len(labels)})" in page
    assert page.count("<tr class='target'") == len(labels)


def test_report_before_any_build_says_to_build_first(ws):
    """Without a recorded build, report exits 2 and says what to run."""
    proc = ws.run("report", check=2)
    assert "no build has been recorded in this workspace yet" in proc.stderr
    assert "run `buildml build` first" in proc.stderr


def test_critical_path_follows_the_dep_that_finished_last():
    """The critical path walks back from the last target to finish through the dep it waited for."""
    t = lambda label, end, deps=(), status="executed": {"label": label, "end": end, "deps": list(deps),
                                                        "status": status, "cached": status == "cached"}
    targets = [t("a", 1.0), t("b", 3.0), t("c", 4.0, ["a", "b"]), t("d", 2.0, status="cached")]
    assert critical_path(targets) == ["b", "c"]
    assert cache_hit_rate(targets) == (1, 4)


def test_report_open_hands_the_file_url_to_the_browser(built, tmp_path):
    """--open passes the report's file:// URL to the user's browser ($BROWSER)."""
    ws, _, _ = built
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    ws.run("report", "--open", check=0, env=ws.env(BROWSER=f"{browser} %s"))
    assert opened.read_text().strip() == (ws.root / ".buildml" / "report.html").as_uri()
    assert "no browser" not in ws.run("report", "--open", check=0, env=ws.env(BROWSER=f"{browser} %s")).stderr


def test_report_open_without_a_browser_says_where_the_report_is(built):
    """--open where no browser starts (here $BROWSER exits 1, as webbrowser sees a missing one): the report is
    still written (exit 0) and a warning names its file:// URL instead of failing silently."""
    ws, _, _ = built
    proc = ws.run("report", "--open", check=0, env=ws.env(BROWSER="false", DISPLAY=""))
    url = (ws.root / ".buildml" / "report.html").as_uri()
    assert f"no browser could open the report; open {url} yourself" in proc.stderr
    assert "BROWSER" in proc.stderr and "Traceback" not in proc.stderr
