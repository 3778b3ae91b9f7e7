"""Containers that die under a running build: `docker kill` from outside and the kernel's OOM killer are each
reported as such, with the log tail, and the container is removed."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from conftest import BIN
from fault_proxy import record_figures
from test_docker import app, busybox_image, docker, dws, remove_test_images  # noqa: F401 (fixtures)

pytestmark = pytest.mark.docker
TRIALS = int(os.environ.get("BUILDML_DOCKER_FAULT_TRIALS", "2"))  # benchmarks/reliability.py runs more


def running_container(target: str, proc, timeout: float = 60) -> str:
    """The id of the running container of target, once the build under test has started it."""
    deadline = time.monotonic() + timeout
    while True:
        ids = docker("ps", "-q", "--filter", f"label=buildml.target={target}").split()
        if ids:
            return ids[0]
        assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
        time.sleep(0.1)


def containers_of(ws) -> list[str]:
    """Containers (running or not) of this test's image: others' suites may run theirs meanwhile."""
    return [l for l in docker("ps", "-a", "--filter", "label=buildml", "--format", "{{.Image}}").split()
            if l.startswith(ws.repo + ":")]


def start_build(ws):
    return subprocess.Popen([str(BIN / "buildml"), "build", "//..."], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_docker_kill_from_outside_is_reported(dws):
    """`docker kill` of a running action: FAILED 'killed from outside', the log tail shown, the container removed,
    and the next build runs it again."""
    app(dws, "echo working-on-it; sleep 120", outs=["out.txt"])
    dws.build_json("//images:tools")
    failures = []
    for trial in range(TRIALS):
        proc = start_build(dws)
        container = running_container("//app:run", proc)
        time.sleep(0.3 * trial)  # a little later into the run each trial
        docker("kill", container)
        out, err = proc.communicate(timeout=60)
        text = out + err
        ok = proc.returncode == 1 and "FAILED    //app:run: killed from outside" in text and \
            "working-on-it" in text and "Traceback" not in text and containers_of(dws) == []
        if not ok:
            failures.append((trial, proc.returncode, text[-2000:]))
    record_figures("docker: docker kill from outside", trials=TRIALS, failures=len(failures))
    assert failures == [], failures
    app(dws, "echo rebuilt > out.txt", outs=["out.txt"])
    dws.build_json("//...")
    assert dws.read("app/out.txt") == "rebuilt\n"


def test_out_of_memory_is_reported_with_the_limit(dws):
    """An action past its resources.memory is killed by the kernel: FAILED 'out of memory (limit 64 MB)', log tail, removed."""
    hog = "echo allocating; x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo never-printed"
    app(dws, hog, resources={"memory": "64MB"})
    proc = dws.run("build", "//...", check=1)
    text = proc.stdout + proc.stderr
    assert "FAILED    //app:run: out of memory (limit 64 MB)" in text, text
    assert "allocating" in text and "never-printed" not in text and "Traceback" not in text
    assert containers_of(dws) == []
    assert "allocating" in dws.run("log", "//app:run", check=0).stdout


def test_container_is_confined(dws):
    """Whoever runs buildml (root in CI): the action's uid is not 0, it has no capabilities, no network interface
    but lo, no Docker socket, and its inputs are read-only; its outputs still belong to the caller."""
    dws.write("app/in.txt", "input\n")
    probe = ("mkdir -p c; id -u > c/uid; grep CapEff /proc/self/status > c/caps; ls /sys/class/net > c/net; "
             "{ ls /var/run/docker.sock /run/docker.sock; grep -c docker.sock /proc/mounts; } > c/sock 2>&1; "
             "{ echo changed > in.txt; } 2> c/ro; touch c/made")
    app(dws, probe, deps=["in.txt"], outs=["c/"])
    dws.build_json("//...")
    read = lambda name: dws.read(f"app/c/{name}")
    assert read("uid").strip() != "0" and read("uid").strip() == str(os.getuid() or 65534)
    assert read("caps").split() == ["CapEff:", "0000000000000000"]
    assert read("net").split() == ["lo"]
    assert read("sock").count("No such file or directory") == 2 and read("sock").splitlines()[-1] == "0"
    assert "Read-only file system" in read("ro") and dws.read("app/in.txt") == "input\n"
    made = os.stat(dws.root / "app/c/made")
    assert (made.st_uid, made.st_gid) == (os.getuid(), os.getgid())
