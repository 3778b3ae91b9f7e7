"""The executor registry: built-in types, a fake named in buildml.yaml, entry-point executors, unknown types."""

import os

import pytest

from buildml.api import Options, Session
from buildml.errors import LoadError
from buildml.load import executor_types as registry
from buildml.executors.fake import FakeExecutor
from buildml.load.workspace import read_settings
from conftest import executed

STEP = "targets:\n  step:\n    kind: command\n    command: exit 1\n    outs: [out.txt]\n"


def test_fake_executor_runs_a_build_from_the_cli(ws):
    """`executors: {rec: {type: fake}}` + `--executor rec`: the fake writes the out, nothing really runs."""
    ws.write("buildml.yaml", "executors:\n  rec: {type: fake}\n")
    ws.write("BUILD.yaml", STEP)
    summary, events = ws.build_json("--executor", "rec", "//...")
    assert executed(events) == ["//:step"]
    assert ws.read("out.txt") == "//:step"  # the fake's output (cmd would have failed)


def test_fake_named_executor_is_made_once_per_session(ws):
    """A named executor is made once and serves every target that resolves to it."""
    ws.write("buildml.yaml", "executors:\n  rec: {type: fake}\n")
    ws.write("BUILD.yaml", STEP)
    session = Session(ws.root, Options(cache_dir=str(ws.cache), executor="rec"))
    spec = next(iter(session.graph.specs.values()))
    first = session.executor_for(spec)
    assert isinstance(first, FakeExecutor) and session.executor_for(spec) is first


THIRD_PARTY = """
from buildml.executors.fake import FakeExecutor


class Jobs(FakeExecutor):
    \"\"\"Stands in for an executor another package provides (a Kubernetes Jobs one, say).\"\"\"

    config_options = ("queue",)

    @classmethod
    def from_config(cls, config, context):
        return cls({"//:step": "ran on queue " + config.option("queue")})
"""


def test_entry_point_executor_is_a_known_type(ws, tmp_path):
    """A package that declares an executor in the "buildml.executors" entry-point group (a real dist-info on the
    path, found by importlib.metadata in the real CLI) is parsed, checked and run like a built-in type."""
    site = tmp_path / "site"
    (site / "buildml_k8s-0.1.dist-info").mkdir(parents=True)
    (site / "buildml_k8s.py").write_text(THIRD_PARTY)
    (site / "buildml_k8s-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: buildml-k8s\nVersion: 0.1\n")
    (site / "buildml_k8s-0.1.dist-info" / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nk8s = buildml_k8s:Jobs\n")
    env = ws.env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    ws.write("BUILD.yaml", STEP)
    ws.write("buildml.yaml", "executors:\n  jobs: {type: k8s, queue: a100}\n")
    ws.run("build", "--executor", "jobs", "//...", check=0, env=env)
    assert ws.read("out.txt") == "ran on queue a100"
    ws.write("buildml.yaml", "executors:\n  jobs: {type: k8s, queu: a100}\n")
    proc = ws.run("build", "--executor", "jobs", "//...", check=2, env=env)
    assert "unknown option 'queu' for a k8s executor" in proc.stderr and "queue" in proc.stderr
    proc = ws.run("build", "--executor", "jobs", "//...", check=2)  # without the package: an unknown type
    assert "unknown executor type 'k8s'" in proc.stderr


def test_unknown_type_names_the_registry_types(ws):
    """An unknown type is a file:line error with a did-you-mean over the registry's type names."""
    ws.write("buildml.yaml", "executors:\n  gpu: {type: fak}\n")
    with pytest.raises(LoadError) as err:
        read_settings(ws.root / "buildml.yaml")
    assert "unknown executor type 'fak'" in err.value.message and "fake" in err.value.hint
    assert ":2:" in str(err.value.location)
