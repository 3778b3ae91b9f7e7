"""Provenance through the real CLI: `show`, `diff REV1 REV2`, and `verify` (identical, within tolerance, diverged)."""

import json

from test_history import commit, init_repo

TRAIN = """\
import json, yaml
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
open("model.txt", "w").write(f"weights for lr={lr}\\n")
json.dump({"accuracy": round(0.5 + lr, 4), "loss": round(1 - lr, 4)}, open("metrics.json", "w"))
"""

BUILD = """\
targets:
  train:
    command: python train.py
    deps: [train.py]
    params: [train.lr]
    outs: [model.txt]
    metrics: [metrics.json]
  noisy:
    command: python -c "import os; open('out.bin', 'wb').write(os.urandom(8))"
    outs: [out.bin]
  jitter:
    command: >-
      python -c "import json, random; json.dump({'accuracy': 0.9 + random.random() * 1e-5,
      'rows': 10}, open('m.json', 'w'))"
    metrics: [m.json]
    tolerance: {accuracy: 0.001}
  drift:
    command: >-
      python -c "import json, random; json.dump({'accuracy': random.random()}, open('d.json', 'w'))"
    metrics: [d.json]
    tolerance: {accuracy: 0.001}
"""


def _workspace(ws):
    ws.write("train.py", TRAIN)
    ws.write("params.yaml", "train:\n  lr: 0.1\n")
    ws.write("BUILD.yaml", BUILD)


def test_show_prints_the_manifest_provenance_and_output_locations(ws):
    """show --json has the action key, inputs with digests, command, params, executor, times, commit and outputs."""
    _workspace(ws)
    init_repo(ws.root)
    sha = commit(ws.root, "A")
    ws.run("build", ":train", check=0)
    info = json.loads(ws.run("show", ":train", "--json", check=0).stdout)
    p = info["provenance"]
    assert info["current"] and len(info["key"]) == 32 and info["exit_code"] == 0
    assert p["command"] == ["sh", "-c", "python train.py"] and set(p["inputs"]) == {"train.py"}
    assert p["params"] == {"params.yaml": {"train.lr": 0.1}} and p["executor"] == "local"
    assert p["git_commit"] == sha and p["git_dirty"] is False and p["buildml_version"]
    assert p["started"] > 0 and "host" in p and "image_key" in p and "env" in p
    assert info["metrics"] == {"metrics.json": {"accuracy": 0.6, "loss": 0.9}}
    model = {o["path"]: o for o in info["outputs"]}["model.txt"]
    assert model["file"] == str(ws.root / "model.txt") and model["blob"].startswith(str(ws.cache))
    text = ws.run("show", "//:train", check=0).stdout
    assert "python train.py" in text and "param:     train.lr = 0.1" in text and f"at {ws.root / 'model.txt'}" in text

    ws.write("params.yaml", "train:\n  lr: 0.2\n")
    assert "(last build; the current tree's build differs)" in ws.run("show", ":train", check=0).stdout
    assert "has not been built here" in ws.run("show", ":noisy", check=2).stderr


def test_diff_between_two_commits(ws):
    """diff REV1 REV2 shows the changed param, the metrics side by side and the changed output."""
    _workspace(ws)
    init_repo(ws.root)
    a = commit(ws.root, "A")
    ws.run("build", ":train", check=0)
    ws.write("params.yaml", "train:\n  lr: 0.3\n")
    commit(ws.root, "B")
    proc = ws.run("diff", a, "HEAD", ":train", check=2)
    assert "has not been built at HEAD" in proc.stderr
    ws.run("build", ":train", check=0)
    text = ws.run("diff", a, "HEAD", ":train", check=0).stdout
    assert "train.lr  0.1  ->  0.3" in text and "command: same" in text and "image: same" in text
    assert "accuracy  0.6  ->  0.8" in text and "inputs: same" in text
    info = json.loads(ws.run("diff", a, "HEAD", "//:train", "--json", check=0).stdout)
    assert info["params"] == [["train.lr", 0.1, 0.3]] and info["keys"][0] != info["keys"][1]
    assert info["outputs"][0][0] == "metrics.json" and info["outputs"][1][0] == "model.txt"
    assert "same action key" in ws.run("diff", "HEAD", "HEAD", ":train", check=0, timeout=60).stdout
    ws.write("notes.txt", "not an input of train\n")
    c = commit(ws.root, "C")  # the same key as B: one cached result, made at B
    info = json.loads(ws.run("diff", "HEAD~1", "HEAD", ":train", "--json", check=0).stdout)
    assert info["keys"][0] == info["keys"][1]
    assert info["commits"][1] == c and info["commits"][0] != c  # each side labelled with its own revision
    assert info["built_at"] == [info["commits"][0]] * 2
    assert f"vs HEAD ({c[:10]})" in ws.run("diff", "HEAD~1", "HEAD", ":train", check=0).stdout


def test_verify_identical_tolerance_and_nondeterminism(ws):
    """verify re-executes: a deterministic target is identical, jitter is within tolerance, random bytes diverge."""
    _workspace(ws)
    init_repo(ws.root)
    sha = commit(ws.root, "A")
    ws.run("build", check=0)
    recorded = json.loads(ws.run("show", ":noisy", "--json", check=0).stdout)["outputs"][0]["digest"]

    out = ws.run("verify", ":train", ":jitter", check=0).stdout
    assert "//:train: identical" in out
    assert "//:jitter: within tolerance" in out and "metric accuracy: 0.9" in out and "(tolerance 0.001: ok)" in out

    proc = ws.run("verify", ":noisy", ":drift", check=1)
    assert "//:noisy: DIVERGED: non-deterministic" in proc.stdout
    assert f"file out.bin: {recorded[:12]} -> " in proc.stdout
    assert "//:drift: DIVERGED" in proc.stdout and "(tolerance 0.001: exceeded)" in proc.stdout
    after = json.loads(ws.run("show", ":noisy", "--json", check=0).stdout)["outputs"][0]["digest"]
    assert after == recorded  # verify never replaces the recorded result

    verdicts = json.loads(ws.run("verify", "--at", sha, ":train", "--json", check=0).stdout)["verdicts"]
    assert verdicts[0]["outcome"] == "identical" and verdicts[0]["ok"]


def test_verify_runs_through_the_build_ledger(ws):
    """verify re-executes a GPU target under the build's resource ledger: it is handed the same single GPU
    (CUDA_VISIBLE_DEVICES) as in the build, so a target that records its devices verifies identical.
    Outside the ledger it would see every GPU (no CUDA_VISIBLE_DEVICES) and diverge."""
    ws.write("buildml.yaml", "executors:\n  local: {gpus: 2}\n")  # declared: this machine has no GPU
    ws.write("BUILD.yaml", """\
targets:
  gpu:
    command: python -c "import os; open('dev.txt', 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'all'))"
    outs: [dev.txt]
    resources: {gpus: 1}
""")
    env = ws.env()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    ws.run("build", ":gpu", check=0, env=env)
    assert (ws.root / "dev.txt").read_text() == "0"
    out = ws.run("verify", ":gpu", check=0, env=env).stdout
    assert "//:gpu: identical" in out

    ws.write("BUILD.yaml", (ws.root / "BUILD.yaml").read_text().replace("gpus: 1", "gpus: 3"))
    proc = ws.run("verify", ":gpu", check=2, env=env)  # the ledger refuses what the executor cannot hold
    assert "asks for gpus: 3" in proc.stderr + proc.stdout
