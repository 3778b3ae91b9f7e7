"""Outputs are collected without following links and never change once stored; outs never name buildml's or
git's own paths, nor lie under a symlink of the workspace (issue 15, findings 4, 5, 7, 10 and 12)."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
import xxhash

from test_docker import app, busybox_image, dws, remove_test_images  # noqa: F401  (fixtures)


def host_secret(tmp_path, sub: str = ""):
    """host/<sub>/id_rsa, a file outside the workspace and the cache like ~/.ssh/id_rsa; and a check it is untouched."""
    host = tmp_path / "host"
    secret = host / sub / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY\n")
    secret.chmod(0o600)

    def untouched():
        assert secret.read_text() == "PRIVATE KEY\n"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    return host, untouched


def blobs(cache) -> list[bytes]:
    return [p.read_bytes() for p in (cache / "cas").rglob("*") if p.is_file()]


@pytest.mark.parametrize("out,link", [("gen/id_rsa", "gen"), ("a/b/id_rsa", "a")])
def test_local_action_symlinking_an_out_parent_fails(ws, tmp_path, out, link):
    """An action making an out's parent (or grandparent) a link to a host directory fails naming it; that file stays."""
    host, untouched = host_secret(tmp_path, out[len(link) + 1:-len("/id_rsa")])
    ws.write("BUILD.yaml", f"""
        targets:
          steal:
            command: rm -rf {link} && ln -s {host} {link}
            outs: [{out}]
    """)
    proc = ws.run("build", check=1)
    assert f"out {out!r} lies under {link!r}, which the command made a symlink" in proc.stdout
    untouched()
    assert not (ws.root / out).exists() and b"PRIVATE KEY\n" not in blobs(ws.cache)


@pytest.mark.docker
def test_container_as_nobody_symlinking_an_out_parent_fails(dws, tmp_path):
    """A container (running as nobody) making gen a link to a host directory fails the action; the host file stays."""
    host, untouched = host_secret(tmp_path)
    app(dws, f"rm -rf gen && ln -s {host} gen", outs=["gen/id_rsa"])
    proc = dws.run("build", "//app:run", check=1)
    assert "out 'app/gen/id_rsa' lies under 'app/gen', which the command made a symlink" in proc.stdout
    untouched()
    assert not (dws.root / "app/gen/id_rsa").exists() and b"PRIVATE KEY\n" not in blobs(dws.cache)


def test_hard_link_to_an_outside_file_fails(ws, tmp_path):
    """An output that is a hard link to an outside file fails the action; that file's mode and content are unchanged."""
    outside = tmp_path / "notes.txt"
    outside.write_text("mine\n")
    outside.chmod(0o640)
    ws.write("BUILD.yaml", f"""
        targets:
          link:
            command: mkdir -p out && ln {outside} out/notes.txt
            outs: [out]
    """)
    proc = ws.run("build", check=1)
    assert "out/notes.txt in out 'out' is a hard link" in proc.stdout
    assert outside.read_text() == "mine\n" and stat.S_IMODE(outside.stat().st_mode) == 0o640
    assert outside.stat().st_nlink == 1  # the sandbox's link is gone with the sandbox


def test_fifo_in_a_directory_out_fails_quickly(ws):
    """A FIFO inside a directory out fails the build naming it, without ever blocking on it."""
    ws.write("BUILD.yaml", """
        targets:
          pipe:
            command: mkdir -p out && echo x > out/a.txt && mkfifo out/pipe
            outs: [out]
    """)
    start = time.monotonic()
    proc = ws.run("build", check=1, timeout=60)
    assert "out/pipe in out 'out' is a FIFO" in proc.stdout
    assert time.monotonic() - start < 30


DAEMON = """\
import os, sys, time
with open("out.txt", "w") as f:
    f.write("original\\n")
if os.fork() == 0:  # a process the command leaves behind, in its own session, holding out.txt open
    os.setsid()
    fd = os.open("out.txt", os.O_WRONLY)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    time.sleep(0.5)
    for i in range(15):
        os.pwrite(fd, b"EVIL %d\\n" % i, 0)
        time.sleep(0.1)
    open(sys.argv[1], "w").close()
    os._exit(0)
"""


def test_process_writing_after_the_command_cannot_change_the_stored_blob(ws, tmp_path):
    """A process still writing to an output after the command exits changes neither the stored blob nor the output."""
    done = tmp_path / "daemon-done"
    ws.write("daemon.py", DAEMON)
    ws.write("BUILD.yaml", f"""
        targets:
          out:
            command: python daemon.py {done}
            deps: [daemon.py]
            outs: [out.txt]
    """)
    ws.run("build", check=0)
    deadline = time.monotonic() + 30
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.exists(), "the background writer never finished"
    ws.run("cache", "verify", check=0)
    manifest, = [json.loads(p.read_text()) for p in (ws.cache / "ac").rglob("*") if p.is_file()]
    digest = manifest["outputs"]["out.txt"]["digest"]
    assert xxhash.xxh3_128_hexdigest((ws.root / "out.txt").read_bytes()) == digest


@pytest.mark.parametrize("field,path,owned", [
    ("outs", ".git", ".git"), ("outs", ".buildml/state", ".buildml"), ("outs", "buildml.yaml", "buildml.yaml"),
    ("metrics", "buildml-out/m.json", "buildml-out"), ("outs", "sub/.git/HEAD", ".git")])
def test_out_naming_buildml_or_git_paths_is_a_load_error(ws, field, path, owned):
    """outs or metrics naming .git, .buildml, buildml.yaml or buildml-out: a load error at its line; nothing touched."""
    (ws.root / ".git").mkdir()
    (ws.root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    ws.write("BUILD.yaml", f"""
        targets:
          bad:
            command: "true"
            {field}:
              - {path}
    """)
    proc = ws.run("build", check=2)
    text = proc.stdout + proc.stderr
    assert "BUILD.yaml:6" in text and field in text and f"{owned}, which belongs to" in text
    assert (ws.root / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert not (ws.root / ".buildml" / "displaced").exists()


@pytest.mark.parametrize("out,link", [("gen/a.txt", "gen"), ("data", "data")])
def test_out_under_a_symlinked_workspace_directory_is_an_error(ws, tmp_path, out, link):
    """An out under (or at) a symlink of the workspace is an error at its line; build and clean touch nothing there."""
    elsewhere = tmp_path / "bigdisk"
    elsewhere.mkdir()
    (elsewhere / "a.txt").write_text("keep\n")
    (ws.root / link).symlink_to(elsewhere)
    ws.write("BUILD.yaml", f"""
        targets:
          write:
            command: mkdir -p {os.path.dirname(out) or out} && echo new > {link}/a.txt
            outs: [{out}]
    """)
    for args in (("build",), ("clean",)):
        proc = ws.run(*args, check=2)
        text = proc.stdout + proc.stderr
        assert "BUILD.yaml:5" in text and f"the symlink {link!r} in the workspace" in text
    assert [p.name for p in elsewhere.iterdir()] == ["a.txt"] and (elsewhere / "a.txt").read_text() == "keep\n"
    assert not (ws.root / ".buildml" / "displaced").exists()
