"""The example ML monorepo (README's main job), end to end from the CLI: locally and in containers."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import EXAMPLES, WS, executed

PIPELINE = ["//data:raw", "//data:split", "//features:features", "//models:classifier", "//models:evaluate",
            "//serve:classifier"]
OUTPUTS = ("data/raw", "data/split", "features/out", "models/out", "serve/.endpoint", ".buildml")


@pytest.fixture
def mlrepo(tmp_path) -> WS:
    root = tmp_path / "ml-repo"
    shutil.copytree(EXAMPLES / "ml-repo", root, ignore=shutil.ignore_patterns(*OUTPUTS))
    return WS(root, tmp_path / "cache")


def test_main_job_builds_everything_then_nothing(mlrepo):
    """`buildml build //...` builds raw data -> split -> features -> model -> metrics -> endpoint; again: 0 executed."""
    summary, events = mlrepo.build_json("//...")
    assert sorted(executed(events)) == sorted(PIPELINE)
    assert summary["failed"] == 0
    metrics = json.loads(mlrepo.read("models/out/metrics.json"))
    assert metrics["accuracy"] >= 0.9 and metrics["test_rows"] == 450
    assert mlrepo.build_json("//...")[0]["executed"] == 0

    proc = mlrepo.run("test", "//...", check=0)
    assert "2 tests: 2 passed" in proc.stdout
    proc = mlrepo.run("test", "//...", check=0)
    assert "2 cached" in proc.stdout and "every test result came from the cache" in proc.stdout


def test_param_override_retrains_only_the_model_and_its_readers(mlrepo):
    """`--param train.C=0.05` re-runs the model and what reads it; the data steps stay cached."""
    mlrepo.build_json("//...")
    summary, events = mlrepo.build_json("//...", "--param", "train.C=0.05")
    assert sorted(executed(events)) == ["//models:classifier", "//models:evaluate", "//serve:classifier"]
    summary, events = mlrepo.build_json("//...")  # back to params.yaml: every result is in the cache
    assert summary["executed"] == 0
    proc = mlrepo.run("build", "--param", "train.c=1", "//...", check=2)  # a typo is refused, not ignored
    assert "no target selects the param 'train.c'" in proc.stderr and "did you mean 'train.C'" in proc.stderr


@pytest.mark.docker
def test_main_job_in_containers(mlrepo):
    """`--executor docker` runs every step in //images:python; a second build executes nothing."""
    import subprocess

    from conftest import REPO

    subprocess.run([str(REPO / "tools/base-images.sh"), "python"], check=True, capture_output=True)
    summary, events = mlrepo.build_json("--executor", "docker", "//...")
    ran = executed(events)
    assert set(PIPELINE) <= set(ran) and "//images:python" in ran
    finished = {e["target"]: e for e in events}
    assert finished["//models:classifier"]["source"] == "docker"
    assert json.loads(mlrepo.read("models/out/metrics.json"))["accuracy"] >= 0.9
    assert mlrepo.build_json("--executor", "docker", "//...")[0]["executed"] == 0
