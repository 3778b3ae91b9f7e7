"""Faults and hostile input: a full disk, a planted secret, arbitrary YAML."""

import os
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from buildml.errors import LoadError
from buildml.load.yamlsrc import load_yaml


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 MiB tmpfs mounted by the test (CI runs as root), unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_output_store(ws, tiny_disk):
    """A cache on a full disk: a clear error, exit 1, no half-written entry, sources untouched."""
    ws.write("src.txt", "precious source\n")
    ws.write("BUILD.yaml", """
        targets:
          big:
            command: head -c 8000000 /dev/zero > big.bin
            deps: [src.txt]
            outs: [big.bin]
    """)
    env = ws.env(BUILDML_CACHE_DIR=str(tiny_disk / "cache"))
    proc = ws.run("build", env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "no space left on device" in text.lower() and "Traceback" not in text
    assert ws.read("src.txt") == "precious source\n"
    assert not [p for p in (tiny_disk / "cache" / "ac").rglob("*") if p.is_file()], "no action-cache entry for a failed store"
    assert "no corrupt entries" in ws.run("cache", "verify", env=env, check=0).stdout


def test_planted_secret_appears_in_no_artifact(ws, tmp_path):
    """A declared secret reaches the command but never the key, state, manifests, logs or report."""
    secret = "s3cr3t-Planted-Value-91c2"
    ws.write("BUILD.yaml", f"""
        targets:
          uses_token:
            command: 'echo "token is $API_TOKEN"; test "${{#API_TOKEN}}" -eq {len(secret)} && echo ok > out.txt'
            secrets: [API_TOKEN]
            outs: [out.txt]
    """)
    env = ws.env(API_TOKEN=secret)
    proc = ws.run("build", "-vv", env=env, check=0)
    assert ws.read("out.txt") == "ok\n", "the command saw the secret"
    assert secret not in proc.stdout + proc.stderr
    assert "token is ***" in ws.run("log", "//:uses_token", env=env, check=0).stdout
    ws.run("report", "--out", str(ws.root / "report.html"), env=env, check=0)
    leaked = [str(p) for base in (ws.root, ws.cache) for p in base.rglob("*")
              if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == [], f"secret found in {leaked}"


def test_secret_missing_from_environment_is_a_clear_error(ws):
    ws.write("BUILD.yaml", "targets:\n  a:\n    command: 'true'\n    secrets: [NOT_SET_TOKEN]\n")
    env = ws.env()
    env.pop("NOT_SET_TOKEN", None)
    proc = ws.run("build", env=env, check=2)
    assert "secret NOT_SET_TOKEN needed by //:a is not set" in proc.stdout + proc.stderr


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["targets:", "  a:", "    command: x", "    deps: [", "]", "- ", "&x", "*x", "<<: *x",
                              "!!python/name:os.system", "{", "}", ":", "'", '"', "\t", "? ", "---", "..."]),
             max_size=30).map("\n".join),
)


@settings(max_examples=300, deadline=None)
@given(yaml_text)
def test_loader_never_crashes(text):
    """Any text either loads as data or raises LoadError with a location; nothing else escapes."""
    try:
        doc = load_yaml(text, "BUILD.yaml")
    except LoadError as exc:
        assert exc.location is not None and exc.render().startswith("BUILD.yaml")
        return
    assert doc.file == "BUILD.yaml"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_loader_rejects_bytes_cleanly(data):
    """Arbitrary bytes (not UTF-8, control characters) never escape as anything but LoadError."""
    try:
        load_yaml(data, "BUILD.yaml")
    except LoadError:
        pass


def test_poisoned_manifest_cannot_write_outside_the_outs(ws, tmp_path):
    """A cache entry naming paths outside the target's outs is rejected: nothing is written there, the action re-runs."""
    import json

    ws.write("BUILD.yaml", "targets:\n  a:\n    command: echo good > out.txt\n    outs: [out.txt]\n")
    ws.run("build", check=0)
    entry = next(p for p in (ws.cache / "ac").rglob("*") if p.is_file())
    manifest = json.loads(entry.read_text())
    good = manifest["outputs"]["out.txt"]
    manifest["outputs"] = {"../escaped.txt": good, "out.txt": good}
    os.chmod(entry, 0o644)
    entry.write_text(json.dumps(manifest))
    (ws.root / "out.txt").unlink()
    proc = ws.run("build", "--json", check=0)
    assert not (ws.root.parent / "escaped.txt").exists()
    assert '"status": "executed"' in proc.stdout and ws.read("out.txt") == "good\n"
