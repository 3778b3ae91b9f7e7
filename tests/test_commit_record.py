"""`--at REV` with inputs outside git: a build of a commit records the git-ignored files it used (bytes in the cache,
digests in a per-commit record shared through the remote cache), and `--at` of that commit puts them back. Real git
repos, the real CLI, moto's S3 server for the shared cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import BIN, WS, executed
from test_history import GIT_ENV, commit, git, short

BUILD = """\
targets:
  prep:
    command: mkdir -p out && tr a-z A-Z < data/raw.txt > out/clean.txt && cat data/imgs/* >> out/clean.txt
    deps: [data/raw.txt, data/imgs]
    outs: [out/clean.txt]
  other:
    command: mkdir -p out && cat notes.txt > out/notes.txt
    deps: [notes.txt]
    outs: [out/notes.txt]
"""


def commit_a(tmp_path) -> tuple[WS, str]:
    """A repo whose data/ is git-ignored, data v1 in place, committed as A (not built)."""
    root = tmp_path / "repo"
    root.mkdir()
    ws = WS(root, tmp_path / "cache")
    git(root, "init", "-q")
    ws.write("buildml.yaml", "")
    ws.write("BUILD.yaml", BUILD)
    ws.write(".gitignore", ".buildml/\nbuildml-out/\ndata/\nout/\n")
    ws.write("notes.txt", "notes\n")
    ws.write("data/raw.txt", "hello\n")
    ws.write("data/imgs/a.txt", "i1\n")
    return ws, commit(root, "A")


def data_repo(tmp_path) -> tuple[WS, str, str]:
    """commit_a built with data v1, then commit B built with data v2."""
    ws, a = commit_a(tmp_path)
    root = ws.root
    ws.run("build", check=0)
    ws.write("data/raw.txt", "world\n")
    ws.write("data/imgs/a.txt", "i2\n")
    ws.write("data/imgs/b.txt", "extra\n")
    ws.write("notes.txt", "notes v2\n")
    b = commit(root, "B")
    ws.run("build", check=0)
    return ws, a, b


def at_out(ws: WS, rev: str) -> str:
    return (ws.root / "buildml-out" / f"@{short(ws.root, rev)}" / "out/clean.txt").read_text()


def record_key(rev: str) -> str:
    from buildml.engine.commit_record import record_key as key

    return key(rev, "")


def test_at_puts_back_the_ignored_inputs_a_build_of_rev_used(tmp_path):
    """--at A restores A's output from the cache (0 executed); with A's result gone it re-executes on A's recorded
    bytes (the work tree has v2), and the work tree's data is never touched."""
    ws, a, _ = data_repo(tmp_path)
    _, events = ws.build_json("--at", a)
    assert executed(events) == [] and at_out(ws, a) == "HELLO\ni1\n"

    record = record_key(a)
    for entry in (ws.cache / "ac").glob("*/*"):  # every result of A and B goes; A's source record stays
        if entry.name != record:
            entry.unlink()
    shutil.rmtree(ws.root / "buildml-out")
    _, events = ws.build_json("--at", a, "//:prep")
    assert executed(events) == ["//:prep"] and at_out(ws, a) == "HELLO\ni1\n"
    assert ws.read("data/raw.txt") == "world\n" and ws.read("out/clean.txt") == "WORLD\ni2\nextra\n"
    assert not list(Path(tempfile.gettempdir()).glob(f"buildml-at-{a}-*"))


def test_a_fresh_clone_with_the_shared_cache_reproduces_rev(tmp_path, moto_server, s3_bucket):
    """The record and the bytes travel through the remote cache: a clone without data/ and with an empty local cache
    builds A's output with 0 executions; with A's results gone from both caches it runs on A's recorded inputs."""
    env = {"BUILDML_REMOTE_CACHE": s3_bucket, **moto_server.env}
    ws, a = commit_a(tmp_path)
    root = ws.root
    first = ws.run("build", env=ws.env(**env), check=0)
    assert "continuing with the local cache only" not in first.stderr + first.stdout  # the record was shared

    clone = WS(tmp_path / "clone", tmp_path / "cache2")
    subprocess.run(["git", "clone", "-q", str(root), str(clone.root)], check=True, env={**os.environ, **GIT_ENV})
    assert not (clone.root / "data").exists()
    proc = clone.run("build", "--json", "--at", a, env=clone.env(**env), check=0)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert executed([e for e in lines if e.get("event") == "finished"]) == []
    assert at_out(clone, a) == "HELLO\ni1\n"

    fs = moto_server.fs()
    for path in fs.find(s3_bucket.removeprefix("s3://") + "/ac"):
        if not path.endswith(record_key(a)):
            fs.rm(path)
    shutil.rmtree(clone.cache)
    shutil.rmtree(clone.root / "buildml-out")
    proc = clone.run("build", "--json", "--at", a, "//:prep", env=clone.env(**env), check=0)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert executed([e for e in lines if e.get("event") == "finished"]) == ["//:prep"]
    assert at_out(clone, a) == "HELLO\ni1\n"


def test_without_a_record_only_the_targets_needing_the_file_fail(tmp_path):
    """A clone with an empty cache: the target needing data/ fails with the message naming the file and how to pin
    it (exit 2, no traceback); a target that does not need it builds at REV."""
    ws, a, _ = data_repo(tmp_path)
    clone = WS(tmp_path / "clone", tmp_path / "cache2")
    subprocess.run(["git", "clone", "-q", str(ws.root), str(clone.root)], check=True, env={**os.environ, **GIT_ENV})
    proc = clone.run("build", "--at", a, check=2)
    assert f"--at {a[:10]} sees only committed files, and 'data/raw.txt' is not in git" in proc.stderr
    assert "no build of that commit in this cache recorded it" in proc.stderr and "dvc add data/raw.txt" in proc.stderr
    assert "BUILD.yaml:" in proc.stderr and "Traceback" not in proc.stderr
    clone.run("build", "--at", a, "//:other", check=0)
    assert (clone.root / "buildml-out" / f"@{short(clone.root, a)}" / "out/notes.txt").read_text() == "notes\n"


def test_lost_bytes_and_a_poisoned_record_are_clear_errors(tmp_path):
    """A record whose blob is gone says so; a record naming a path through a committed symlink writes nothing
    outside the checkout and is refused."""
    ws, a, _ = data_repo(tmp_path)
    record = json.loads((ws.cache / "ac" / record_key(a)[:2] / record_key(a)).read_text())
    raw = record["outputs"]["data/raw.txt"]["digest"]
    (ws.cache / "cas" / raw[:2] / raw).unlink()
    for entry in (ws.cache / "ac").glob("*/*"):
        if entry.name != record_key(a):
            entry.unlink()
    proc = ws.run("build", "--at", a, "//:prep", check=2)
    assert f"a build of {a[:10]} recorded 'data/raw.txt'" in proc.stderr
    assert "neither the local nor the remote cache" in proc.stderr and "Traceback" not in proc.stderr

    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ws.root / "link")
    ws.write("BUILD.yaml", BUILD + "  leak:\n    command: cat link/x.txt > leak.txt\n    deps: [link/x.txt]\n"
             "    outs: [leak.txt]\n")
    rev = commit(ws.root, "C")
    key = record_key(rev)
    blob = record["outputs"]["data/imgs/a.txt"]["digest"]
    poisoned = {"key": key, "kind": "commit-record", "exit_code": 0, "outputs": {"link/x.txt": {"digest": blob,
                "size": 3, "exec": False}}}
    (ws.cache / "ac" / key[:2]).mkdir(exist_ok=True)
    (ws.cache / "ac" / key[:2] / key).write_text(json.dumps(poisoned))
    proc = ws.run("build", "--at", rev, "//:leak", check=None)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "link/x.txt" in proc.stderr and not (outside / "x.txt").exists()


def test_the_record_holds_only_what_git_lacks(tmp_path):
    """Committed files are never recorded (git has them); DVC-free, ignored and untracked inputs are."""
    ws, a, b = data_repo(tmp_path)
    record = json.loads((ws.cache / "ac" / record_key(b)[:2] / record_key(b)).read_text())
    assert sorted(record["outputs"]) == ["data/imgs/a.txt", "data/imgs/b.txt", "data/raw.txt"]
    assert record["provenance"]["git_commit"] == b
    ws.write("untracked.txt", "u\n")  # not ignored, not committed: a checkout of B lacks it too
    ws.write("BUILD.yaml", BUILD + "  u:\n    command: cat untracked.txt > u.out\n    deps: [untracked.txt]\n"
             "    outs: [u.out]\n")
    ws.run("build", "//:u", check=0)  # BUILD.yaml is dirty: the record is of HEAD (B), with what HEAD lacks
    record = json.loads((ws.cache / "ac" / record_key(b)[:2] / record_key(b)).read_text())
    assert "untracked.txt" in record["outputs"] and "BUILD.yaml" not in record["outputs"]
    assert subprocess.run([str(BIN / "buildml"), "cache", "verify"], cwd=ws.root, env=ws.env(),
                          capture_output=True).returncode == 0


def test_a_commit_after_a_certified_noop_is_recorded(tmp_path):
    """The no-op certificate watches HEAD where sources are recorded: the first build after a commit takes the full
    path, records the new commit's sources, and `--at` of it works; the next no-op is certified again."""
    from test_noop_certificate import build, settle_and_certify

    ws, _, _ = data_repo(tmp_path)
    settle_and_certify(ws)
    ws.write("README.md", "readme\n")
    c = commit(ws.root, "C")
    summary, _, certified = build(ws)
    assert certified is False and summary["executed"] == 0
    _, events = ws.build_json("--at", c)
    assert executed(events) == [] and at_out(ws, c) == "WORLD\ni2\nextra\n"
    settle_and_certify(ws)
