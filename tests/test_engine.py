"""The engine with a recording executor: transcripts of what ran, build after build."""

import os

import pytest

from buildml.api import Options, Session
from buildml.executors.fake import FakeExecutor

PIPELINE = """
targets:
  raw:
    command: gen
    deps: [raw.txt]
    outs: [data/raw.csv]
  features:
    command: feat
    deps: [":raw", src/feat.py]
    params: [feat.window]
    outs: [data/features.csv]
  train:
    command: train
    deps: [data/features.csv]
    params: [train.lr]
    outs: [model.bin]
  unrelated:
    command: other
    deps: [other.txt]
    outs: [other.out]
"""


@pytest.fixture
def pipeline(ws):
    ws.write("BUILD.yaml", PIPELINE)
    ws.write("raw.txt", "r1")
    ws.write("src/feat.py", "print(1)")
    ws.write("other.txt", "o")
    ws.write("params.yaml", "feat: {window: 3}\ntrain: {lr: 0.1, epochs: 3}\n")
    return ws


def build(ws, fake, patterns=("//...",), **options):
    session = Session(ws.root, Options(cache_dir=str(ws.cache), **options), executor=fake)
    return session.build(list(patterns))


def test_second_build_runs_nothing(pipeline):
    """Build everything, then again: the second build executes nothing."""
    fake = FakeExecutor()
    build(pipeline, fake)
    assert sorted(fake.ran) == ["//:features", "//:raw", "//:train", "//:unrelated"]
    fake.ran.clear()
    build(pipeline, fake)
    assert fake.ran == []


def test_param_change_reruns_readers_and_dependents_only(pipeline):
    """Changing feat.window re-runs features; train re-runs only if features' bytes changed."""
    fake = FakeExecutor()
    build(pipeline, fake)
    pipeline.write("params.yaml", "feat: {window: 4}\ntrain: {lr: 0.1, epochs: 3}\n")
    fake.ran.clear()
    fake.outputs["//:features"] = "different bytes"
    build(pipeline, fake)
    assert fake.ran == ["//:features", "//:train"]


def test_unselected_param_changes_nothing(pipeline):
    """train.epochs is not selected by any target: editing it executes nothing."""
    fake = FakeExecutor()
    build(pipeline, fake)
    pipeline.write("params.yaml", "feat: {window: 3}\ntrain: {lr: 0.1, epochs: 99}\n")
    fake.ran.clear()
    build(pipeline, fake)
    assert fake.ran == []


def test_early_cutoff(pipeline):
    """A source edit that leaves a target's output bytes unchanged does not re-run its dependents."""
    fake = FakeExecutor()
    build(pipeline, fake)
    pipeline.write("src/feat.py", "print(1)  # a comment")
    fake.ran.clear()
    build(pipeline, fake)
    assert fake.ran == ["//:features"]


def test_touch_without_change_runs_nothing(pipeline):
    """A new mtime with the same content is not a change."""
    fake = FakeExecutor()
    build(pipeline, fake)
    os.utime(pipeline.root / "raw.txt", ns=(1, 1))
    fake.ran.clear()
    build(pipeline, fake)
    assert fake.ran == []


def test_only_requested_targets_and_their_deps(pipeline):
    """Building one target builds what it needs and nothing else."""
    fake = FakeExecutor()
    build(pipeline, fake, ["//:features"])
    assert fake.ran == ["//:raw", "//:features"]


def test_failure_stops_and_marks_dependents_not_built(pipeline):
    """A failing target's dependents are reported not built; --keep-going still builds the rest."""
    fake = FakeExecutor(fail={"//:raw"})
    finished = build(pipeline, fake, jobs=1)
    status = {str(r.label): r.status for r in finished.results}
    assert status["//:raw"] == "failed"
    assert status["//:features"] == "not built" and status["//:train"] == "not built"
    fake2 = FakeExecutor(fail={"//:raw"})
    finished = build(pipeline, fake2, keep_going=True, jobs=1)
    assert {str(r.label): r.status for r in finished.results}["//:unrelated"] in ("executed", "up-to-date")


def test_deleted_output_is_restored_from_cache_without_running(pipeline):
    """An output removed from the workspace comes back from the cache; nothing executes."""
    fake = FakeExecutor()
    build(pipeline, fake)
    (pipeline.root / "model.bin").unlink()
    fake.ran.clear()
    finished = build(pipeline, fake)
    assert fake.ran == []
    assert (pipeline.root / "model.bin").read_text() == "//:train"
    assert {str(r.label): r.status for r in finished.results}["//:train"] == "cached"


def test_reverting_a_change_is_a_cache_hit(pipeline):
    """Going back to an earlier param value restores the earlier outputs without running."""
    fake = FakeExecutor()
    build(pipeline, fake)
    pipeline.write("params.yaml", "feat: {window: 3}\ntrain: {lr: 0.2, epochs: 3}\n")
    build(pipeline, fake)
    pipeline.write("params.yaml", "feat: {window: 3}\ntrain: {lr: 0.1, epochs: 3}\n")
    fake.ran.clear()
    build(pipeline, fake)
    assert fake.ran == []


def test_status_reasons_name_the_change(pipeline):
    """A dry run names the changed file and param key, and marks dependents stale."""
    fake = FakeExecutor()
    build(pipeline, fake)
    pipeline.write("raw.txt", "r2")
    pipeline.write("params.yaml", "feat: {window: 3}\ntrain: {lr: 0.5, epochs: 3}\n")
    session = Session(pipeline.root, Options(cache_dir=str(pipeline.cache)), executor=fake)
    finished = session.build(["//..."], dry_run=True)
    reasons = {str(r.label): r.reasons for r in finished.results}
    assert any(r.startswith("input raw.txt changed") for r in reasons["//:raw"])
    assert reasons["//:features"] == ("dependency //:raw is stale",)
    assert len(fake.ran) == 4  # the dry run executed nothing


def test_an_existing_file_not_written_by_buildml_is_moved_aside(pipeline):
    """A file standing where an out goes is never overwritten: it is displaced with a warning."""
    pipeline.write("other.out", "precious hand-written file")
    fake = FakeExecutor()
    build(pipeline, fake)
    assert (pipeline.root / "other.out").read_text() == "//:unrelated"
    displaced = list((pipeline.root / ".buildml" / "displaced").rglob("other.out"))
    assert len(displaced) == 1 and displaced[0].read_text() == "precious hand-written file"
