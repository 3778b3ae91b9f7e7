"""Load: a build of many small targets at -j cores, and a remote cache under many concurrent uploads; no error,
bounded memory (peak RSS measured), every entry verifiable afterwards.

CI runs 1,000 targets and 50 concurrent uploads; `python benchmarks/reliability.py --full` runs 10,000 targets
(BUILDML_LOAD_TARGETS, BUILDML_LOAD_UPLOADERS set the sizes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import BIN, WS
from fault_proxy import record_figures

pytestmark = pytest.mark.slow
N_TARGETS = int(os.environ.get("BUILDML_LOAD_TARGETS", "1000"))
UPLOADERS = int(os.environ.get("BUILDML_LOAD_UPLOADERS", "50"))
PACKAGES = 10
RSS_BUDGET_MB = 250 + N_TARGETS // 50  # measured: ~45 MB at 1,000 targets; the budget catches growth per target
# Runs argv, then prints the peak RSS (KiB) of it and everything it waited for: buildml and its actions.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "sys.stderr.write('peak-rss-kib %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def measured(argv: list, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PEAK_RSS, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def peak_mb(stderr: str) -> float:
    line = next(l for l in stderr.splitlines() if l.startswith("peak-rss-kib "))
    return int(line.split()[1]) / 1024


def many_targets(ws: WS, n: int) -> None:
    """n targets in PACKAGES packages; in each package target j reads the output of target j // 2 (a tree)."""
    per = n // PACKAGES
    for p in range(PACKAGES):
        lines = ["targets:"]
        for j in range(per):
            dep = f"\n    deps: [o{j // 2}.txt]" if j else ""
            lines.append(f"  t{j}:\n    command: echo {p * per + j} > o{j}.txt{dep}\n    outs: [o{j}.txt]")
        ws.write(f"p{p}/BUILD.yaml", "\n".join(lines) + "\n")


def test_many_small_targets_at_j_cores(ws):
    """N targets at -j <cores>: all execute, outputs right, peak RSS under budget, a no-op rebuild, the cache verifies."""
    many_targets(ws, N_TARGETS)
    jobs = os.cpu_count() or 2
    start = time.monotonic()
    proc = measured([str(BIN / "buildml"), "build", "--json", "-j", str(jobs)], cwd=ws.root, env=ws.env())
    out, err = proc.communicate(timeout=3600)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.splitlines()[-1])
    assert summary["executed"] == N_TARGETS and summary["failed"] == 0, summary
    per = N_TARGETS // PACKAGES
    wrong = [(p, j) for p in range(PACKAGES) for j in range(per) if ws.read(f"p{p}/o{j}.txt") != f"{p * per + j}\n"]
    assert wrong == []
    rss = peak_mb(err)
    assert rss < RSS_BUDGET_MB, f"peak RSS {rss:.0f} MB"
    noop_start = time.monotonic()
    summary, _ = ws.build_json()
    noop = time.monotonic() - noop_start
    assert summary["executed"] == 0 and summary["up_to_date"] == N_TARGETS
    verify = ws.run("cache", "verify", check=0).stdout
    assert f"{N_TARGETS} action-cache entries" in verify and "no corrupt entries" in verify
    record_figures("load: many small targets", trials=1, failures=0, targets=N_TARGETS, jobs=jobs,
                   build_s=round(seconds, 1), noop_s=round(noop, 2), peak_rss_mb=round(rss))


PROCESSES = 10  # UPLOADERS concurrent uploads: PROCESSES builds at once, each -j UPLOADERS // PROCESSES
SHARED = """\
targets:
  shared:
    command: head -c 200000 /dev/zero | tr '\\0' s > shared.bin
    outs: [shared.bin]
"""
OWN = """\
  own{j}:
    command: "for n in 1 2 3 4 5; do echo uploader-{k}-{j}-$n; done > own{j}.txt; cat shared.bin >> own{j}.txt"
    deps: [shared.bin]
    outs: [own{j}.txt]
"""


def uploader(tmp_path, name: str, k: int, jobs: int) -> WS:
    """A workspace with the shared target and `jobs` targets of its own that upload in parallel."""
    ws = WS(tmp_path / name, tmp_path / f"cache-{name}")
    ws.root.mkdir()
    ws.write("buildml.yaml", "")
    ws.write("BUILD.yaml", SHARED + "".join(OWN.format(k=k, j=j) for j in range(jobs)))
    return ws


def test_concurrent_uploads_to_one_remote(tmp_path, moto_server):
    """UPLOADERS uploads at once into one bucket (PROCESSES builds, one entry shared by all): none fails or warns,
    the remote verifies with every entry, and a fresh clone restores everything from it."""
    url = moto_server.bucket()
    jobs = max(1, UPLOADERS // PROCESSES)
    workspaces = [uploader(tmp_path, f"w{k}", k, jobs) for k in range(PROCESSES)]
    env = lambda ws: ws.env(BUILDML_REMOTE_CACHE=url, **moto_server.env)
    start = time.monotonic()
    procs = [measured([str(BIN / "buildml"), "build", "--json", "-j", str(jobs)], cwd=ws.root, env=env(ws))
             for ws in workspaces]
    results = [p.communicate(timeout=900) for p in procs]
    seconds = time.monotonic() - start
    failures = [(k, p.returncode, err[-500:]) for k, (p, (_, err)) in enumerate(zip(procs, results)) if p.returncode]
    warned = [(k, l) for k, (out, _) in enumerate(results) for l in out.splitlines() if '"event": "warning"' in l]
    assert failures == [] and warned == [], (failures, warned)
    rss = max(peak_mb(err) for _, err in results)
    assert rss < RSS_BUDGET_MB, f"peak RSS {rss:.0f} MB"
    proc = workspaces[0].run("cache", "verify", "--remote", env=env(workspaces[0]), check=0)
    assert f"{PROCESSES * jobs + 1} action-cache entries" in proc.stdout and "no corrupt entries" in proc.stdout, proc.stdout
    clone = uploader(tmp_path, "clone", PROCESSES - 1, jobs)
    summary, finished = _build(clone, env(clone))
    assert summary["executed"] == 0 and {e["source"] for e in finished} == {"remote"}
    assert all(clone.read(f"own{j}.txt") == workspaces[-1].read(f"own{j}.txt") for j in range(jobs))
    record_figures("load: concurrent uploads", trials=1, failures=0, uploads=PROCESSES * jobs, processes=PROCESSES,
                   wall_s=round(seconds, 1), peak_rss_mb_per_build=round(rss))


def _build(ws: WS, env: dict):
    proc = ws.run("build", "--json", env=env, check=0)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    return lines[-1], [l for l in lines if l.get("event") == "finished"]
