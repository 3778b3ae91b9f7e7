"""Malformed BUILD files and flags: one clear message with file:line, exit 2, never a traceback."""

import pytest

CASES = {
    "syntax error": ("targets:\n  a:\n    command: [echo\n", "BUILD.yaml:4:1: YAML syntax error"),
    "unknown key": ("targets:\n  a:\n    comand: echo\n", "BUILD.yaml:3:5: a.comand: unknown field 'comand'"),
    "did you mean": ("targets:\n  a:\n    comand: echo\n", "did you mean 'command'?"),
    "wrong type": ("targets:\n  a:\n    command: echo\n    outs: 3\n", "BUILD.yaml:4:5: a.outs: expected a list of paths"),
    "duplicate key": ("targets:\n  a:\n    command: x\n    command: y\n", "BUILD.yaml:4:5: duplicate key 'command'"),
    "cycle": ("targets:\n  a:\n    command: x\n    deps: [':b']\n  b:\n    command: y\n    deps: [':a']\n",
              "dependency cycle: //:a -> //:b -> //:a"),
    "escaping out": ("targets:\n  a:\n    command: x\n    outs: [../../etc/passwd]\n", "BUILD.yaml:4:12: outs: path '../../etc/passwd' escapes the workspace"),
    "absolute dep": ("targets:\n  a:\n    command: x\n    deps: [/etc/passwd]\n", "absolute path '/etc/passwd' is not allowed"),
    "unknown label": ("targets:\n  a:\n    command: x\n    deps: ['//nope:b']\n  b:\n    command: y\n",
                      "BUILD.yaml:4:12: deps: unknown target //nope:b, needed by //:a"),
    "two owners": ("targets:\n  a:\n    command: x\n    outs: [o]\n  b:\n    command: y\n    outs: [o]\n", "'o' is an out of both //:a and //:b"),
    "not a mapping": ("- a\n- b\n", "a BUILD file must be a mapping"),
    "unknown kind": ("targets:\n  a:\n    kind: comand\n    command: x\n", "unknown kind 'comand'"),
    "missing command": ("targets:\n  a:\n    outs: [x]\n", "missing required field 'command'"),
    "missing dep file": ("targets:\n  a:\n    command: x\n    deps: [nofile.txt]\n", "dep 'nofile.txt' of //:a is neither a file"),
    "python tag": ("targets:\n  a:\n    command: !!python/object/apply:os.system [echo pwned]\n", "unsupported YAML tag"),
    "python scalar tag": ("targets:\n  a:\n    command: !!python/name:os.system x\n", "unsupported YAML value"),
    "billion laughs": ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 10) + "]\n" for i in range(8)),
        "expands too many aliases"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_build_file(ws, case):
    text, expected = CASES[case]
    ws.write("BUILD.yaml", text)
    proc = ws.run("build", "//...", check=2)
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.splitlines()) <= 6


def test_unknown_target_suggests(ws):
    ws.write("BUILD.yaml", "targets:\n  prepare:\n    command: x\n")
    proc = ws.run("build", "//:prepar", check=2)
    assert "no target matches '//:prepar'" in proc.stderr and "did you mean '//:prepare'" in proc.stderr


def test_missing_param_key_and_file(ws):
    """A selected key that does not exist, or a missing params file, is a user error (exit 2)."""
    ws.write("params.yaml", "train: {lr: 1}\n")
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: x\n    params: [train.lrr]\n")
    proc = ws.run("build", check=2)
    assert "param 'train.lrr' not found in params.yaml" in proc.stdout + proc.stderr
    assert "did you mean 'train.lr'" in proc.stdout + proc.stderr
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: x\n    params: [{other.yaml: [k]}]\n")
    proc = ws.run("build", check=2)
    assert "params file other.yaml does not exist" in proc.stdout + proc.stderr


def test_no_workspace(tmp_path, ws):
    proc = ws.run("build", cwd=tmp_path, check=2)
    assert "no buildml.yaml found" in proc.stderr and "buildml init" in proc.stderr


def test_bad_settings(ws):
    ws.write("buildml.yaml", "cach:\n  dir: x\n")
    proc = ws.run("build", check=2)
    assert "buildml.yaml:1:1: unknown setting 'cach'" in proc.stderr and "did you mean 'cache'" in proc.stderr


def test_symlink_dep_outside_workspace(ws, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    (ws.root / "link.txt").symlink_to(tmp_path / "outside.txt")
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: cat link.txt\n    deps: [link.txt]\n")
    proc = ws.run("build", check=2)
    assert "symlink pointing outside the workspace" in proc.stdout + proc.stderr
