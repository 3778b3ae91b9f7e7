"""Real builds through Session with an in-memory store: build, no-op, edit-rebuild, failure."""

import pytest

from buildml.api import Options, Session
from buildml.events import Outcome
from buildml.executors.fake import FakeExecutor
from buildml.store.base import Store
from buildml.store.memory import MemoryStore

PIPELINE = """
targets:
  raw:
    command: gen
    deps: [raw.txt]
    outs: [data/raw.csv]
  model:
    command: train
    deps: [":raw"]
    outs: [model.bin]
"""


@pytest.fixture
def pipeline(ws):
    ws.write("BUILD.yaml", PIPELINE)
    ws.write("raw.txt", "r1")
    return ws


def build(ws, fake, store):
    session = Session(ws.root, Options(cache_dir=str(ws.cache)), executor=fake, store=store)
    assert session.store is store
    finished = session.build(["//..."])
    return {str(r.label): r.status for r in finished.results}


def test_memory_store_is_a_store(tmp_path):
    assert isinstance(MemoryStore(tmp_path / "m"), Store)


def test_build_noop_edit_and_failure(pipeline, tmp_path):
    """Everything runs once, nothing the second time, the edited chain again; a failing action is reported."""
    store, fake = MemoryStore(tmp_path / "mem"), FakeExecutor()
    assert set(build(pipeline, fake, store).values()) == {Outcome.EXECUTED}
    assert store.actions and store.blobs
    fake.ran.clear()
    assert set(build(pipeline, fake, store).values()) == {Outcome.UP_TO_DATE} and fake.ran == []
    pipeline.write("raw.txt", "r2")
    assert build(pipeline, fake, store)["//:raw"] == Outcome.EXECUTED
    pipeline.write("raw.txt", "r1")  # back to a known input: restored from the memory cache
    fake.ran.clear()
    assert build(pipeline, fake, store)["//:raw"] == Outcome.CACHED and "//:raw" not in fake.ran
    pipeline.write("raw.txt", "r3")
    assert build(pipeline, FakeExecutor(fail={"//:raw"}), store)["//:raw"] == Outcome.FAILED
