"""`buildml init`, `graph --format svg|png` through real Graphviz, and shell completion of target labels."""

from __future__ import annotations

import subprocess

from conftest import BIN


def git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def test_init_in_an_empty_git_repo_then_build_succeeds(ws):
    """`buildml init` in a fresh git repo writes a workspace whose example target builds; state and outputs are ignored."""
    (ws.root / "buildml.yaml").unlink()
    git(ws.root, "init", "-q")
    proc = ws.run("init", check=0)
    assert proc.stdout.splitlines()[:3] == ["wrote buildml.yaml", "wrote BUILD.yaml", "wrote .gitignore"]
    summary, finished = ws.build_json("//...")
    assert (summary["executed"], summary["failed"]) == (1, 0)
    assert [e["target"] for e in finished] == ["//:hello"]
    assert ws.read("out/hello.txt") == "hello from buildml\n"
    untracked = git(ws.root, "status", "--porcelain", "--untracked-files=all").split()
    assert sorted(untracked[1::2]) == [".gitignore", "BUILD.yaml", "buildml.yaml"]


def test_init_refuses_to_overwrite_and_keeps_gitignore(ws):
    """init never overwrites: an existing BUILD.yaml is an exit-2 error; an existing .gitignore is appended to."""
    ws.write("BUILD.yaml", "targets: {}\n")
    (ws.root / "buildml.yaml").unlink()
    proc = ws.run("init", check=2)
    assert "BUILD.yaml already exists" in proc.stderr and "never overwrites" in proc.stderr
    assert ws.read("BUILD.yaml") == "targets: {}\n" and not (ws.root / "buildml.yaml").exists()
    (ws.root / "BUILD.yaml").unlink()
    ws.write(".gitignore", "*.pyc")
    ws.run("init", check=0)
    assert ws.read(".gitignore").splitlines()[0] == "*.pyc"
    assert {".buildml/", "/out/"} <= set(ws.read(".gitignore").splitlines())


def test_graph_png_and_svg_of_the_quickstart(quickstart):
    """graph --format png -o FILE writes a PNG of the example's DAG; svg goes to stdout with every target."""
    proc = quickstart.run("graph", "--format", "png", "-o", "graph.png", check=0)
    assert "wrote graph.png" in proc.stderr
    data = (quickstart.root / "graph.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    svg = quickstart.run("graph", "--format", "svg", check=0).stdout
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    for label in ("//:prepare", "//:train", "//:evaluate"):
        assert label in svg


def test_graph_image_without_graphviz_gives_the_install_hint(quickstart):
    """Without Graphviz on PATH, --format svg fails with a clear message naming `apt-get install graphviz`."""
    proc = quickstart.run("graph", "--format", "svg", check=1, env=quickstart.env(PATH=str(BIN)))
    assert "needs Graphviz's `dot` command, which is not on PATH" in proc.stderr
    assert "apt-get install graphviz" in proc.stderr and "Traceback" not in proc.stderr


def test_shell_completion_lists_target_labels(quickstart):
    """click's completion protocol answers `buildml build //:t<TAB>` with the matching labels."""
    env = quickstart.env(_BUILDML_COMPLETE="bash_complete", COMP_WORDS="buildml build //:t", COMP_CWORD="2")
    proc = subprocess.run([str(BIN / "buildml")], cwd=quickstart.root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["plain,//:train"]
    env["COMP_WORDS"] = "buildml explain "
    proc = subprocess.run([str(BIN / "buildml")], cwd=quickstart.root, env=env, capture_output=True, text=True)
    assert "plain,//..." in proc.stdout.splitlines() and "plain,//:evaluate" in proc.stdout.splitlines()
    source = subprocess.run([str(BIN / "buildml")], env=quickstart.env(_BUILDML_COMPLETE="bash_source"),
                            capture_output=True, text=True).stdout
    assert "_buildml_completion" in source
