"""Executors in buildml.yaml: parsing with locations, per-target resolution, --executor, image skipping, ray."""

import sys
from dataclasses import dataclass

import pytest

from buildml.api import Options, Session
from buildml.errors import UserError
from buildml.api import make_executor
from buildml.load.executor_settings import ExecutorConfig
from buildml.load.workspace import read_settings
from conftest import executed


@dataclass(frozen=True)
class Spec:
    executor: str | None = None
    image: object = None


def settings(ws, text):
    ws.write("buildml.yaml", text)
    return read_settings(ws.root / "buildml.yaml").executors


def test_parses_named_executors_with_capacity(ws):
    """Named executors keep their type, options and declared capacity (memory in bytes)."""
    ex = settings(ws, "executor: local\nexecutors:\n  local: {gpus: 2}\n  trainer: {type: ray, address: auto, gpus: 4, memory: 32GB}\n")
    assert ex.default == "local" and ex.get("local") == ExecutorConfig("local", "local", {}, {"gpus": 2})
    trainer = ex.get("trainer")
    assert (trainer.type, trainer.option("address"), trainer.capacity) == ("ray", "auto", {"gpus": 4, "memory": 32 << 30})
    assert sorted(ex.executors) == ["docker", "local", "trainer"]


@pytest.mark.parametrize("text, where, message", [
    ("executors:\n  gpu: {type: rya}\n", ":2:", "unknown executor type 'rya'"),
    ("executors:\n  gpu: {gpus: 1}\n", ":2:", "executor 'gpu' needs a type: local, docker or ray"),
    ("executors:\n  local: {type: docker}\n", ":2:", "the built-in executor 'local' cannot change its type"),
    ("executors:\n  local:\n    gpus: 0.5\n", ":3:", "gpus must be a non-negative integer"),
    ("executors:\n  local:\n    adress: x\n", ":3:", "unknown option 'adress' for a local executor"),
    ("executors:\n  local:\n    memory: lots\n", ":3:", "invalid size 'lots'"),
    ("executors: [local]\n", ":1:", "executors must be a mapping"),
    ("executor: trainr\nexecutors:\n  trainer: {type: local}\n", ":1:", "unknown executor 'trainr'"),
])
def test_bad_executor_settings_are_load_errors_with_location(ws, text, where, message):
    """Each mistake in executor:/executors: is exit 2 at buildml.yaml:line with the message."""
    ws.write("BUILD.yaml", "targets: {}\n")
    ws.write("buildml.yaml", text)
    proc = ws.run("build", check=2)
    assert f"buildml.yaml{where}" in proc.stderr and message in proc.stderr and "Traceback" not in proc.stderr


def test_resolution_order(ws):
    """--executor > target executor: > workspace executor: > docker with image: > local; docker needs an image."""
    ex = settings(ws, "executors:\n  trainer: {type: local}\n  box: {type: docker}\n")
    assert ex.resolve(Spec()) == "local" and ex.resolve(Spec(image="//:img")) == "docker"
    assert ex.resolve(Spec("trainer", "//:img")) == "trainer"
    assert ex.resolve(Spec("trainer"), cli="docker") == "local"  # no image: a container cannot run it
    assert ex.resolve(Spec("trainer", "//:img"), cli="box") == "box"
    ex = settings(ws, "executor: trainer\nexecutors:\n  trainer: {type: local}\n")
    assert ex.resolve(Spec(image="//:img")) == "trainer" and ex.resolve(Spec("docker", "//:img")) == "docker"


def test_unknown_executor_on_the_command_line_or_a_target(ws):
    """--executor lcoal and executor: trainr are exit 2 with a did-you-mean; the target's names its line."""
    ws.write("buildml.yaml", "executors:\n  trainer: {type: local}\n")
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: touch t\n    outs: [t]\n    executor: trainr\n")
    proc = ws.run("build", check=2)
    assert "BUILD.yaml:5:" in proc.stderr and "unknown executor 'trainr'" in proc.stderr and "did you mean 'trainer'?" in proc.stderr
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: touch t\n    outs: [t]\n    executor: trainer\n")
    proc = ws.run("build", "--executor", "lcoal", check=2)
    assert "unknown executor (--executor) 'lcoal'" in proc.stderr and "did you mean 'local'?" in proc.stderr
    assert "executors: docker, local, trainer" in proc.stderr
    assert "did you mean 'trainer'?" in ws.run("test", "--executor", "trainr", check=2).stderr
    assert executed(ws.build_json("--executor", "trainer")[1]) == ["//:t"]


IMAGE_WS = """
targets:
  step:
    image: //images:img
    command: 'test "$HOME" = /buildml/home && echo container > where.txt || echo here > where.txt'
    outs: [where.txt]
"""


def test_workspace_default_local_runs_image_targets_here_and_skips_images(ws):
    """executor: local in buildml.yaml: targets with image: run on this machine, the image is never built."""
    ws.write("buildml.yaml", "executor: local\n")
    ws.write("BUILD.yaml", IMAGE_WS)
    ws.write("images/Dockerfile", "FROM buildml-base/does-not-exist:1\n")
    ws.write("images/BUILD.yaml", "targets:\n  img:\n    kind: image\n")
    summary, events = ws.build_json()
    assert executed(events) == ["//:step"] and ws.read("where.txt") == "here\n"
    assert "//images:img" not in {e["target"] for e in events}
    proc = ws.run("build", "//images:img", check=2)
    assert "image target" in proc.stderr and "--executor docker" in proc.stderr


def test_a_target_can_ask_for_docker_under_a_local_default(ws):
    """A target's own executor: docker keeps its image target in the build under a local default."""
    ws.write("buildml.yaml", "executor: local\n")
    ws.write("BUILD.yaml", IMAGE_WS.replace("    outs: [where.txt]", "    outs: [where.txt]\n    executor: docker"))
    ws.write("images/Dockerfile", "FROM buildml-base/does-not-exist:1\n")
    ws.write("images/BUILD.yaml", "targets:\n  img:\n    kind: image\n")
    session = Session(ws.root, Options(cache_dir=str(ws.cache)))
    assert {str(l) for l in session.graph.specs} == {"//images:img", "//:step"}
    assert session.graph.specs[[l for l in session.graph.specs if l.name == "step"][0]].executor == "docker"


def test_ray_type_without_the_ray_executor_is_a_clear_user_error(monkeypatch):
    """When buildml.executors.ray.executor cannot be imported, a ray executor is a UserError saying what to install."""
    monkeypatch.setitem(sys.modules, "buildml.executors.ray.executor", None)
    with pytest.raises(UserError) as err:
        make_executor(ExecutorConfig("trainer", "ray", {"address": "auto"}), context=None)
    assert "executor 'trainer' has type ray" in err.value.message and "buildml-cli[ray]" in err.value.hint
