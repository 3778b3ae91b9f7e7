"""Hermetic local actions: only declared inputs, declared env, declared outs."""

import os

from conftest import executed


def test_undeclared_file_read_fails(ws):
    """A command reading a file it did not declare fails loudly."""
    ws.write("secret.txt", "x")
    ws.write("declared.txt", "y")
    ws.write("BUILD.yaml", """
        targets:
          a:
            command: cat declared.txt secret.txt > out.txt
            deps: [declared.txt]
            outs: [out.txt]
    """)
    proc = ws.run("build", check=1)
    assert "secret.txt: No such file" in proc.stdout
    assert not (ws.root / "out.txt").exists()


def test_missing_out_is_named(ws):
    """A command that does not produce a declared out fails naming it."""
    ws.write("BUILD.yaml", """
        targets:
          a:
            command: touch one.txt
            outs: [one.txt, two.txt]
    """)
    proc = ws.run("build", check=1)
    assert "declared out 'two.txt' not produced" in proc.stdout


def test_env_is_declared_only_and_keyed(ws):
    """The command sees declared env but not the caller's; changing a declared value re-runs."""
    ws.write("BUILD.yaml", """
        targets:
          a:
            command: 'echo "$GREETING/${LEAKED:-unset}" > out.txt'
            env: {GREETING: hello}
            outs: [out.txt]
    """)
    ws.run("build", env=ws.env(LEAKED="leak"), check=0)
    assert ws.read("out.txt") == "hello/unset\n"
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("hello", "bye"))
    summary, events = ws.build_json()
    assert executed(events) == ["//:a"] and ws.read("out.txt") == "bye/unset\n"


def test_package_is_working_directory_and_params_are_filtered(ws):
    """Commands run in their package; params.yaml in the sandbox holds only the selected keys."""
    ws.write("pkg/params.yaml", "train: {lr: 0.1, secret_unselected: 5}\n")
    ws.write("pkg/BUILD.yaml", """
        targets:
          a:
            command: cat params.yaml > seen.yaml
            params: [train.lr]
            outs: [seen.yaml]
    """)
    ws.run("build", check=0)
    seen = ws.read("pkg/seen.yaml")
    assert "lr: 0.1" in seen and "secret_unselected" not in seen


def test_directory_outs_and_label_deps(ws):
    """A directory out is collected whole; a label dep stages all its outputs for the consumer."""
    ws.write("BUILD.yaml", """
        targets:
          gen:
            command: mkdir -p out/sub && echo 1 > out/a && echo 2 > out/sub/b
            outs: [out]
          use:
            command: cat out/a out/sub/b > joined
            deps: [":gen"]
            outs: [joined]
    """)
    ws.run("build", check=0)
    assert ws.read("joined") == "1\n2\n"
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("echo 2 > out/sub/b", "echo 3 > out/c"))
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("cat out/a out/sub/b", "cat out/a out/c"))
    ws.run("build", check=0)
    assert not (ws.root / "out/sub/b").exists(), "stale files in a directory out are removed"
    assert ws.read("joined") == "1\n3\n"


def test_timeout_kills_the_action(ws):
    """A timeout stops the command and fails the target saying so."""
    ws.write("BUILD.yaml", """
        targets:
          slow:
            command: sleep 30
            timeout: 1
    """)
    proc = ws.run("build", check=1, timeout=20)
    assert "timed out after 1s" in proc.stdout


def test_executable_bit_is_kept(ws):
    """Outputs keep their executable bit through the cache."""
    ws.write("BUILD.yaml", """
        targets:
          tool:
            command: printf '#!/bin/sh\\necho hi\\n' > tool.sh && chmod +x tool.sh
            outs: [tool.sh]
    """)
    ws.run("build", check=0)
    (ws.root / "tool.sh").unlink()
    ws.run("build", check=0)
    assert os.access(ws.root / "tool.sh", os.X_OK)


def test_stop_after_failure_with_ready_targets_left(ws):
    """A target failing while others are ready ends the build promptly (no spin), reporting them not built."""
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: 'true'\n    params: [{missing.yaml: [k]}]\n" +
             "".join(f"  b{i}:\n    command: 'true'\n" for i in range(5)))
    proc = ws.run("build", "-j", "1", check=2, timeout=30)
    assert "params file missing.yaml does not exist" in proc.stdout
