"""kill -9 mid-build and concurrent builds leave a consistent cache and correct outputs."""

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import BIN, WS
from fault_proxy import record_figures

N_TARGETS = 24
TRIALS = int(os.environ.get("BUILDML_KILL_TRIALS", "5"))  # benchmarks/ runs the full count (20+)
CONCURRENT_TRIALS = int(os.environ.get("BUILDML_CONCURRENT_TRIALS", "1"))  # benchmarks/: 15


def many_targets(ws, n=N_TARGETS):
    lines = ["targets:"]
    for i in range(n):
        dep = f"\n    deps: [':t{i - 1}', src{i}.txt]" if i else f"\n    deps: [src{i}.txt]"
        lines.append(f"  t{i}:\n    command: sleep 0.05 && head -c 20000 /dev/urandom > big{i}.bin && cat src{i}.txt > o{i}.txt"
                     f"{dep}\n    outs: [o{i}.txt, big{i}.bin]")
        ws.write(f"src{i}.txt", f"content {i}\n")
    ws.write("BUILD.yaml", "\n".join(lines) + "\n")


def test_kill_9_mid_build_leaves_cache_consistent(ws):
    """At random moments during a build, kill -9; verify finds nothing corrupt and a rebuild is correct."""
    many_targets(ws)
    rng = random.Random(1234)
    for trial in range(TRIALS):
        proc = subprocess.Popen([str(BIN / "buildml"), "build", "-j", "2"], cwd=ws.root, env=ws.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.2, 2.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        verify = ws.run("cache", "verify", check=0)
        assert "no corrupt entries" in verify.stdout
        if trial % 2:
            ws.run("clean", check=0)
    ws.run("build", check=0)
    for i in range(N_TARGETS):
        assert ws.read(f"o{i}.txt") == f"content {i}\n"
    summary, _ = ws.build_json()
    assert summary["executed"] == 0
    assert "no corrupt entries" in ws.run("cache", "verify", check=0).stdout


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_builds_execute_each_key_once(tmp_path, processes):
    """Two and four builds of overlapping targets at once: all succeed, each action runs once, outputs are intact."""
    for trial in range(CONCURRENT_TRIALS):
        ws = WS(tmp_path / f"ws{trial}", tmp_path / f"cache{trial}")
        ws.root.mkdir()
        ws.write("buildml.yaml", "")
        runs_log = tmp_path / f"runs{trial}.log"
        ws.write("BUILD.yaml", "targets:\n" + "".join(
            f"  t{i}:\n    command: echo run >> {runs_log}; sleep 0.3; echo {i} > o{i}\n    outs: [o{i}]\n"
            + (f"    deps: [o{i - 1}]\n" if i % 3 else "") for i in range(6)))
        procs = [subprocess.Popen([str(BIN / "buildml"), "build", "--json", "-j", "3"], cwd=ws.root, env=ws.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
        outs = [p.communicate(timeout=180) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        assert len(runs_log.read_text().splitlines()) == 6, f"trial {trial}: each key executed once across {processes} processes"
        for i in range(6):
            assert ws.read(f"o{i}") == f"{i}\n"
        assert "no corrupt entries" in ws.run("cache", "verify", check=0).stdout
    record_figures(f"{processes} concurrent builds: each key executed once", trials=CONCURRENT_TRIALS, failures=0)


def test_corrupt_blob_is_never_restored(ws):
    """A flipped byte in a cached blob is detected: the target re-runs and the output is correct."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo good > out.txt\n    outs: [out.txt]\n")
    ws.run("build", check=0)
    blob = next(p for p in (ws.cache / "cas").rglob("*") if p.is_file() and p.read_bytes() == b"good\n")
    os.chmod(blob, 0o644)
    blob.write_bytes(b"evil\n")
    assert "corrupt blob" in ws.run("cache", "verify").stdout
    (ws.root / "out.txt").unlink()
    ws.run("build", check=0)
    assert ws.read("out.txt") == "good\n"


def _interrupt_mid_build(ws, sig):
    marker = f"buildml-interrupt-marker-{sig}"
    ws.write("BUILD.yaml", "targets:\n" + "".join(
        f"  s{i}:\n    command: sleep 30 # {marker}\n    outs: [o{i}]\n" for i in range(2)) +
        "  quick:\n    command: echo done > q.txt\n    outs: [q.txt]\n")
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "-j", "3"], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode:
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc, out + err, marker


def test_sigint_and_sigterm_stop_children_and_keep_cache_consistent(ws):
    """Ctrl-C or SIGTERM mid-build: exit 130 with a message, no child left running, cache verifies, rebuild works."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc, text, marker = _interrupt_mid_build(ws, sig)
        assert proc.returncode == 130, text
        assert "interrupted" in text and "Traceback" not in text
        time.sleep(0.5)
        assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1, "a child survived"
        assert "no corrupt entries" in ws.run("cache", "verify", check=0).stdout
        assert not list((ws.cache / "tmp").iterdir()), "sandboxes were removed"
    ws.write("BUILD.yaml", "targets:\n" + "".join(f"  s{i}:\n    command: echo {i} > o{i}\n    outs: [o{i}]\n" for i in range(2)))
    ws.run("build", check=0)
    assert ws.read("o0") == "0\n" and ws.read("o1") == "1\n"
