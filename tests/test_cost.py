"""Recorded cost: each result manifest says what producing it cost (wall, CPU, peak memory, executor, declared
resources, output bytes); `buildml show`, the HTML report and `buildml cache stats` display it. Real CLI, real
subprocesses measured by the local executor, a fake executor for declared GPUs."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from test_docker import app, busybox_image, dws, remove_test_images  # noqa: F401  (the real-engine fixtures)

BURN = """\
import sys
import time

held = b"x" * (300 * 2**20)  # 300 MiB, every page written: well above buildml's own peak (see below)
start = time.process_time()
while time.process_time() - start < 0.3:  # 0.3 s of CPU, however loaded the machine is
    pass
open(sys.argv[1], "w").write(str(len(held)))
"""
SLEEP = "import sys, time\ntime.sleep(0.6)\nopen(sys.argv[1], 'w').write('x' * 1000)\n"
BUILD = """\
targets:
  burn:
    command: python burn.py burn.txt
    deps: [burn.py]
    outs: [burn.txt]
  idle:
    command: python idle.py idle.txt
    deps: [idle.py]
    outs: [idle.txt]
"""


def _workspace(ws):
    ws.write("burn.py", BURN)
    ws.write("idle.py", SLEEP)
    ws.write("BUILD.yaml", BUILD)


def _show(ws, target: str) -> dict:
    proc = ws.run("show", "--json", target, check=0)
    return json.loads(proc.stdout)


def _manifest_path(ws, key: str):
    return ws.cache / "ac" / key[:2] / key


def test_show_reports_cpu_and_peak_memory_of_each_local_command(ws):
    """A command that burns 0.3 s of CPU and holds 300 MiB, built beside one that only sleeps (-j 2, at the same
    time): each manifest has its own child's usage (wait4 on its pid), not the two mixed."""
    _workspace(ws)
    ws.run("build", "-j", "2", "//...", check=0)
    burn, idle = _show(ws, "//:burn"), _show(ws, "//:idle")
    cost = burn["cost"]
    assert cost["executor"] == "local" and cost["resources"] == {}
    assert cost["cpu_s"] > 0.2, cost
    assert cost["peak_rss_bytes"] >= 250 * 2**20, cost
    assert cost["wall_s"] >= 0.25 and cost["output_bytes"] == len(str(300 * 2**20))
    assert idle["cost"]["cpu_s"] < 0.2, idle["cost"]  # the sleeper ran while the burner burned
    assert (idle["cost"]["peak_rss_bytes"] or 0) < 250 * 2**20 and idle["cost"]["output_bytes"] == 1000
    text = ws.run("show", "//:burn", check=0).stdout
    line = next(l for l in text.splitlines() if l.strip().startswith("cost:"))
    assert re.search(r"cpu 0\.[2-9]\d*s|cpu [1-9][\d.]*s", line) and "peak memory" in line and "MiB" in line, line
    assert "on local" in line and "unknown" not in line


def test_a_tiny_command_does_not_report_buildmls_own_memory(ws):
    """A child's ru_maxrss starts at the peak of the process it was forked from (buildml's, tens of MiB): a command
    that used less than that has an unknown peak, not buildml's; its CPU time is still its own."""
    ws.write("BUILD.yaml", "targets:\n  tiny:\n    command: /bin/true\n")
    ws.run("build", "//:tiny", check=0)
    cost = _show(ws, "//:tiny")["cost"]
    assert cost["peak_rss_bytes"] is None and cost["cpu_s"] < 0.1 and cost["output_bytes"] == 0, cost
    assert "peak memory unknown" in ws.run("show", "//:tiny", check=0).stdout


def test_cache_stats_sums_the_recorded_costs(ws):
    """`buildml cache stats` sums CPU time and output bytes over the local entries (through the manifest index);
    a cached rebuild adds nothing."""
    _workspace(ws)
    ws.run("build", "//...", check=0)
    costs = [_show(ws, t)["cost"] for t in ("//:burn", "//:idle")]
    out = ws.run("cache", "stats", check=0).stdout
    line = next(l for l in out.splitlines() if l.startswith("recorded cost"))
    assert line.startswith("recorded cost of 2 entries:"), line
    cpu = float(re.search(r"CPU-hours \(([\d.]+)s\)", line).group(1))
    assert abs(cpu - sum(c["cpu_s"] for c in costs)) < 0.006, (line, costs)
    assert f"outputs {sum(c['output_bytes'] for c in costs)} bytes" in line and "0 GPU-hours" in line
    ws.run("clean", check=0)
    ws.run("build", "//...", check=0)  # restored from the cache: no new entries, the same sums
    again = next(l for l in ws.run("cache", "stats", check=0).stdout.splitlines() if l.startswith("recorded cost"))
    assert again == line


def test_declared_gpus_give_gpu_hours(ws):
    """An action declaring 2 GPUs on an executor that held it 30 minutes (a fake reporting that wall time) costs
    1 GPU-hour; what the fake cannot measure (CPU, memory) is unknown, not 0."""
    ws.write("buildml.yaml", "executors:\n  gpu: {type: fake, duration: 1800, gpus: 4}\n")
    ws.write("BUILD.yaml", """\
        targets:
          train:
            command: python train.py
            executor: gpu
            resources: {gpus: 2, memory: 8GB}
            outs: [model.bin]
        """)
    ws.run("build", "//:train", check=0)
    cost = _show(ws, "//:train")["cost"]
    assert cost == {"wall_s": 1800.0, "cpu_s": None, "peak_rss_bytes": None, "executor": "fake",
                    "resources": {"gpus": 2, "memory": 8 * 2**30}, "output_bytes": len("//:train")}
    line = next(l for l in ws.run("show", "//:train", check=0).stdout.splitlines() if "cost:" in l)
    assert "cpu unknown" in line and "peak memory unknown" in line and "GPU-hours 1" in line, line
    assert "declared gpus 2 memory 8.0 GiB" in line, line
    stats = ws.run("cache", "stats", check=0).stdout
    assert "1.0000 GPU-hours (1h 0m)" in stats and "0.5000 wall-hours (30m 0s)" in stats and "CPU time unknown for 1" in stats, stats


def test_tampered_or_missing_cost_is_unknown_never_a_traceback(ws):
    """The manifest is read back as untrusted: cost fields of the wrong type are unknown, a cost that is not a
    mapping is all unknown, and a manifest without cost (an older buildml's) stays a valid cache hit."""
    _workspace(ws)
    ws.run("build", "//...", check=0)
    burn, idle = (_show(ws, t)["key"] for t in ("//:burn", "//:idle"))
    manifest = json.loads(_manifest_path(ws, burn).read_text())
    manifest["cost"].update(cpu_s="lots", peak_rss_bytes=-5, wall_s=float("1e300"), executor=["x"],
                            resources={"gpus": True, "cpus": "2", "memory": 1.5}, output_bytes=2.5)
    _manifest_path(ws, burn).write_text(json.dumps(manifest))
    old = json.loads(_manifest_path(ws, idle).read_text())
    del old["cost"]
    _manifest_path(ws, idle).write_text(json.dumps(old))

    proc = ws.run("show", "--json", "//:burn", check=0)
    assert json.loads(proc.stdout)["cost"] == {"wall_s": None, "cpu_s": None, "peak_rss_bytes": None,
                                               "executor": None, "resources": {}, "output_bytes": None}
    assert _show(ws, "//:idle")["cost"] is None
    assert "cost:      (not recorded)" in ws.run("show", "//:idle", check=0).stdout
    stats = ws.run("cache", "stats", check=0)
    assert "Traceback" not in stats.stderr
    assert "recorded cost of 2 entries: 0 CPU-hours" in stats.stdout
    assert "2 without a recorded cost" in stats.stdout, stats.stdout
    ws.run("clean", check=0)
    summary, events = ws.build_json("//...")
    assert sorted(e["status"] for e in events) == ["cached", "cached"]  # the entries are still hits

    manifest["cost"] = "free"
    _manifest_path(ws, burn).write_text(json.dumps(manifest))
    assert _show(ws, "//:burn")["cost"]["cpu_s"] is None
    proc = ws.run("report", "--out", str(ws.root / "r.html"), check=0)
    assert "Traceback" not in proc.stderr


def test_report_shows_the_recorded_cost(ws):
    """The HTML report has each target's recorded cost (a cached result shows what it cost when built) and the
    CPU time of what the build executed; a tampered cost in last-build.json is shown as unknown."""
    _workspace(ws)
    ws.run("build", "//:burn", check=0)
    cpu = _show(ws, "//:burn")["cost"]["cpu_s"]
    page = _report(ws)
    cell = re.search(r"<tr class='target' data-label='//:burn'>.*?<td class='cost' title='([^']*)'>([^<]*)</td>", page)
    assert cell, page
    assert cell.group(2).startswith(f"cpu {cpu:.2f}s, peak ") and "MiB" in cell.group(2)
    assert "wall " in cell.group(1) and "on local" in cell.group(1)
    assert re.search(rf"id='cpu-time'><b>{cpu:.2f}s</b>CPU time of the executed targets", page)

    ws.run("clean", check=0)
    ws.run("build", "//:burn", check=0)  # a cache hit: the cost it was built with, no executed CPU time
    page = _report(ws)
    assert f"cpu {cpu:.2f}s, peak" in page and "id='cpu-time'" not in page

    record_path = ws.root / ".buildml" / "last-build.json"
    record = json.loads(record_path.read_text())
    record["targets"][0]["cost"] = {"cpu_s": "<script>", "peak_rss_bytes": [1]}
    record_path.write_text(json.dumps(record))
    page = _report(ws)
    assert "cpu unknown, peak unknown" in page and "<script>" not in page


def _report(ws) -> str:
    out = ws.root / "site" / "report.html"
    ws.run("report", "--out", str(out), check=0)
    return out.read_text()


def test_an_index_from_before_costs_is_rebuilt(ws):
    """A manifest index written before the cost columns (no user_version) is emptied and rebuilt on first use:
    cache stats sums every entry, `metrics --history` still answers."""
    _workspace(ws)
    ws.run("build", "//...", check=0)
    db = sqlite3.connect(ws.root / ".buildml" / "manifest-index.db")
    db.executescript("""
        CREATE TABLE manifests (key TEXT PRIMARY KEY, label TEXT, summary TEXT);
        CREATE INDEX manifests_by_label ON manifests (label);
        CREATE TABLE produced (digest TEXT, key TEXT, PRIMARY KEY (digest, key));
        INSERT INTO manifests VALUES ('0123456789abcdef0123456789abcdef', '//:gone', '{}');
    """)
    db.close()
    out = ws.run("cache", "stats", check=0).stdout
    assert "recorded cost of 2 entries:" in out and "without a recorded cost" not in out, out
    db = sqlite3.connect(ws.root / ".buildml" / "manifest-index.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert sorted(r[0] for r in db.execute("SELECT label FROM manifests")) == ["//:burn", "//:idle"]
    db.close()
    ws.run("metrics", "--history", "//:burn", check=0)


@pytest.mark.docker
def test_docker_cost_records_what_the_engine_tells(dws):
    """On the real Docker engine: wall time, the declared resources (the container's limits) and output bytes are
    recorded; CPU time and peak memory, which the engine no longer reports once the container has exited, are
    unknown rather than guessed."""
    app(dws, "cat /opt/hello.txt > out.txt", outs=["out.txt"], resources={"memory": "256MB", "cpus": 1})
    dws.run("build", "//app:run", check=0)
    cost = _show(dws, "//app:run")["cost"]
    assert cost["executor"] == "docker" and cost["wall_s"] > 0
    assert cost["cpu_s"] is None and cost["peak_rss_bytes"] is None
    assert cost["resources"] == {"cpus": 1, "memory": 256 * 2**20}
    assert cost["output_bytes"] == len(f"hello {dws.repo}\n")
    line = next(l for l in dws.run("show", "//app:run", check=0).stdout.splitlines() if "cost:" in l)
    assert "cpu unknown" in line and "on docker" in line, line
