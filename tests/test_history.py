"""`--at REV`: past commits built from real git repos through the real CLI, with warm, empty and remote caches."""

import os
import shutil
import signal
import subprocess
import time

from conftest import BIN, default_sigint, executed

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(root, *args) -> str:
    """Run git in root; return its stdout."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def commit(root, message: str) -> str:
    """Commit everything in root; return the full sha."""
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


def init_repo(root) -> None:
    git(root, "init", "-q")
    (root / ".gitignore").write_text(".buildml/\nbuildml-out/\ndata/\nmodels/\nmetrics.json\n")  # outputs are not committed


def short(root, sha: str) -> str:
    return git(root, "rev-parse", "--short", sha)


def leftovers(tmp) -> list:
    """buildml-at-* checkouts left in a temp directory."""
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("buildml-at-"))


def test_done_when_scenario(quickstart):
    """Commit A trains, commit B changes a param; --at A gives A's model with 0 executions, and again after every cache is gone."""
    ws = quickstart
    init_repo(ws.root)
    a = commit(ws.root, "A")
    ws.build_json("//...")
    model_a = (ws.root / "models/model.pkl").read_bytes()
    ws.write("params.yaml", ws.read("params.yaml").replace("C: 0.5", "C: 0.05"))
    b = commit(ws.root, "B")
    summary, events = ws.build_json("//...")
    assert "//:train" in executed(events)
    model_b = (ws.root / "models/model.pkl").read_bytes()
    assert model_b != model_a

    proc = ws.run("build", "--at", a, "//...", check=0)
    out_dir = ws.root / "buildml-out" / f"@{short(ws.root, a)}"
    assert f"outputs of {a} are in {out_dir}" in proc.stdout
    assert "0 executed" in proc.stdout
    assert (out_dir / "models/model.pkl").read_bytes() == model_a
    assert (ws.root / "models/model.pkl").read_bytes() == model_b  # the work tree's outputs are untouched

    shutil.rmtree(ws.cache)
    shutil.rmtree(out_dir)
    summary, events = ws.build_json("--at", a, "//...")
    assert summary["executed"] >= 3 and summary["cached"] == 0
    assert (out_dir / "models/model.pkl").read_bytes() == model_a
    assert git(ws.root, "rev-parse", "HEAD") == b and git(ws.root, "status", "--porcelain") == ""


def test_at_records_commit_and_serves_status_and_explain(quickstart):
    """Manifests built --at name that commit; status and explain --at look at that commit's tree."""
    ws = quickstart
    init_repo(ws.root)
    a = commit(ws.root, "A")
    ws.write("params.yaml", ws.read("params.yaml").replace("C: 0.5", "C: 0.07"))
    commit(ws.root, "B")
    assert "stale" in ws.run("status", "--at", a, check=0).stdout
    ws.run("build", "--at", a, "//:train", check=0)
    assert "all 2 targets up to date" in ws.run("status", "--at", a, "//:train", check=0).stdout  # state kept per commit
    assert "stale" in ws.run("status", "//:train", check=0).stdout
    at_a = ws.run("explain", "--at", a, ":train", "--json", check=0).stdout
    assert '"train.C": 0.5' in at_a and '"status": "up-to-date"' in at_a
    assert '"status": "stale"' in ws.run("explain", ":train", "--json", check=0).stdout
    info = ws.run("show", "--at", a, "//:train", "--json", check=0).stdout
    assert f'"git_commit": "{a}"' in info and '"git_dirty": false' in info


def test_at_errors_are_one_clear_message(ws, tmp_path):
    """Not a git repo, an unknown revision and a revision without buildml.yaml each give one message, exit 2."""
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: echo hi > t.txt\n    outs: [t.txt]\n")
    proc = ws.run("build", "--at", "HEAD", check=2)
    assert "is not inside a git repository" in proc.stderr and "Traceback" not in proc.stderr

    repo = tmp_path / "repo"
    repo.mkdir()
    init_repo(repo)
    (repo / "README").write_text("before buildml\n")
    first = commit(repo, "no workspace yet")
    shutil.copy(ws.root / "BUILD.yaml", repo / "BUILD.yaml")
    (repo / "buildml.yaml").write_text("")
    commit(repo, "workspace")
    proc = ws.run("build", "--at", "no-such-branch", cwd=repo, check=2)
    assert "unknown revision 'no-such-branch'" in proc.stderr
    proc = ws.run("build", "--at", first, cwd=repo, check=2)
    assert f"revision {first} ({short(repo, first)}) has no buildml.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    ws.run("build", "--at", "HEAD", cwd=repo, check=0)


def test_checkout_removed_after_success_and_failure(ws, tmp_path):
    """The temporary checkout and its worktree registration are gone after a passing and a failing --at build."""
    init_repo(ws.root)
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: echo ok > t.txt\n    outs: [t.txt]\n")
    good = commit(ws.root, "good")
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: exit 3\n    outs: [t.txt]\n")
    bad = commit(ws.root, "bad")
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = ws.env(TMPDIR=str(tmp))
    ws.run("build", "--at", good, env=env, check=0)
    assert (ws.root / "buildml-out" / f"@{short(ws.root, good)}" / "t.txt").read_text() == "ok\n"
    ws.run("build", "--at", bad, env=env, check=1)
    assert leftovers(tmp) == []
    assert len(git(ws.root, "worktree", "list").splitlines()) == 1


def test_checkout_removed_after_ctrl_c_and_sigterm(ws, tmp_path):
    """SIGINT and SIGTERM in the middle of an --at build stop it (exit 130) and remove the checkout."""
    init_repo(ws.root)
    mark = tmp_path / "started"
    ws.write("BUILD.yaml", f"targets:\n  slow:\n    command: touch {mark} && sleep 60\n    outs: [x]\n")
    sha = commit(ws.root, "slow")
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    for sig in (signal.SIGINT, signal.SIGTERM):
        mark.unlink(missing_ok=True)
        proc = subprocess.Popen([str(BIN / "buildml"), "build", "--at", sha], cwd=ws.root, env=ws.env(TMPDIR=str(tmp)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        deadline = time.monotonic() + 60
        while not mark.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert leftovers(tmp) != []  # the checkout exists while the build runs
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert leftovers(tmp) == []
        assert len(git(ws.root, "worktree", "list").splitlines()) == 1


def test_at_with_empty_local_store_and_warm_remote(quickstart, moto_server, s3_bucket):
    """After deleting the local store, --at A comes back from the remote cache: A's model bytes, 0 executed."""
    ws = quickstart
    env = ws.env(BUILDML_REMOTE_CACHE=s3_bucket, **moto_server.env)
    init_repo(ws.root)
    a = commit(ws.root, "A")
    ws.run("build", env=env, check=0)
    model_a = (ws.root / "models/model.pkl").read_bytes()
    ws.write("params.yaml", ws.read("params.yaml").replace("C: 0.5", "C: 0.05"))
    commit(ws.root, "B")
    ws.run("build", env=env, check=0)
    shutil.rmtree(ws.cache)
    proc = ws.run("build", "--json", "--at", a, "//...", env=env, check=0)
    summary = [line for line in proc.stdout.splitlines() if '"event": "summary"' in line][0]
    assert '"executed": 0' in summary and '"failed": 0' in summary
    out_dir = ws.root / "buildml-out" / f"@{short(ws.root, a)}"
    assert (out_dir / "models/model.pkl").read_bytes() == model_a


def test_at_from_a_workspace_in_a_subdirectory(tmp_path):
    """A workspace below the repository root: --at finds it in the checkout and writes buildml-out/ beside it."""
    repo = tmp_path / "repo"
    (repo / "ml" / "pkg").mkdir(parents=True)
    init_repo(repo)
    (repo / "ml" / "buildml.yaml").write_text("")
    (repo / "ml" / "pkg" / "BUILD.yaml").write_text("targets:\n  t:\n    command: echo v1 > t.txt\n    outs: [t.txt]\n")
    first = commit(repo, "v1")
    (repo / "ml" / "pkg" / "BUILD.yaml").write_text("targets:\n  t:\n    command: echo v2 > t.txt\n    outs: [t.txt]\n")
    commit(repo, "v2")
    env = {**os.environ, "BUILDML_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([str(BIN / "buildml"), "build", "--at", "HEAD~1", ":t"], cwd=repo / "ml" / "pkg", env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = repo / "ml" / "buildml-out" / f"@{short(repo, first)}" / "pkg" / "t.txt"
    assert out.read_text() == "v1\n" and not (repo / "ml" / "pkg" / "t.txt").exists()


def test_clean_all_removes_the_at_trees_buildml_wrote(ws):
    """`clean --all` cleans buildml-out/@<sha>/ as it cleans the work tree: the outputs --at wrote go (empty
    directories too), a user's file there stays and is listed, and what the --at build moved aside is kept."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo hi > out.txt; mkdir -p d; echo x > d/y.txt\n"
                           "    outs: [out.txt, d/]\n")
    init_repo(ws.root)
    sha = commit(ws.root, "A")
    tree = ws.root / "buildml-out" / f"@{short(ws.root, sha)}"
    ws.write(f"{tree.relative_to(ws.root)}/out.txt", "mine\n")  # a user's file where --at will write: moved aside
    ws.run("build", "--at", "HEAD", check=0)
    assert (tree / "out.txt").read_text() == "hi\n" and (tree / "d/y.txt").read_text() == "x\n"
    (tree / "notes.txt").write_text("the user's\n")

    proc = ws.run("clean", "--all", check=0)
    assert "removed 2 output files" in proc.stdout
    rel = tree.relative_to(ws.root).as_posix()
    assert f"{rel}/notes.txt: not written by buildml" in proc.stdout
    assert sorted(p.name for p in tree.rglob("*")) == ["notes.txt"]  # out.txt, d/y.txt and d/ are gone
    moved = [p for p in (ws.root / ".buildml").rglob("*") if p.is_file() and p.read_text() == "mine\n"]
    assert len(moved) == 1 and "displaced" in moved[0].parts
    _, events = ws.build_json("--at", "HEAD")
    assert [e["status"] for e in events] == ["cached"] and (tree / "out.txt").read_text() == "hi\n"
