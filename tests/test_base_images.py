"""Base images pinned by registry digest in buildml.lock, and `push: true`, against a real local registry.

The registry is Debian's `docker-registry` (the CNCF distribution server) on a loopback port,
started once per session; the Docker engine trusts 127.0.0.0/8 registries without TLS.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
import yaml

from conftest import WS, executed
from test_docker import BUSYBOX, busybox_image, docker  # noqa: F401 (fixture)

from buildml.executors.docker.base_images import from_refs, pin_dockerfile, repository_of

pytestmark = pytest.mark.docker

DOCKERFILE_CASES = [
    ("FROM python:3.11\n", {}, ["python:3.11"]),
    ("ARG V=3.11\nFROM python:${V} AS build\nFROM build\nFROM scratch\n", {}, ["python:3.11"]),
    ("ARG V=3.11\nFROM python:$V\n", {"V": "3.12"}, ["python:3.12"]),
    ("# FROM commented:1\nFROM --platform=linux/amd64 \\\n  reg:5000/a/b:1 as one\nFROM one\n", {}, ["reg:5000/a/b:1"]),
    ("FROM busybox@sha256:" + "b" * 64 + "\nFROM ${UNSET}\nFROM x:1\nFROM x:1\n", {}, ["x:1"]),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """host:port of a real registry started for this test session."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is missing: apt-get install docker-registry (tools/system-deps.sh installs it)"
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (root / "config.yml").write_text(yaml.safe_dump({
        "version": 0.1, "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"}, "log": {"level": "warn"}}))
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=open(root / "log", "w"))
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (root / "log").read_text()
            time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def push_base(registry: str, ref: str, flavour: str | None) -> str:
    """Push busybox (with /flavour when given) as registry/ref; its registry digest."""
    remote = f"{registry}/{ref}"
    if flavour is None:
        docker("tag", BUSYBOX, remote)
    else:
        subprocess.run(["docker", "build", "-q", "-t", remote, "-"], check=True, capture_output=True, text=True,
                       input=f"FROM {BUSYBOX}\nRUN echo {flavour} > /flavour\n")
    out = docker("push", remote)
    return next(l.split("digest: ")[1].split()[0] for l in out.splitlines() if "digest: " in l)


def git(ws: WS, *args) -> str:
    return subprocess.run(["git", *args], cwd=ws.root, capture_output=True, text=True, check=True).stdout.strip()


def image_ws(ws: WS, base: str, repository: str, **extra) -> None:
    target = {"kind": "image", "repository": repository, **extra}
    ws.write("img/BUILD.yaml", yaml.safe_dump({"targets": {"img": target}}))
    ws.write("img/Dockerfile", f"ARG BASE={base}\nFROM ${{BASE}} AS base\n"
                               "RUN (cat /flavour 2>/dev/null || echo plain) > /which\nFROM base\n")


def which(ref: str) -> str:
    return subprocess.run(["docker", "run", "--rm", "--network", "none", ref, "cat", "/which"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("text,args,refs", DOCKERFILE_CASES)
def test_from_references_are_found(text, args, refs):
    """FROM parsing: ARG defaults and build args, stages, scratch, digests and flags are handled."""
    assert from_refs(text, args) == refs


def test_pinning_rewrites_only_pinned_references():
    """The Dockerfile sent to the engine names each pinned base as ref@digest; nothing else changes."""
    text = "ARG V=3\nFROM --platform=linux/amd64 reg:5000/py:${V} AS build\nRUN make\nFROM scratch\nCOPY --from=build /a /a\n"
    pinned = pin_dockerfile(text, {"reg:5000/py:3": "sha256:" + "a" * 64})
    assert "FROM --platform=linux/amd64 reg:5000/py:3@sha256:" + "a" * 64 + " AS build\n" in pinned
    assert pinned.replace("reg:5000/py:3@sha256:" + "a" * 64, "reg:5000/py:${V}") == text
    assert repository_of("reg:5000/team/py:3.11") == "reg:5000/team/py"
    assert repository_of("python") == "python"


def test_base_image_pinned_drift_stops_and_at_rebuilds_from_the_locked_base(ws, registry, busybox_image):
    """The lock pins the base's digest; a moved tag stops the build; --update-lock re-pins; --at builds the old base."""
    base = f"{registry}/base-{uuid.uuid4().hex[:8]}/busybox:1"
    repository = f"buildml-test/pins-{uuid.uuid4().hex[:8]}"
    first = push_base(registry, base.split("/", 1)[1], None)
    image_ws(ws, base, repository)
    git(ws, "init", "-q")
    git(ws, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")

    summary, events = ws.build_json("//img:img")
    assert executed(events) == ["//img:img"]
    assert yaml.safe_load(ws.read("buildml.lock"))["images"] == {base: first}
    old_key = events[0]["key"]
    assert which(f"{repository}:{old_key}") == "plain"
    assert ws.build_json("//img:img")[0]["executed"] == 0
    shown = json.loads(ws.run("show", "//img:img", "--json", check=0).stdout)
    assert json.dumps(shown).count(first) >= 1  # the manifest's provenance names the pinned base
    git(ws, "add", "-A")
    git(ws, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "pinned")

    second = push_base(registry, base.split("/", 1)[1], "two")  # the tag moves (and the engine's copy with it)
    assert second != first
    proc = ws.run("build", "//img:img", check=2)
    said = proc.stdout + proc.stderr
    assert f"base image {base} of //img:img drifted from buildml.lock" in said
    assert "buildml lock" in said and "Traceback" not in said

    summary, events = ws.build_json("//img:img", "--update-lock")
    assert yaml.safe_load(ws.read("buildml.lock"))["images"] == {base: second}
    assert events[0]["key"] != old_key and which(f"{repository}:{events[0]['key']}") == "two"

    docker("rmi", f"{repository}:{old_key}")
    docker("rmi", f"{registry}/{base.split('/', 1)[1].rsplit(':', 1)[0]}@{first}", check=False)
    proc = ws.run("build", "--at", "HEAD", "--json", "//img:img", check=0)
    rebuilt = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{") and '"finished"' in l]
    assert [e["key"] for e in rebuilt if e["status"] == "executed"] == [old_key]  # the old key, from the old lock
    assert which(f"{repository}:{old_key}") == "plain"  # built FROM the pinned digest, pulled from the registry

    assert ws.run("lock", check=0).stdout.split() == ["unchanged", "image", base]
    docker("rmi", "-f", f"{repository}:{old_key}", f"{repository}:{events[0]['key']}", check=False)


def test_push_then_a_missing_image_comes_back_from_the_registry(ws, registry, busybox_image):
    """`push: true` pushes <registry>/<repository>:<key>; an engine without it pulls it instead of building."""
    repository = f"buildml-test/push-{uuid.uuid4().hex[:8]}"
    (ws.root / "buildml.yaml").write_text(yaml.safe_dump({"docker": {"registry": registry}}))
    ws.write("img/BUILD.yaml", yaml.safe_dump({"targets": {"img": {"kind": "image", "repository": repository,
                                                                   "push": True}}}))
    ws.write("img/Dockerfile", f"FROM {BUSYBOX}\nRUN echo pushed > /which\n")
    summary, events = ws.build_json("//img:img")
    key = events[0]["key"]
    tags = json.load(urllib.request.urlopen(f"http://{registry}/v2/{repository}/tags/list", timeout=10))["tags"]
    assert key in tags
    docker("rmi", f"{repository}:{key}", f"{registry}/{repository}:{key}")
    summary, events = ws.build_json("//img:img")
    assert summary["executed"] == 0  # pulled from docker.registry, not rebuilt
    assert which(f"{repository}:{key}") == "pushed"
    docker("rmi", "-f", f"{repository}:{key}", f"{registry}/{repository}:{key}", check=False)
