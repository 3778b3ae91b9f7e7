"""`buildml cache gc --remote`: reachability from git refs, against moto's S3 server, through the real CLI.

Three commits on two branches are built with a shared remote cache; one branch is deleted; the GC keeps what `--at`
of the remaining refs needs (a fresh clone with an empty local cache builds them with 0 executions), deletes the
deleted branch's unique results, leaves a build that runs meanwhile with a correct cache, and, killed with SIGKILL
in the middle, leaves a remote that `cache verify --remote` finds clean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import BIN, WS, executed
from fault_proxy import FaultProxy, s3_env
from test_history import GIT_ENV, commit, git

from buildml.features.remote_gc import TICK_S

BUILD = """\
targets:
  prep:
    command: mkdir -p out && tr a-z A-Z < data/raw.txt > out/clean.txt
    deps: [data/raw.txt]
    outs: [out/clean.txt]
  train:
    command: python3 -c "import yaml; p = yaml.safe_load(open('params.yaml')); open('out/model.txt', 'w').write(open('out/clean.txt').read() + str(p['lr']))"
    deps: [out/clean.txt]
    params: [lr]
    outs: [out/model.txt]
"""


def deletes(method: str, path: str) -> bool:
    """Delete requests (s3fs deletes in bulk with POST ?delete)."""
    return method == "DELETE" or (method == "POST" and "delete" in path)


def repo(tmp_path, env) -> tuple[WS, dict]:
    """main: c1 (tag v1) -> c2; branch exp from c1: c3; every commit built with the shared remote."""
    root = tmp_path / "repo"
    root.mkdir()
    ws = WS(root, tmp_path / "cache")
    git(root, "init", "-q", "-b", "main")
    ws.write("buildml.yaml", "")
    ws.write("BUILD.yaml", BUILD)
    ws.write(".gitignore", ".buildml/\nbuildml-out/\ndata/\nout/\n")
    ws.write("data/raw.txt", "hello\n")
    shas = {}
    for name, lr in (("c1", "0.1"), ("c2", "0.2")):
        ws.write("params.yaml", f"lr: {lr}\n")
        shas[name] = commit(root, name)
        ws.run("build", env=ws.env(**env), check=0)
        shas[name + "_model"] = ws.read("out/model.txt")
    git(root, "tag", "v1", shas["c1"])
    git(root, "checkout", "-q", "-b", "exp", shas["c1"])
    ws.write("params.yaml", "lr: 0.3\n")
    shas["c3"] = commit(root, "c3")
    ws.run("build", env=ws.env(**env), check=0)
    shas["c3_model"] = ws.read("out/model.txt")
    git(root, "checkout", "-q", "main")
    time.sleep(TICK_S + 1)  # what was written within a timestamp tick of a GC's start is never collected
    return ws, shas


def clone_at(tmp_path, ws: WS, rev: str, env: dict, name: str) -> tuple[list, str]:
    """A fresh clone (no data/) with an empty local cache builds --at rev: (executed targets, its model)."""
    clone = WS(tmp_path / name, tmp_path / f"{name}-cache")
    subprocess.run(["git", "clone", "-q", str(ws.root), str(clone.root)], check=True, env={**os.environ, **GIT_ENV})
    proc = clone.run("build", "--json", "--at", rev, env=clone.env(**env), check=0)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    short = git(clone.root, "rev-parse", "--short", rev)
    model = (clone.root / "buildml-out" / f"@{short}" / "out/model.txt").read_text()
    return executed([e for e in lines if e.get("event") == "finished"]), model


def remote_objects(moto_server, url: str, sub: str) -> set[str]:
    return {p.rsplit("/", 1)[-1] for p in moto_server.fs().find(url.removeprefix("s3://") + "/" + sub)}


def digest(text: str) -> str:
    from buildml.hashing import digest_bytes

    return digest_bytes(text.encode())


def verify_remote(ws: WS, env: dict) -> str:
    proc = ws.run("cache", "verify", "--remote", env=ws.env(**env), check=None)
    return proc.stdout + proc.stderr


def test_gc_keeps_what_the_refs_need_and_drops_a_deleted_branch(tmp_path, moto_server, s3_bucket):
    env = {"BUILDML_REMOTE_CACHE": s3_bucket, **moto_server.env}
    ws, shas = repo(tmp_path, env)
    assert digest(shas["c3_model"]) in remote_objects(moto_server, s3_bucket, "cas")
    git(ws.root, "branch", "-D", "exp")
    orphan = "ab" * 16  # the record of a remote executor's run of a key nothing keeps
    moto_server.fs().pipe(f"{s3_bucket.removeprefix('s3://')}/runs/ab/{orphan}.json", b"{}")
    time.sleep(TICK_S + 1)

    dry = ws.run("cache", "gc", "--remote", "--keep-days", "0", "--dry-run", env=ws.env(**env), check=0)
    assert "would delete" in dry.stdout and digest(shas["c3_model"]) in remote_objects(moto_server, s3_bucket, "cas")
    proc = ws.run("cache", "gc", "--remote", "--keep-days", "0", env=ws.env(**env), check=0)
    assert "deleted" in proc.stdout and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    cas = remote_objects(moto_server, s3_bucket, "cas")
    assert digest(shas["c3_model"]) not in cas  # the deleted branch's unique result is gone
    assert digest(shas["c1_model"]) in cas and digest(shas["c2_model"]) in cas
    assert f"{orphan}.json" not in remote_objects(moto_server, s3_bucket, "runs")  # run records are collected too
    assert "no corrupt entries" in verify_remote(ws, env)

    for rev, name in ((shas["c2"], "main"), ("v1", "v1")):  # the kept refs: nothing executes, same bytes
        ran, model = clone_at(tmp_path, ws, rev, env, f"clone-{name}")
        assert ran == [] and model == shas["c2_model" if name == "main" else "c1_model"]

    again = ws.run("cache", "gc", "--remote", "--keep-days", "0", env=ws.env(**env), check=0)
    assert "deleted 0 of" in again.stdout  # nothing more to collect


def test_a_build_during_gc_and_a_killed_gc_leave_a_correct_cache(tmp_path, moto_server, s3_bucket):
    """The GC's deletes go through a slow proxy: a build of a new commit runs meanwhile and completes, and its
    results survive; a GC killed with SIGKILL after it started deleting leaves `cache verify --remote` clean."""
    env = {"BUILDML_REMOTE_CACHE": s3_bucket, **moto_server.env}
    ws, shas = repo(tmp_path, env)
    git(ws.root, "branch", "-D", "exp")
    ws.write("params.yaml", "lr: 0.5\n")
    c4 = commit(ws.root, "c4")

    with FaultProxy(moto_server.endpoint, "delay", match=deletes, delay_s=1.0) as proxy:
        slow = ws.env(**{**env, **s3_env(proxy, moto_server.env)})
        gc = subprocess.Popen([str(BIN / "buildml"), "cache", "gc", "--remote", "--keep-days", "0"], cwd=ws.root,
                              env=slow, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proxy.hit.wait(60), "the GC never deleted anything"
        build = ws.run("build", env=ws.env(**env), check=0)  # concurrently, straight to the server
        out = gc.communicate(timeout=300)[0]
        assert gc.returncode == 0, out
    assert "Traceback" not in build.stderr
    c4_model = ws.read("out/model.txt")
    assert "no corrupt entries" in verify_remote(ws, env)
    ran, model = clone_at(tmp_path, ws, c4, env, "clone-c4")
    assert ran == [] and model == c4_model

    # a GC killed mid-sweep: make garbage (a branch built, then deleted), kill at each of the first deletes
    git(ws.root, "checkout", "-q", "-b", "tmp")
    for lr in ("0.7", "0.8"):
        ws.write("params.yaml", f"lr: {lr}\n")
        commit(ws.root, f"tmp {lr}")
        ws.run("build", env=ws.env(**env), check=0)
    git(ws.root, "checkout", "-q", "main")
    git(ws.root, "branch", "-D", "tmp")
    time.sleep(TICK_S + 1)
    killed = []
    for trial in range(2):  # the 1st delete is the clock marker's; then entries, then (next trial maybe) blobs
        with FaultProxy(moto_server.endpoint, "delay", match=deletes, delay_s=1.0) as proxy:
            slow = ws.env(**{**env, **s3_env(proxy, moto_server.env)})
            gc = subprocess.Popen([str(BIN / "buildml"), "cache", "gc", "--remote", "--keep-days", "0"], cwd=ws.root,
                                  env=slow, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + 60
            while proxy.injected < 2 and gc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the delete is in flight
            gc.send_signal(signal.SIGKILL)
            gc.wait(timeout=30)
            killed.append(gc.returncode == -signal.SIGKILL)
        assert "no corrupt entries" in verify_remote(ws, env), trial
    assert killed[0], "the GC ended before it was killed"
    ws.run("cache", "gc", "--remote", "--keep-days", "0", env=ws.env(**env), check=0)
    assert "no corrupt entries" in verify_remote(ws, env)
    ran, model = clone_at(tmp_path, ws, c4, env, "clone-c4-after")
    assert ran == [] and model == c4_model
