"""The quickstart pipeline through the real CLI, real subprocesses and real scikit-learn."""

import json

from conftest import executed


def test_quickstart_end_to_end(quickstart):
    """Build, no-op, touch, param edits, unselected keys, early cutoff and status, as the issue lists them."""
    ws = quickstart
    summary, events = ws.build_json("//...")
    assert summary["executed"] == 3 and summary["failed"] == 0
    metrics = json.loads(ws.read("metrics.json"))
    assert metrics["accuracy"] > 0.9

    summary, _ = ws.build_json("//...")
    assert summary["executed"] == 0

    (ws.root / "src/train.py").touch()
    summary, _ = ws.build_json("//...")
    assert summary["executed"] == 0

    params = ws.read("params.yaml")
    ws.write("params.yaml", params.replace("C: 0.5", "C: 0.05"))
    status = ws.run("status", check=0).stdout
    assert "param train.C changed (0.5 -> 0.05)" in status
    summary, events = ws.build_json("//...")
    assert executed(events) == ["//:train", "//:evaluate"]

    ws.write("params.yaml", ws.read("params.yaml") + "unused:\n  key: 1\n")
    summary, _ = ws.build_json("//...")
    assert summary["executed"] == 0

    ws.write("src/prepare.py", ws.read("src/prepare.py") + "\n# a comment changes nothing in the output\n")
    assert "input src/prepare.py changed" in ws.run("status", check=0).stdout
    summary, events = ws.build_json("//...")
    assert executed(events) == ["//:prepare"]


def test_status_json_and_explain(quickstart):
    """status --json lists stale targets with reasons; explain names the last inputs."""
    ws = quickstart
    stale = json.loads(ws.run("status", "--json", check=0).stdout)["stale"]
    assert {s["target"] for s in stale} == {"//:prepare", "//:train", "//:evaluate"}
    assert stale[0]["reasons"] == ["never built"]
    ws.run("build", check=0)
    out = ws.run("explain", ":train", check=0).stdout
    assert "up-to-date" in out and "data/prepared/train.csv" in out and "param train.C = 0.5" in out


def test_outputs_are_restored_and_printed(quickstart):
    """The build prints each requested target's outputs; a deleted model comes back from the cache."""
    ws = quickstart
    out = ws.run("build", "//:train", check=0).stdout
    assert "models/model.pkl" in out
    model = (ws.root / "models/model.pkl").read_bytes()
    (ws.root / "models/model.pkl").unlink()
    summary, events = ws.build_json("//:train")
    assert summary["executed"] == 0 and summary["cached"] == 1
    assert (ws.root / "models/model.pkl").read_bytes() == model


def test_query_graph_and_clean(quickstart):
    """query, graph and clean work on the example."""
    ws = quickstart
    assert ws.run("query", "deps", "//:evaluate", check=0).stdout.split() == ["//:prepare", "//:train"]
    assert ws.run("query", "rdeps", "//:prepare", check=0).stdout.split() == ["//:evaluate", "//:quality_gate", "//:train"]
    dot = ws.run("graph", "--format", "dot", check=0).stdout
    assert '"//:prepare" -> "//:train"' in dot and "fde2e1" in dot  # stale nodes highlighted
    assert "graph LR" in ws.run("graph", "--format", "mermaid", check=0).stdout
    ws.run("build", check=0)
    ws.run("clean", check=0)
    assert not (ws.root / "models/model.pkl").exists()
    assert (ws.root / "src/train.py").exists()
    summary, _ = ws.build_json()
    assert summary["executed"] == 0 and summary["cached"] == 3
