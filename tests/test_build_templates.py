"""DVC's pipeline features in BUILD.yaml: `${param}` in commands (keyed: --param and --sweep vary it), foreach and
matrix expansion, dict-form outs, plots (their definitions in the HTML report)."""

from __future__ import annotations

import json

from conftest import executed

PARAMS = "train:\n  lr: 0.1\n  epochs: 3\nseed: 4\n"

BUILD = """\
targets:
  train:
    command: >-
      X=abcd && mkdir -p out && echo "lr=${train.lr} all=${train} shell=${X:+set} len=${#X} lit=\\${train.lr}"
      > out/train.txt
    params: [train]
    outs: [out/train.txt]
  shard:
    foreach: [a, b]
    do:
      command: echo ${item} ${seed} > shard-${item}.txt
      params: [seed]
      outs:
        - shard-${item}.txt
  per_size:
    foreach: {s: 1, m: 2}
    do:
      command: echo ${key}=${item} > size-${key}.txt
      outs:
        - size-${key}.txt
  grid:
    matrix:
      m: [x, y]
      k: [1, 2]
    command: echo ${item.m}${item.k} > grid-${item.m}-${item.k}.txt
    outs:
      - grid-${item.m}-${item.k}.txt:
          cache: false
  curve:
    command: printf 'step,loss\\n0,1.0\\n1,0.5\\n' > curve.csv
    plots:
      - curve.csv:
          x: step
          y: loss
          title: Loss
"""


def workspace(ws):
    ws.write("params.yaml", PARAMS)
    ws.write("BUILD.yaml", BUILD)
    return ws


def test_selected_params_reach_the_command_and_are_keyed(ws):
    workspace(ws)
    summary, events = ws.build_json()
    assert summary["failed"] == 0, events
    text = ws.read("out/train.txt")
    # a selected param is replaced (a section unpacks to --key value); the shell's own ${...} and \${ stay its own
    assert text == "lr=0.1 all=--lr 0.1 --epochs 3 shell=set len=4 lit=${train.lr}\n"

    ws.run("build", "--param", "train.lr=0.5", "//:train", check=0)
    assert ws.read("out/train.txt").startswith("lr=0.5 all=--lr 0.5 --epochs 3")
    summary, events = ws.build_json("//:train")
    assert summary["cached"] == 1 and ws.read("out/train.txt").startswith("lr=0.1 ")

    ws.write("params.yaml", PARAMS.replace("epochs: 3", "epochs: 9"))
    assert "param train changed" in ws.run("status", check=0).stdout
    summary, events = ws.build_json()
    assert executed(events) == ["//:train"]
    assert "--epochs 9" in ws.read("out/train.txt")

    proc = ws.run("build", "--sweep", "train.lr=0.2,0.3", "//:train", check=0)
    assert "2 variants of train.lr" in proc.stdout
    made = sorted(p.read_text().split()[0] for p in (ws.root / "buildml-out/sweep").glob("*/out/train.txt"))
    assert made == ["lr=0.2", "lr=0.3"]


def test_foreach_and_matrix_make_one_target_per_item(ws):
    workspace(ws)
    summary, events = ws.build_json()
    labels = {e["target"] for e in events}
    assert {"//:shard@a", "//:shard@b", "//:per_size@s", "//:per_size@m",
            "//:grid@x-1", "//:grid@x-2", "//:grid@y-1", "//:grid@y-2"} <= labels
    assert ws.read("shard-b.txt") == "b 4\n" and ws.read("size-m.txt") == "m=2\n" and ws.read("grid-y-2.txt") == "y2\n"
    ws.write("params.yaml", PARAMS.replace("seed: 4", "seed: 5"))
    summary, events = ws.build_json()
    assert sorted(executed(events)) == ["//:shard@a", "//:shard@b"]
    assert ws.run("explain", ":shard@b", check=0).stdout.startswith("//:shard@b: up-to-date")


def test_foreach_errors_name_the_line(ws):
    ws.write("params.yaml", PARAMS)
    ws.write("BUILD.yaml", "targets:\n  a:\n    foreach: ${models}\n    do:\n      command: echo\n")
    proc = ws.run("build", check=2)
    assert "BUILD.yaml:3" in proc.stderr and "lists its values" in proc.stderr
    ws.write("BUILD.yaml", "targets:\n  a:\n    foreach: [x]\n    command: echo\n")
    proc = ws.run("build", check=2)
    assert "BUILD.yaml:2" in proc.stderr and "foreach" in proc.stderr and "do:" in proc.stderr
    ws.write("BUILD.yaml", "targets:\n  a:\n    foreach: [x]\n    do:\n      command: echo\n  a@x:\n    command: echo\n")
    proc = ws.run("build", check=2)
    assert "defined twice" in proc.stderr


def test_plot_definitions_are_in_the_report(ws):
    workspace(ws)
    ws.build_json("//:curve")
    ws.run("report", check=0)
    page = (ws.root / ".buildml/report.html").read_text()
    section = page[page.index("<h2>Plots</h2>"):]
    assert "curve.csv" in section and json.dumps("step").replace('"', "&quot;") in section and "Loss" in section


def test_a_tampered_record_of_plots_is_shown_in_its_written_shape_only(ws):
    """last-build.json is a file anyone can edit: plots of the wrong shape are left out, never a traceback."""
    workspace(ws)
    ws.build_json("//:curve")
    path = ws.root / ".buildml/last-build.json"
    record = json.loads(path.read_text())
    record["targets"][0]["plots"] = [1, "x", {"path": "p.csv", "props": {1: 2, "y": {"a": 1}}}]
    path.write_text(json.dumps(record))
    ws.run("report", check=0)
    page = (ws.root / ".buildml/report.html").read_text()
    assert "p.csv" in page[page.index("<h2>Plots</h2>"):]
    record["targets"][0]["plots"] = "not a list"
    path.write_text(json.dumps(record))
    assert "Traceback" not in ws.run("report", check=0).stderr
