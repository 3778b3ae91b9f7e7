"""The executor registry: built-in types, a fake named in buildml.yaml, entry-point executors, unknown types."""

import importlib.metadata

import pytest

from buildml.api import Options, Session
from buildml.errors import LoadError
from buildml.load import executor_types as registry
from buildml.executors.fake import FakeExecutor
from buildml.api import make_executor
from buildml.load.executor_settings import ExecutorConfig
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


class ThirdParty(FakeExecutor):
    """Stands in for an executor some other package provides."""

    config_options = ("queue",)


def test_entry_point_executor_is_a_known_type(ws, monkeypatch):
    """A type from the "buildml.executors" entry-point group parses and is made like a built-in.

    entry_points is monkeypatched (rather than installing a dist-info) so the test needs no files on sys.path
    and cannot leak the type into other tests; registry.types is cached, so its cache is cleared around it.
    """
    ep = importlib.metadata.EntryPoint("k8s", f"{__name__}:ThirdParty", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    registry.types.cache_clear()
    try:
        ws.write("buildml.yaml", "executors:\n  jobs: {type: k8s, queue: a100}\n")
        config = read_settings(ws.root / "buildml.yaml").executors.get("jobs")
        assert config == ExecutorConfig("jobs", "k8s", {"queue": "a100"})
        assert isinstance(make_executor(config, context=None), ThirdParty)
        ws.write("buildml.yaml", "executors:\n  jobs: {type: k8s, queu: a100}\n")
        with pytest.raises(LoadError) as err:
            read_settings(ws.root / "buildml.yaml")
        assert "unknown option 'queu' for a k8s executor" in err.value.message
    finally:
        registry.types.cache_clear()


def test_unknown_type_names_the_registry_types(ws):
    """An unknown type is a file:line error with a did-you-mean over the registry's type names."""
    ws.write("buildml.yaml", "executors:\n  gpu: {type: fak}\n")
    with pytest.raises(LoadError) as err:
        read_settings(ws.root / "buildml.yaml")
    assert "unknown executor type 'fak'" in err.value.message and "fake" in err.value.hint
    assert ":2:" in str(err.value.location)
