"""CLI conventions a CI or a script relies on (issue 19): exit codes, JSON lines, and answers that name the change."""

import json
import shutil
from pathlib import Path

CHECKED = """\
targets:
  raw:
    kind: dataset
    command: python make.py
    deps: [make.py]
    outs: [data/raw.csv]
    checks:
      - {path: data/raw.csv, min_rows: 2, columns: [label]}
  gate:
    kind: test
    command: python -c "print('ok')"
    deps: [":raw"]
"""
MAKE = 'open("data/raw.csv", "w").write("label\\n1\\n2\\n{}\\n")\n'


def test_status_exit_code_and_json_lines(ws):
    """status --exit-code exits 1 while anything is stale and 0 once built (as git diff --exit-code); without it
    status exits 0 either way; --json prints one line, the summary object."""
    ws.write("make.py", MAKE.format(3))
    ws.write("BUILD.yaml", CHECKED)
    assert ws.run("status", check=0).returncode == 0
    proc = ws.run("status", "--exit-code", check=1)
    assert "//:raw: stale" in proc.stdout
    lines = ws.run("status", "--json", "--exit-code", check=1).stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["event"] == "summary"
    assert [s["target"] for s in json.loads(lines[0])["stale"]] == ["//:raw"]
    ws.run("build", check=0)
    assert "all" in ws.run("status", "--exit-code", check=0).stdout


def test_status_names_only_what_changed(ws):
    """An edited input is the reason given, not also 'checks changed' (settings read back from the state are
    lists, fresh ones tuples: they must compare equal)."""
    ws.write("make.py", MAKE.format(3))
    ws.write("BUILD.yaml", CHECKED)
    ws.run("build", check=0)
    ws.write("make.py", MAKE.format(4))
    reasons = ws.run("status", check=0).stdout
    assert "input make.py changed" in reasons
    assert "checks changed" not in reasons and "rule settings changed" not in reasons


def test_json_errors_are_a_json_line_on_stdout(ws):
    """Under --json a BUILD-file error is a JSON object on stdout (file:line, field, hint, exit code), besides the
    text on stderr."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo hi\n    outz: [x]\n")
    proc = ws.run("build", "--json", check=2)
    error = json.loads(proc.stdout.splitlines()[-1])
    assert error["event"] == "error" and error["exit_code"] == 2
    assert "outz" in error["error"] and error["location"].startswith("BUILD.yaml:4")
    assert "outz" in proc.stderr


def test_verify_without_targets_verifies_what_build_builds(ws):
    """verify with no targets (//...) re-executes what `build //...` builds (test targets are left out, as build
    leaves them), instead of failing on a test target it never built."""
    ws.write("make.py", MAKE.format(3))
    ws.write("BUILD.yaml", CHECKED)
    proc = ws.run("verify", check=0)
    assert "//:raw: identical" in proc.stdout
    assert "gate" not in proc.stdout


def test_shared_options_on_test_status_and_cache_verify(ws, tmp_path):
    """The options build declares work where a newcomer reaches for them: `test --color/--no-color`,
    `status --param/--executor`, `cache verify --remote-cache URL` (the remote it checks)."""
    ws.write("make.py", MAKE.format(3))
    ws.write("params.yaml", "a: 1\n")
    ws.write("BUILD.yaml", CHECKED.replace("    deps: [make.py]\n", "    deps: [make.py]\n    params: [a]\n", 1))
    remote = (tmp_path / "remote").as_uri()
    ws.run("build", "--remote-cache", remote, check=0)

    proc = ws.run("status", "--param", "a=2", "--exit-code", check=1)  # as `build --param a=2` would see it
    assert "//:raw: stale" in proc.stdout and "a" in proc.stdout
    ws.run("status", "--exit-code", check=0)
    ws.run("status", "--executor", "local", "--exit-code", check=0)
    assert "nosuch" in ws.run("status", "--executor", "nosuch", check=2).stderr

    colored = ws.run("test", "--color", "--no-cache-test-results", check=0).stdout
    assert "\x1b[32mPASSED\x1b[0m" in colored and "//:gate" in colored
    assert "\x1b[" not in ws.run("test", "--no-color", check=0).stdout
    assert "\x1b[" not in ws.run("test", env=ws.env(FORCE_COLOR="1", NO_COLOR="1"), check=0).stdout

    empty_local = ws.env(BUILDML_CACHE_DIR=str(tmp_path / "empty"))
    assert ws.run("cache", "verify", env=empty_local, check=0).stdout.startswith("checked 0 blobs")
    proc = ws.run("cache", "verify", "--remote-cache", remote, env=empty_local, check=0)
    assert int(proc.stdout.split()[1]) > 0 and "no corrupt entries" in proc.stdout  # the remote's blobs
    assert "no remote cache configured" in ws.run("cache", "verify", "--remote", check=2).stderr


def test_readme_main_job_runs_buildml_from_the_activated_venv(tmp_path):
    """README's main job activates the venv it makes, so its `buildml ...` and every later bare `buildml`
    are found; run here with the first steps as written (the venv linked to this one, already installed)."""
    import os
    import re
    import subprocess

    from conftest import BIN, EXAMPLES, REPO

    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    for block in blocks:  # a block making the venv activates it before any bare `buildml`
        if "-m venv .venv" in block and re.search(r"(^|&& )buildml ", block):
            assert block.index(". .venv/bin/activate") < re.search(r"(^|&& )buildml ", block).start(), block
    main = blocks[0].strip()
    steps = [s for s in main.split(" && ") if not s.startswith(("python3 -m venv", "pip install"))]
    assert steps[0] == ". .venv/bin/activate" and steps[-1] == "buildml build //..."
    (tmp_path / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    shutil.copytree(EXAMPLES / "ml-repo", tmp_path / "examples/ml-repo", ignore=shutil.ignore_patterns(".buildml", "buildml-out"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "FORCE_COLOR")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p).resolve() != BIN.resolve())
    env["BUILDML_CACHE_DIR"] = str(tmp_path / "cache")
    script = " && ".join(steps[:-1] + ["command -v buildml", "buildml status //data:raw"])  # README: then `buildml status`
    proc = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = Path(proc.stdout.splitlines()[0])
    assert found.resolve() == (BIN / "buildml").resolve()  # the venv's own buildml, found by the activation
    assert "//data:raw: stale" in proc.stdout
