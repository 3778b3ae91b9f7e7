"""SIGINT / SIGTERM at awkward moments: while results are uploaded to the remote, and while `--at` materializes a
commit with `git worktree add`. Children stop, worktrees and temp dirs go, both caches stay consistent."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, WS, default_sigint
from fault_proxy import FaultProxy, record_figures, s3_env, writes

TRIALS = int(os.environ.get("BUILDML_INTERRUPT_TRIALS", "1"))  # benchmarks/reliability.py runs more
# (signal, to the whole process group as a terminal's Ctrl-C does, or to buildml alone as `kill` does)
SIGNALS = [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)]


def start(ws: WS, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "buildml"), *args], cwd=ws.root, env=env or ws.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=default_sigint)


def interrupt(proc: subprocess.Popen, sig, group: bool) -> tuple[str, float]:
    """Send sig; (output, seconds until buildml exited)."""
    started = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return out + err, time.monotonic() - started


def processes_under(path: Path) -> list[str]:
    """Live processes whose working directory or command line lies under path (children that survived)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(str(path)) or str(path) in cmdline):
            found.append(f"{pid} {cmdline[:160]}")
    return found


def no_survivors(path: Path, wait: float = 3.0) -> list[str]:
    deadline = time.monotonic() + wait
    while (left := processes_under(path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# -- interrupting uploads ------------------------------------------------------------------------------
UPLOAD_BUILD = "targets:\n" + "".join(
    f"  t{i}:\n    command: \"mkdir -p o{i} && for n in 1 2 3; do head -c 30000 /dev/urandom > o{i}/f$n; done\"\n"
    f"    outs: [o{i}/]\n" for i in range(6))


def upload_ws(tmp_path, name: str, url: str, env: dict) -> WS:
    root = tmp_path / name
    root.mkdir()
    (root / "buildml.yaml").write_text("")
    (root / "BUILD.yaml").write_text(UPLOAD_BUILD)
    ws = WS(root, tmp_path / f"cache-{name}")
    base = ws.env
    ws.env = lambda **more: base(**{"BUILDML_REMOTE_CACHE": url, **env, **more})
    return ws


def verified(ws, env=None) -> str:
    return ws.run("cache", "verify", env=env, check=0).stdout


def test_interrupt_while_uploading(tmp_path, moto_server):
    """SIGINT/SIGTERM while results are being uploaded (a slow link): exit 130, nothing left running, both caches
    verify (no manifest without its blobs), and `cache push` then completes the remote for a fresh clone."""
    rng = random.Random(7)
    failures, trials, stop_times = [], 0, []
    for trial in range(TRIALS):
        for sig, group in SIGNALS:
            trials += 1
            url = moto_server.bucket()
            with FaultProxy(moto_server.endpoint, "delay", match=writes, delay_s=0.5) as proxy:
                ws = upload_ws(tmp_path, f"u{trials}", url, s3_env(proxy, moto_server.env))
                proc = start(ws, "build", "-j", "2")
                if not proxy.hit.wait(60):
                    proc.kill()
                    raise AssertionError(f"no upload started: {proc.communicate()} {proxy.log[-5:]}")
                time.sleep(rng.uniform(0, 1.0))  # uploads take ~6 s at 0.5 s each: the signal lands among them
                text, seconds = interrupt(proc, sig, group)
                uploads_seen = proxy.injected
            stop_times.append(seconds)
            direct = ws.env(**moto_server.env)
            problems = []
            if proc.returncode != 130 or "interrupted" not in text or "Traceback" in text:
                problems.append(f"exit {proc.returncode}: {text[-600:]}")
            if seconds > 30:
                problems.append(f"took {seconds:.1f}s to stop")
            if left := no_survivors(ws.root):
                problems.append(f"survivors {left}")
            if os.listdir(ws.cache / "tmp"):
                problems.append(f"tmp left: {os.listdir(ws.cache / 'tmp')}")
            for where, env in (("local", None), ("remote", direct)):
                report = ws.run("cache", "verify", *(["--remote"] if env else []), env=env, check=None)
                if "no corrupt entries" not in report.stdout:
                    problems.append(f"{where}: {report.stdout}{report.stderr}")
            if problems:
                failures.append((trial, sig.name, group, uploads_seen, problems))
    record_figures("interrupt: SIGINT/SIGTERM during uploads", trials=trials, failures=len(failures),
                   slowest_stop_s=round(max(stop_times), 2))
    assert failures == [], failures
    # the last trial's workspace, now straight to the server: finish, push what the interrupted upload missed
    ws = WS(ws.root, ws.cache)
    base = ws.env
    ws.env = lambda **more: base(**{"BUILDML_REMOTE_CACHE": url, **moto_server.env, **more})
    ws.run("build", check=0)
    ws.run("cache", "push", check=0)
    clone = upload_ws(tmp_path, "clone", url, moto_server.env)
    proc = clone.run("build", "--json", check=0)
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["executed"] == 0 and summary["cached"] == 6, summary
    assert "no corrupt entries" in verified(clone, clone.env())


# -- interrupting `--at` -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_repo(tmp_path_factory) -> Path:
    """A git repo whose checkout takes a few seconds: 2,000 files (40 MB), 100 behind an LFS-like smudge filter."""
    repo = tmp_path_factory.mktemp("big") / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *a], cwd=repo,
                                    check=True, capture_output=True)
    git("init", "-q")
    git("config", "filter.slow.smudge", "sleep 0.03; cat")
    git("config", "filter.slow.clean", "cat")
    rng = random.Random(3)
    for i in range(2000):
        path = repo / "data" / f"d{i % 20}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(20000))
    (repo / ".gitattributes").write_text("data/d1/** filter=slow\n")
    (repo / "buildml.yaml").write_text("")
    (repo / "BUILD.yaml").write_text("targets:\n  a:\n    command: ls data/d3 | wc -l > count.txt\n"
                                     "    deps: [data/d3/]\n    outs: [count.txt]\n")
    (repo / ".gitignore").write_text(".buildml/\nbuildml-out/\n")
    git("add", "-A")
    git("commit", "-qm", "big")
    return repo


def worktrees(repo: Path) -> list[str]:
    return subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True, check=True).stdout.splitlines()


def test_interrupt_while_at_materializes(big_repo, tmp_path):
    """SIGINT/SIGTERM while `git worktree add` checks the commit out: exit 130, git and its children stopped,
    `git worktree list` shows only the main tree, no temp dir left, the cache verifies; the next --at build works."""
    ws = WS(big_repo, tmp_path / "cache")
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = ws.env(TMPDIR=str(tmp))
    rng = random.Random(11)
    failures, trials = [], 0
    for trial in range(TRIALS):
        for sig, group in SIGNALS:
            trials += 1
            proc = start(ws, "build", "--at", "HEAD", "//...", env=env)
            deadline = time.monotonic() + 60
            while not processes_under(tmp) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the build ended before git started: make the repo bigger"
            time.sleep(rng.uniform(0, 1.0))
            text, _ = interrupt(proc, sig, group)
            problems = []
            if proc.returncode != 130 or "interrupted" not in text or "Traceback" in text:
                problems.append(f"exit {proc.returncode}: {text[-600:]}")
            if left := no_survivors(tmp, wait=0.2):
                problems.append(f"survivors {left}")
            if len(worktrees(big_repo)) != 1:
                problems.append(f"worktrees {worktrees(big_repo)}")
            if os.listdir(tmp):
                problems.append(f"temp dirs left {os.listdir(tmp)}")
            if (big_repo / ".git" / "worktrees").exists() and os.listdir(big_repo / ".git" / "worktrees"):
                problems.append(f".git/worktrees holds {os.listdir(big_repo / '.git' / 'worktrees')}")
            if "no corrupt entries" not in verified(ws, env):
                problems.append("cache verify failed")
            if problems:
                failures.append((trial, sig.name, group, problems))
                subprocess.run(["git", "worktree", "prune"], cwd=big_repo)
    record_figures("interrupt: SIGINT/SIGTERM during --at materialization", trials=trials, failures=len(failures))
    assert failures == [], failures
    ws.run("build", "--at", "HEAD", env=env, check=0)
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=big_repo, capture_output=True, text=True).stdout.strip()
    assert (big_repo / "buildml-out" / f"@{sha}" / "count.txt").read_text().strip() == "100"
    assert len(worktrees(big_repo)) == 1 and os.listdir(tmp) == []
