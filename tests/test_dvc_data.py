"""DVC-tracked data: real git repos, the real `dvc` CLI as the reference (`dvc add`, `dvc push`, `dvc repro`), the real
buildml CLI. Data named by a `.dvc` pointer or a `dvc.lock` out is fetched from the DVC cache or remote (a local
directory, moto S3), md5-verified and keyed like any source; `--at` uses what the revision pins."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, WS, executed
from test_history import commit, git, short

PREP = """\
import sys
rows = open("data/raw.csv").read().splitlines()
names = sorted(open(f"data/images/{n}").read().strip() for n in ("a.txt", "b.txt"))
open("out/clean.csv", "w").write("\\n".join(r.upper() for r in rows) + "\\n" + ",".join(names) + "\\n")
"""
DVC_YAML = """\
stages:
  prepare:
    cmd: mkdir -p out && python prep.py
    deps: [prep.py, data/raw.csv, data/images]
    outs: [out/clean.csv]
"""


def dvc(root, *args, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=root, capture_output=True, text=True,
                          env=env or {**os.environ, "DVC_NO_ANALYTICS": "1"}, timeout=120)
    if check:
        assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def new_dvc_ws(tmp_path, name: str) -> WS:
    """An empty git + DVC repo (no buildml.yaml) with its own buildml cache."""
    root = tmp_path / name
    root.mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    return WS(root, tmp_path / "cache")


@pytest.fixture
def repo(tmp_path) -> WS:
    """A git + DVC repo (no buildml.yaml): data/raw.csv and the directory data/images added with `dvc add`, pushed to
    a local DVC remote, committed."""
    root = tmp_path / "repo"
    root.mkdir()
    ws = WS(root, tmp_path / "cache")
    git(root, "init", "-q")
    (root / ".gitignore").write_text(".buildml/\nbuildml-out/\n/out/\n")
    dvc(root, "init", "-q")
    ws.write("data/raw.csv", "a,1\nb,2\n")
    ws.write("data/images/a.txt", "apple\n")
    ws.write("data/images/b.txt", "banana\n")
    ws.write("prep.py", PREP)
    ws.write("dvc.yaml", DVC_YAML)
    dvc(root, "add", "-q", "data/raw.csv", "data/images")
    dvc(root, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))
    dvc(root, "push", "-q")
    commit(root, "data pinned by dvc")
    return ws


def reference_output(ws: WS, tmp_path) -> bytes:
    """What `dvc repro` writes for the repo, in a copy of it."""
    copy = tmp_path / "dvc-copy"
    shutil.copytree(ws.root, copy, symlinks=True)
    dvc(copy, "repro", "-q")
    return (copy / "out/clean.csv").read_bytes()


def test_missing_data_comes_from_the_dvc_cache_then_the_remote(repo, tmp_path):
    """Data removed from the workspace is fetched from .dvc/cache (file and directory), md5-verified, and builds the
    same bytes as `dvc repro`; with .dvc/cache gone too it comes from the DVC remote; a file already there is kept."""
    ws = repo
    expected = reference_output(ws, tmp_path)
    assert not git(ws.root, "ls-files", "data/raw.csv")  # dvc add git-ignored it
    shutil.rmtree(ws.root / "data/images")
    (ws.root / "data/raw.csv").unlink()
    _, events = ws.build_json(check=0)
    assert executed(events) == ["//:prepare"]
    assert (ws.root / "out/clean.csv").read_bytes() == expected == b"A,1\nB,2\napple,banana\n"
    pointer = (ws.root / "data/raw.csv.dvc").read_text()
    assert md5(ws.root / "data/raw.csv") in pointer
    assert sorted(os.listdir(ws.root / "data/images")) == ["a.txt", "b.txt"]
    _, events = ws.build_json(check=0)
    assert executed(events) == []  # keyed on the content: the same bytes, nothing to do

    shutil.rmtree(ws.root / ".dvc/cache")
    (ws.root / "data/raw.csv").unlink()
    shutil.rmtree(ws.root / "data/images")
    shutil.rmtree(ws.root / "out")
    _, events = ws.build_json(check=0)
    assert executed(events) == []  # the same key: the output comes back from buildml's cache
    assert (ws.root / "out/clean.csv").read_bytes() == expected
    assert (ws.root / "data/raw.csv").read_text() == "a,1\nb,2\n"  # from the remote
    assert (ws.root / "data/images/b.txt").read_text() == "banana\n"
    (ws.root / "data/raw.csv").write_text("mine\n")  # a file that is there is never overwritten by a fetch
    shutil.rmtree(ws.root / "data/images")
    ws.run("build", check=0)
    assert (ws.root / "data/raw.csv").read_text() == "mine\n"


def test_a_corrupt_cache_object_is_a_clear_error(repo):
    """An object in .dvc/cache whose bytes are not its md5: one message naming the object and the pointer, exit 1,
    nothing placed in the workspace."""
    ws = repo
    (ws.root / "data/raw.csv").unlink()
    digest = md5_in_pointer(ws.root / "data/raw.csv.dvc")
    blob = ws.root / ".dvc/cache/files/md5" / digest[:2] / digest[2:]
    blob.chmod(0o644)
    blob.write_text("a,1\nb,666\n")
    proc = ws.run("build", check=1)
    assert f"the DVC object {blob} has md5 {md5(blob)}, not {digest}" in proc.stderr
    assert "data/raw.csv (pinned by data/raw.csv.dvc)" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (ws.root / "data/raw.csv").exists()
    assert not [p for p in (ws.root / "data").iterdir() if p.name.startswith(".buildml-dvc-")]


def test_a_modified_file_builds_as_it_is_with_one_warning(repo):
    """A present file that differs from its pointer (`dvc status`: modified) is built with its bytes, and named once."""
    ws = repo
    status = dvc(ws.root, "status", "data/raw.csv.dvc").stdout
    assert "modified" not in status
    ws.write("data/raw.csv", "a,1\nb,3\n")  # same size as the pinned bytes: only the md5 tells
    assert "modified" in dvc(ws.root, "status", "data/raw.csv.dvc").stdout
    proc = ws.run("build", check=0)
    warning = "data/raw.csv differs from data/raw.csv.dvc (DVC would call it modified)"
    assert proc.stderr.count(warning) + proc.stdout.count(warning) == 1
    assert (ws.root / "out/clean.csv").read_text().startswith("A,1\nB,3\n")
    assert (ws.root / "data/raw.csv").read_text() == "a,1\nb,3\n"  # never overwritten
    dvc(ws.root, "add", "-q", "data/raw.csv")
    proc = ws.run("build", check=0)
    assert "differs from" not in proc.stderr + proc.stdout


def md5_in_pointer(path) -> str:
    import yaml

    return yaml.safe_load(Path(path).read_text())["outs"][0]["md5"]


def test_s3_remote_with_endpointurl_and_keys_in_config_local(tmp_path, moto_server):
    """A DVC remote on (moto) S3, pushed by `dvc push` through dvc-s3: buildml reads endpointurl from .dvc/config and
    the keys from .dvc/config.local, with no AWS variables in its environment."""
    ws = new_dvc_ws(tmp_path, "s3repo")
    root = ws.root
    ws.write("data/raw.csv", "x,9\n")
    ws.write("dvc.yaml", "stages:\n  copy:\n    cmd: cp data/raw.csv copied.csv\n    deps: [data/raw.csv]\n"
                         "    outs: [copied.csv]\n")
    dvc(root, "add", "-q", "data/raw.csv")
    bucket = moto_server.bucket("dvc")
    dvc(root, "remote", "add", "-d", "s3store", bucket)
    dvc(root, "remote", "modify", "s3store", "endpointurl", moto_server.endpoint)
    dvc(root, "remote", "modify", "--local", "s3store", "access_key_id", "testing")
    dvc(root, "remote", "modify", "--local", "s3store", "secret_access_key", "testing")
    dvc(root, "push", "-q")
    digest = md5_in_pointer(root / "data/raw.csv.dvc")
    assert moto_server.fs().exists(f"{bucket[5:]}/files/md5/{digest[:2]}/{digest[2:]}")
    commit(root, "s3")
    shutil.rmtree(root / ".dvc/cache")
    (root / "data/raw.csv").unlink()
    env = {k: v for k, v in ws.env().items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    proc = ws.run("build", env=env, check=0)
    assert (root / "copied.csv").read_text() == "x,9\n", proc.stderr


def test_dvc_lock_outs_of_stages_buildml_does_not_run(tmp_path):
    """A directory with a BUILD.yaml is a buildml package, so its dvc.yaml stages are not targets: their outs, as
    `dvc repro` recorded them in dvc.lock, are data fetched from the DVC cache like a .dvc pointer's."""
    ws = new_dvc_ws(tmp_path, "lockrepo")
    root = ws.root
    ws.write("feat/dvc.yaml", "stages:\n  make:\n    cmd: mkdir -p gen && echo made-by-dvc > gen/features.txt\n"
                              "    outs: [gen/features.txt]\n")
    dvc(root, "repro", "-q", "feat/dvc.yaml")
    made = (root / "feat/gen/features.txt").read_bytes()
    ws.write("feat/BUILD.yaml", "targets:\n  use:\n    command: cat gen/features.txt > used.txt\n"
                                "    deps: [gen/features.txt]\n    outs: [used.txt]\n")
    (root / "feat/gen/features.txt").unlink()
    _, events = ws.build_json(check=0)
    assert executed(events) == ["//feat:use"]
    assert (root / "feat/used.txt").read_bytes() == made == b"made-by-dvc\n"


def test_dvc2_pointer_with_dos2unix_md5(tmp_path):
    """A DVC 2 pointer (no `hash:` field) names a CRLF text file by its dos2unix md5 (dvc_data's md5-dos2unix is the
    reference), its object in the DVC 2 cache layout (.dvc/cache/ab/cdef...)."""
    from dvc_data.hashfile.hash import fobj_md5

    ws = new_dvc_ws(tmp_path, "v2")
    root = ws.root
    data = b"line one\r\nline two\r\n"
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    with open(blob, "rb") as f:
        legacy = fobj_md5(f, name="md5-dos2unix")
    assert legacy == hashlib.md5(data.replace(b"\r\n", b"\n")).hexdigest() != hashlib.md5(data).hexdigest()
    obj = root / ".dvc/cache" / legacy[:2] / legacy[2:]
    obj.parent.mkdir(parents=True)
    obj.write_bytes(data)
    ws.write("raw.txt.dvc", f"outs:\n- md5: {legacy}\n  size: {len(data)}\n  path: raw.txt\n")
    ws.write("BUILD.yaml", "targets:\n  wc:\n    command: wc -l < raw.txt > n.txt\n    deps: [raw.txt]\n"
                           "    outs: [n.txt]\n")
    ws.run("build", check=0)
    assert (root / "raw.txt").read_bytes() == data  # the bytes as stored, CRLF kept
    assert (root / "n.txt").read_text().strip() == "2"
    proc = ws.run("build", check=0)
    assert "differs from" not in proc.stderr + proc.stdout  # the present file matches by dos2unix md5


@pytest.mark.parametrize("pointer, field, problem", [
    ("outs:\n- md5: abc123\n  path: raw.txt\n", "outs.md5", "md5 'abc123' of 'raw.txt' is not 32 hex"),
    ("outs:\n- md5: " + "a" * 32 + "\n  path: ../../etc/passwd\n", "outs.path", "must lie inside the workspace"),
    ("outs:\n- md5: " + "a" * 32 + "\n  path: /etc/passwd\n", "outs.path", "is not a relative path"),
    ("outs:\n- md5: " + "a" * 32 + "\n  path: raw.txt\n  hash: sha256\n", "outs.hash", "hash 'sha256'"),
    ("outs: nothing\n", "outs", "a .dvc file is a mapping with an 'outs:' list"),
])
def test_untrusted_pointers_are_refused_with_file_and_field(ws, pointer, field, problem):
    """What a pointer says is checked before it becomes a path: one message with the file, line and field, exit 2."""
    (ws.root / ".dvc").mkdir()  # pointers are read in a DVC repo only
    ws.write("raw.txt.dvc", pointer)
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: cat raw.txt > o.txt\n    deps: [raw.txt]\n    outs: [o.txt]\n")
    proc = ws.run("build", check=2)
    assert "raw.txt.dvc:" in proc.stderr and f"{field}: " in proc.stderr and problem in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (ws.root.parent / "etc").exists()


def test_at_uses_the_revision_pins_and_the_dvc_remote(repo, tmp_path):
    """Data changed after REV: `--at REV` restores REV's outputs byte for byte from buildml's cache; with buildml's
    cache, .dvc/cache and the workspace copy all gone, it rebuilds them from the DVC remote's data of REV."""
    ws = repo
    ws.run("build", check=0)
    at_a = (ws.root / "out/clean.csv").read_bytes()
    rev = git(ws.root, "rev-parse", "HEAD")
    ws.write("data/raw.csv", "c,3\n")
    dvc(ws.root, "add", "-q", "data/raw.csv")
    dvc(ws.root, "push", "-q")
    commit(ws.root, "new data")
    ws.run("build", check=0)
    assert (ws.root / "out/clean.csv").read_bytes() != at_a
    out = ws.root / "buildml-out" / f"@{short(ws.root, rev)}" / "out/clean.csv"
    _, events = ws.build_json("--at", rev, check=0)
    assert executed(events) == [] and out.read_bytes() == at_a

    shutil.rmtree(ws.cache)
    shutil.rmtree(ws.root / ".dvc/cache")
    shutil.rmtree(ws.root / "buildml-out")
    shutil.rmtree(ws.root / ".buildml")
    (ws.root / "data/raw.csv").unlink()
    _, events = ws.build_json("--at", rev, check=0)
    assert executed(events) == ["//:prepare"] and out.read_bytes() == at_a
    assert not (ws.root / "data/raw.csv").exists()  # fetched into the checkout, not the work tree
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"buildml-at-{rev}-*")]


def test_at_without_a_pin_says_how_to_pin(tmp_path):
    """A git-ignored input nothing pins at REV: `--at` says it sees only committed files, names the file, and how to
    pin it; after `dvc add` + commit (+ push) the next commit builds."""
    ws = new_dvc_ws(tmp_path, "nopin")
    root = ws.root
    ws.write(".gitignore", "raw.txt\n.buildml/\nbuildml-out/\n")
    ws.write("raw.txt", "data\n")
    ws.write("dvc.yaml", "stages:\n  s:\n    cmd: cp raw.txt o.txt\n    deps: [raw.txt]\n    outs: [o.txt]\n")
    rev = commit(root, "unpinned")
    ws.run("build", check=0)  # the workspace has the file: this build records it for --at (test_at_sources.py)
    shutil.rmtree(ws.cache)  # a cache without that record: only committed files and pins count
    proc = ws.run("build", "--at", rev, check=2)
    assert f"--at {rev[:10]} sees only committed files, and 'raw.txt' is not in git at that commit" in proc.stderr
    assert "dvc add raw.txt" in proc.stderr and "commit raw.txt.dvc" in proc.stderr and "buildml lock" in proc.stderr
    assert "dvc.yaml:" in proc.stderr and "Traceback" not in proc.stderr
    ws.write(".gitignore", ".buildml/\nbuildml-out/\n")
    dvc(root, "add", "-q", "raw.txt")
    pinned = commit(root, "pinned")
    os.unlink(root / "raw.txt")
    ws.run("build", "--at", pinned, check=0)  # from .dvc/cache of the work tree
    assert (root / "buildml-out" / f"@{short(root, pinned)}" / "o.txt").read_text() == "data\n"


def test_pointer_helpers_read_dvc_config_as_dvc_does(tmp_path):
    """`dvc config` writes .dvc/config; buildml reads the same cache dir and default remote (config.local wins)."""
    from buildml.load.dvc_pointers import read_config

    root = tmp_path / "cfg"
    root.mkdir()
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "cache", "dir", "../shared-cache")
    dvc(root, "remote", "add", "-d", "one", "rel/remote")
    dvc(root, "remote", "add", "two", "s3://bucket/path")
    dvc(root, "remote", "modify", "two", "endpointurl", "http://127.0.0.1:9")
    dvc(root, "remote", "default", "--local", "two")
    config = read_config(root)
    assert str(config.cache_dir) == dvc(root, "cache", "dir").stdout.strip() == str(tmp_path / "shared-cache")
    assert config.remote.name == "two" and config.remote.url == "s3://bucket/path"
    assert config.remote.options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    os.unlink(root / ".dvc/config.local")
    config = read_config(root)
    assert config.remote.name == "one" and config.remote.url == str(root / "rel/remote")  # as `dvc remote list` shows
    assert config.remote.url in dvc(root, "remote", "list").stdout
