"""CLI conventions a CI or a script relies on (issue 19): exit codes, JSON lines, and answers that name the change."""

import json

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
