"""DVC pipelines run as written: buildml against real `dvc repro` on the same tree (tests/dvc_repo uses every field)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import BIN, WS, executed

REPO_FIXTURE = Path(__file__).resolve().parent / "dvc_repo"
DVC_ONLY = {".dvc", ".git", ".buildml", "dvc.lock", ".gitignore", ".dvcignore"}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=root, check=True,
                   capture_output=True)


def dvc_repo(root: Path, source: Path | None = None, files: dict | None = None) -> Path:
    """A git repo holding a DVC project: a copy of source, or the given files."""
    if source:
        shutil.copytree(source, root)
    else:
        root.mkdir(parents=True)
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def dvc(root: Path, *args: str) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, f"dvc {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc_ran(output: str) -> set[str]:
    """The stages `dvc repro` ran, as buildml labels."""
    return {f"//:{name}" for name in re.findall(r"Running stage '([^']+)'", output)}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root that both tools make or read (not their own bookkeeping)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in DVC_ONLY]
        for name in filenames:
            if name not in DVC_ONLY:
                path = Path(dirpath, name)
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


@pytest.fixture
def pair(tmp_path):
    """The fixture repo twice: one for buildml, one for dvc."""
    ours = WS(dvc_repo(tmp_path / "ours", REPO_FIXTURE), tmp_path / "cache")
    theirs = dvc_repo(tmp_path / "theirs", REPO_FIXTURE)
    return ours, theirs


def edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new))


def test_dvc_repo_builds_as_dvc_repro_does(pair):
    """No BUILD.yaml, no buildml.yaml: the same output bytes as dvc repro; a no-op; a templated param edit reruns
    exactly the stages DVC reruns."""
    ours, theirs = pair
    summary, events = ours.build_json()
    assert summary["failed"] == 0 and summary["executed"] == 14, events
    ran = dvc_ran(dvc(theirs, "repro"))
    assert ran == set(executed(events))
    assert tree(ours.root) == tree(theirs)
    assert not (ours.root / "dvc.lock").exists()  # buildml never writes DVC's lock file

    summary, _ = ours.build_json()
    assert summary["executed"] == 0 and summary["up_to_date"] == 14

    # train.epochs reaches the command only through ${train} (dict unpacked into --lr .. --epochs ..)
    for root in (ours.root, theirs):
        edit(root, "params.yaml", "epochs: 2", "epochs: 7")
    summary, events = ours.build_json()
    ran = dvc_ran(dvc(theirs, "repro"))
    assert set(executed(events)) == ran and "//:train@small" in ran and "//:prepare" not in ran
    assert tree(ours.root) == tree(theirs)
    assert "epochs=7" in (ours.root / "out/model-small.txt").read_text()

    # a param read from another params file (a whole-file entry) and a vars value
    for root in (ours.root, theirs):
        edit(root, "hp.toml", "momentum = 0.9", "momentum = 0.5")
        edit(root, "extra.yaml", "hello", "hi")
    summary, events = ours.build_json()
    ran = dvc_ran(dvc(theirs, "repro"))
    assert set(executed(events)) == ran == {"//:configs", "//:steps"}
    assert tree(ours.root) == tree(theirs)


def test_param_override_reaches_the_command(pair):
    """--param changes a value the script only sees on its command line (through ${})."""
    ours, _ = pair
    ours.run("build", "--param", "train.epochs=5", "//:train@small", check=0)
    assert "epochs=5" in (ours.root / "out/model-small.txt").read_text()
    status = ours.run("status", check=0).stdout
    assert "train@small" in status


ALWAYS_FROZEN_PERSIST = {
    "params.yaml": "n: 1\n",
    "dvc.yaml": """\
        stages:
          tick:
            cmd: mkdir -p out && echo tick >> out/log.txt
            always_changed: true
            outs:
              - out/log.txt:
                  persist: true
          copy:
            cmd: cp in.txt out/copy.txt
            deps: [in.txt]
            outs:
              - out/copy.txt:
                  cache: false
          pinned:
            cmd: mkdir -p out && cat in.txt > out/pinned.txt
            deps: [in.txt]
            outs: [out/pinned.txt]
        """,
    "in.txt": "one\n",
}


def test_always_changed_persist_frozen_and_cache_false_like_dvc(tmp_path):
    ours = WS(dvc_repo(tmp_path / "ours", files=ALWAYS_FROZEN_PERSIST), tmp_path / "cache")
    theirs = dvc_repo(tmp_path / "theirs", files=ALWAYS_FROZEN_PERSIST)
    for _ in range(2):  # always_changed runs every time; persist keeps the file so it appends
        summary, events = ours.build_json()
        assert summary["failed"] == 0, events
        dvc(theirs, "repro")
    assert (ours.root / "out/log.txt").read_text() == "tick\ntick\n"
    assert tree(ours.root) == tree(theirs)
    assert executed(events) == ["//:tick"]

    # frozen: a changed dep does not rerun it (DVC: "frozen stage is not checked"); the others follow the dep
    for root in (ours.root, theirs):
        edit(root, "dvc.yaml", "  pinned:\n", "  pinned:\n    frozen: true\n")
        (root / "in.txt").write_text("two\n")
    summary, events = ours.build_json()
    ran = dvc_ran(dvc(theirs, "repro"))
    assert set(executed(events)) == ran == {"//:tick", "//:copy"}
    assert (ours.root / "out/pinned.txt").read_text() == "one\n"
    assert tree(ours.root) == tree(theirs)

    # cache: false output: still an output (a deleted one is rebuilt), kept in place
    (ours.root / "out/copy.txt").unlink()
    summary, events = ours.build_json("//:copy")
    assert (ours.root / "out/copy.txt").read_text() == "two\n"


@pytest.mark.parametrize("body, where, words", [
    ("stages:\n  a:\n    cmd: echo\n    outz: [x]\n", "dvc.yaml:4", "outz"),
    ("stages:\n  a:\n    cmd: echo\n    outs:\n      - x.txt:\n          remote: other\n", "dvc.yaml:6", "remote"),
    ("stages:\n  a:\n    cmd: echo ${nope}\n", "dvc.yaml:3", "nope"),
    ("stages:\n  a:\n    foreach: ${missing}\n    do:\n      cmd: echo\n", "dvc.yaml:3", "missing"),
    ("vars:\n  - absent.yaml\nstages:\n  a:\n    cmd: echo\n", "dvc.yaml:2", "absent.yaml"),
])
def test_what_buildml_cannot_honour_is_an_error_with_file_and_line(tmp_path, body, where, words):
    ws = WS(dvc_repo(tmp_path / "repo", files={"dvc.yaml": body}), tmp_path / "cache")
    proc = ws.run("build", check=2)
    assert where in proc.stderr and words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


LOCAL_ONLY = {
    "dvc.yaml": """\
        stages:
          shared:
            cmd: mkdir -p out && echo shared > out/shared.txt
            outs: [out/shared.txt]
          mine:
            cmd: mkdir -p out && echo mine > out/mine.txt
            outs:
              - out/mine.txt:
                  push: false
          report:
            cmd: mkdir -p out && echo report > out/report.json
            metrics:
              - out/report.json:
                  cache: false
        """,
}


def test_cache_false_and_push_false_outputs_stay_local(tmp_path, moto_server, s3_bucket):
    """They are never uploaded: another clone reruns them unless the file in place has the recorded bytes."""
    def clone(name):
        ws = WS(dvc_repo(tmp_path / name, files=LOCAL_ONLY), tmp_path / f"cache-{name}")
        base = ws.env
        ws.env = lambda **extra: base(BUILDML_REMOTE_CACHE=s3_bucket, **moto_server.env, **extra)
        return ws

    a = clone("a")
    summary, _ = a.build_json()
    assert summary["executed"] == 3

    b = clone("b")
    summary, events = b.build_json()
    assert set(executed(events)) == {"//:mine", "//:report"}
    assert summary["cached"] == 1

    c = clone("c")
    (c.root / "out").mkdir()
    shutil.copy(a.root / "out/mine.txt", c.root / "out/mine.txt")
    shutil.copy(a.root / "out/report.json", c.root / "out/report.json")
    summary, events = c.build_json()
    assert executed(events) == [] and summary["cached"] == 3
