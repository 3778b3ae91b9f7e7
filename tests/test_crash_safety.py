"""kill -9 mid-build and concurrent builds leave a consistent cache and correct outputs."""

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import BIN, WS, default_sigint
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


def concurrent_targets(ws, runs_log, dirs: bool) -> dict:
    """Six targets in chains; each writes one file, or (dirs) a directory of 20 files; {path: content} expected."""
    def write(i):
        if not dirs:
            return f"echo {i} > o{i}", f"[o{i}]"
        return f"mkdir -p d{i} && for j in $(seq 20); do echo {i}.$j > d{i}/f$j; done", f"[d{i}]"
    ws.write("BUILD.yaml", "targets:\n" + "".join(
        f"  t{i}:\n    command: echo run >> {runs_log}; sleep 0.3; {write(i)[0]}\n    outs: {write(i)[1]}\n"
        + (f"    deps: [':t{i - 1}']\n" if i % 3 else "") for i in range(6)))
    if not dirs:
        return {f"o{i}": f"{i}\n" for i in range(6)}
    return {f"d{i}/f{j}": f"{i}.{j}\n" for i in range(6) for j in range(1, 21)}


@pytest.mark.parametrize("processes,dirs", [(2, False), (4, False), (4, True)], ids=["2-files", "4-files", "4-dirs"])
def test_concurrent_builds_execute_each_key_once(tmp_path, processes, dirs):
    """Two and four builds of overlapping targets at once (file outs, or directory outs all restore into at the
    same moment): all succeed, each action runs once, outputs are intact, no temp file or displaced file is left."""
    failures = []
    for trial in range(CONCURRENT_TRIALS):
        ws = WS(tmp_path / f"ws{trial}", tmp_path / f"cache{trial}")
        ws.root.mkdir()
        ws.write("buildml.yaml", "")
        runs_log = tmp_path / f"runs{trial}.log"
        expected = concurrent_targets(ws, runs_log, dirs)
        procs = [subprocess.Popen([str(BIN / "buildml"), "build", "--json", "-j", "3"], cwd=ws.root, env=ws.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
        outs = [p.communicate(timeout=180) for p in procs]
        problems = [f"exit {p.returncode}: {err[-800:]}" for p, (_, err) in zip(procs, outs) if p.returncode != 0]
        runs = len(runs_log.read_text().splitlines())
        if runs != 6:
            problems.append(f"{runs} runs of 6 keys across {processes} processes")
        files = {str(p.relative_to(ws.root)): p.read_text() for p in ws.root.rglob("[of]*")
                 if p.is_file() and ".buildml" not in p.parts}
        if files != expected:
            problems.append(f"outputs differ: {sorted(set(files) ^ set(expected))[:5]}")
        if leftovers := [p for p in ws.root.rglob("*") if ".buildml-tmp-" in p.name or "displaced" in p.parts]:
            problems.append(f"left in the workspace: {leftovers[:5]}")
        if os.listdir(ws.cache / "tmp"):
            problems.append(f"left in the cache's tmp/: {os.listdir(ws.cache / 'tmp')[:5]}")
        if "no corrupt entries" not in ws.run("cache", "verify", check=0).stdout:
            problems.append("cache verify found corrupt entries")
        if problems:
            failures.append((trial, problems))
    record_figures(f"{processes} concurrent builds ({'directory' if dirs else 'file'} outs): each key executed once",
                   trials=CONCURRENT_TRIALS, failures=len(failures))
    assert failures == [], failures


def _kill_9_when(ws, found, *args) -> None:
    """Start `buildml build`, and kill -9 its process group as soon as found() is true."""
    proc = subprocess.Popen([str(BIN / "buildml"), "build", *args], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not found() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert proc.poll() is None, "the build ended before the moment to kill it"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_leaves_no_orphan_after_the_next_build(ws, tmp_path):
    """kill -9 mid-action (three times) and mid-restore: the next build leaves no sandbox or temp in the cache's
    tmp/ (an untagged one of an older buildml included) and no buildml temp file in the workspace."""
    slow = tmp_path / "slow"
    slow.touch()
    ws.write("BUILD.yaml", "targets:\n"
             f"  act:\n    command: touch running; if [ -e {slow} ]; then sleep 60; fi; echo done > a.txt\n"
             "    outs: [a.txt]\n"
             "  big:\n    command: head -c 200000000 /dev/zero > big.bin\n    outs: [big.bin]\n")
    seen = set()
    running = lambda: set((ws.cache / "tmp").glob("sandbox-*/ws/running")) - seen
    for _ in range(3):
        _kill_9_when(ws, running, "//:act")
        seen |= running()
    assert len(list((ws.cache / "tmp").glob("sandbox-*"))) == 1, "each build swept the orphan before it"
    ws.run("build", "//:big", check=0)
    (ws.root / "big.bin").unlink()
    in_flight = lambda: any(".buildml-tmp-" in name for name in os.listdir(ws.root))
    _kill_9_when(ws, in_flight, "//:big")  # while the cached big.bin is being copied into the workspace
    assert in_flight(), "a temp file left in the workspace"
    (ws.cache / "tmp" / "sandbox-k2j3h4g5" / "ws").mkdir(parents=True)  # as an older buildml names them
    slow.unlink()
    ws.run("build", check=0)
    assert os.listdir(ws.cache / "tmp") == []
    assert [p for p in ws.root.rglob("*") if ".buildml-tmp-" in p.name] == []
    assert ws.read("a.txt") == "done\n" and (ws.root / "big.bin").stat().st_size == 200_000_000


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


def test_verify_repair_forgets_the_entries_of_removed_blobs(ws):
    """`cache verify --repair` removes a corrupt blob and the entry naming it: verify is clean after, and the next
    build re-executes the target instead of trusting an entry whose output is gone."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo good > out.txt\n    outs: [out.txt]\n"
                           "  b:\n    command: echo other > b.txt\n    outs: [b.txt]\n")
    ws.run("build", check=0)
    blob = next(p for p in (ws.cache / "cas").rglob("*") if p.is_file() and p.read_bytes() == b"good\n")
    os.chmod(blob, 0o644)
    blob.write_bytes(b"evil\n")
    proc = ws.run("cache", "verify", "--repair", check=1)
    assert "corrupt blob" in proc.stdout and "(removed)" in proc.stdout
    assert "bad entry" in proc.stdout and "missing blobs for out.txt (removed)" in proc.stdout
    proc = ws.run("cache", "verify", check=0)
    assert "no corrupt entries" in proc.stdout and "1 action-cache entries" in proc.stdout  # b's entry is kept
    (ws.root / "out.txt").unlink()
    (ws.root / "b.txt").unlink()
    summary, events = ws.build_json()
    assert {e["target"]: e["status"] for e in events} == {"//:a": "executed", "//:b": "cached"}
    assert ws.read("out.txt") == "good\n"
    assert "no corrupt entries" in ws.run("cache", "verify", check=0).stdout


def _interrupt_mid_build(ws, sig):
    marker = f"buildml-interrupt-marker-{sig}"
    ws.write("BUILD.yaml", "targets:\n" + "".join(
        f"  s{i}:\n    command: sleep 30 # {marker}\n    outs: [o{i}]\n" for i in range(2)) +
        "  quick:\n    command: echo done > q.txt\n    outs: [q.txt]\n")
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "-j", "3"], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
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
