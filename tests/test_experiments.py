"""Experiments through the real CLI on a git copy of the quickstart: metrics (current, --history, --compare), params, sweeps."""

import json
import shutil

import pytest
from conftest import EXAMPLES, WS, executed
from test_history import commit, init_repo

from buildml.store import index as manifest_index
from buildml.store.local import LocalStore


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> WS:
    """Commit A (train.C 0.5) built, then commit B (train.C 0.25) built: two results of every trained target."""
    base = tmp_path_factory.mktemp("experiments")
    ws = WS(base / "quickstart", base / "cache")
    shutil.copytree(EXAMPLES / "quickstart", ws.root,
                    ignore=shutil.ignore_patterns(".buildml", "data", "models", "metrics.json", "buildml-out"))
    init_repo(ws.root)
    ws.a = commit(ws.root, "A")
    ws.build_json("//...")
    ws.metrics_a = json.loads(ws.read("metrics.json"))
    ws.write("params.yaml", ws.read("params.yaml").replace("C: 0.5", "C: 0.25"))
    ws.b = commit(ws.root, "B")
    ws.build_json("//...")
    ws.metrics_b = json.loads(ws.read("metrics.json"))
    return ws


@pytest.fixture
def repo(built, tmp_path) -> WS:
    """A private copy of the built repo and its cache, so a test may change it."""
    ws = WS(tmp_path / "quickstart", tmp_path / "cache")
    shutil.copytree(built.root, ws.root, symlinks=True)
    shutil.copytree(built.cache, ws.cache)
    ws.a, ws.b, ws.metrics_a, ws.metrics_b = built.a, built.b, built.metrics_a, built.metrics_b
    return ws


def run_json(ws, *args, check=0):
    """The summary object: the last of the JSON lines every --json output prints."""
    lines = [json.loads(line) for line in ws.run(*args, "--json", check=check).stdout.splitlines()]
    assert lines[-1]["event"] == "summary"
    return lines[-1]


def test_metrics_of_the_current_build(repo):
    """`buildml metrics` shows the metrics of the last build, with its commit; without workspace state, the cache's."""
    info = run_json(repo, "metrics")
    (entry,) = info["targets"]
    assert entry["target"] == "//:evaluate" and entry["metrics"] == repo.metrics_b
    assert entry["commit"] == repo.b and not entry["stale"] and entry["source"] == "workspace"
    text = repo.run("metrics", check=0).stdout
    assert f"at {repo.b[:10]}" in text and f"accuracy   {repo.metrics_b['accuracy']}" in text

    shutil.rmtree(repo.root / ".buildml")  # a fresh clone: the tree's result comes from the cache
    (entry,) = run_json(repo, "metrics", "//:evaluate")["targets"]
    assert entry["source"] == "cache" and entry["metrics"] == repo.metrics_b


def test_history_lists_both_builds_with_commits_and_params(repo):
    """--history: one row per past result, newest first, with the upstream train.C that made each model."""
    foreign = "ee" * 16  # the same label built in another repository that shares the cache
    LocalStore(repo.cache).put_action(foreign, {"key": foreign, "label": "//:evaluate", "exit_code": 0, "outputs": {},
                                                "provenance": {"git_commit": "f" * 40, "started": 9e9}})
    info = run_json(repo, "metrics", "--history", "//:evaluate")
    rows = info["results"]
    assert [r["commit"] for r in rows] == [repo.b, repo.a]
    assert [r["params"]["params.yaml"]["train.C"] for r in rows] == [0.25, 0.5]  # lineage: from //:train's build
    assert [r["own_params"] for r in rows] == [{"params.yaml": {"evaluate.average": "macro"}}] * 2
    assert [r["metrics"] for r in rows] == [repo.metrics_b, repo.metrics_a]
    text = repo.run("metrics", "--history", "//:evaluate", check=0).stdout.splitlines()
    assert text[0] == "//:evaluate: 2 results in the local cache, newest first"
    assert repo.b[:10] in text[2] and "train.C=0.25" in text[2] and repo.a[:10] in text[3] and "train.C=0.5" in text[3]

    train = run_json(repo, "metrics", "--history", "//:train")["results"]  # a target without metrics has history too
    assert [r["params"]["params.yaml"]["train.C"] for r in train] == [0.25, 0.5] and train[0]["metrics"] == {}


def test_compare_with_the_previous_commit(repo):
    """--compare HEAD~1: both commits' metrics side by side, change = current - REV."""
    info = run_json(repo, "metrics", "--compare", "HEAD~1")
    assert info["commit"] == repo.a
    (target,) = info["targets"]
    rows = {r["metric"]: r for r in target["rows"]}
    acc = rows["accuracy"]
    assert acc["rev"] == repo.metrics_a["accuracy"] and acc["current"] == repo.metrics_b["accuracy"]
    assert acc["delta"] == pytest.approx(repo.metrics_b["accuracy"] - repo.metrics_a["accuracy"])
    assert rows["test_rows"]["delta"] == 0
    text = repo.run("metrics", "--compare", "HEAD~1", check=0).stdout
    assert f"metrics: HEAD~1 ({repo.a[:10]}) vs the current builds" in text
    assert "change" in text and f"{acc['delta']:+}" in text


def test_param_override_changes_the_model_and_compare_head_shows_it(repo):
    """Done when: --param changes the model, and `metrics --compare HEAD` shows the delta against HEAD's own result."""
    model = (repo.root / "models/model.pkl").read_bytes()
    summary, events = repo.build_json("--param", "train.C=0.002")
    assert executed(events) == ["//:train", "//:evaluate"]
    assert (repo.root / "models/model.pkl").read_bytes() != model
    now = json.loads(repo.read("metrics.json"))
    assert now != repo.metrics_b
    (target,) = run_json(repo, "metrics", "--compare", "HEAD")["targets"]
    assert target["current"]["stale"]  # built with --param: the tree itself gives another result
    rows = {r["metric"]: r for r in target["rows"]}
    assert rows["accuracy"]["rev"] == repo.metrics_b["accuracy"] and rows["accuracy"]["current"] == now["accuracy"]
    assert rows["accuracy"]["delta"] == pytest.approx(now["accuracy"] - repo.metrics_b["accuracy"])
    assert rows["accuracy"]["delta"] != 0
    assert "stale" in repo.run("metrics", check=0).stdout


def test_compare_says_when_the_revision_was_never_built(repo):
    """A revision whose result is in no cache is named as such, never built to find out."""
    repo.write("params.yaml", repo.read("params.yaml").replace("C: 0.25", "C: 0.75"))
    sha = commit(repo.root, "C")
    (target,) = run_json(repo, "metrics", "--compare", "HEAD")["targets"]
    assert not target["rev"]["built"] and "not in any cache" in target["rev"]["missing"]
    assert target["rows"][0]["rev"] is None and target["rows"][0]["delta"] is None
    text = repo.run("metrics", "--compare", "HEAD", check=0).stdout
    assert "HEAD's result is not in any cache" in text and "buildml build --at HEAD //:evaluate" in text
    assert not list((repo.root / "buildml-out").glob(f"@{sha[:7]}*/models"))  # nothing was built


def test_params_in_effect_and_compare(repo):
    """`buildml params` lists every selected key with its value and users; --compare lists only what differs."""
    rows = {r["param"]: r for r in run_json(repo, "params")["params"]}
    assert rows["train.C"] == {"file": "params.yaml", "param": "train.C", "value": 0.25, "targets": ["//:train"]}
    assert rows["prepare.seed"]["value"] == 7 and rows["evaluate.average"]["targets"] == ["//:evaluate"]
    info = run_json(repo, "params", "--compare", "HEAD~1")
    assert info["commit"] == repo.a
    assert info["params"] == [{"file": "params.yaml", "param": "train.C", "rev": 0.5, "current": 0.25, "targets": ["//:train"]}]
    text = repo.run("params", "--compare", "HEAD~1", check=0).stdout.splitlines()
    assert text[1].split() == ["file", "param", "HEAD~1", "current", "used", "by"]
    assert text[2].split() == ["params.yaml", "train.C", "0.5", "0.25", "//:train"]
    assert "no selected param differs from HEAD" in repo.run("params", "--compare", "HEAD", check=0).stdout
    over = run_json(repo, "params", "//:train", "--param", "train.C=3")["params"]
    assert {r["param"]: r["value"] for r in over} == {"train.C": 3, "train.max_iter": 300, "train.seed": 7}


def test_sweep_builds_every_variant_once(repo):
    """A 2x2 sweep builds 4 variants with 4 distinct models outside the work tree; the same sweep again executes 0."""
    work_model = (repo.root / "models/model.pkl").read_bytes()
    sweep = ["build", "//:train", "--sweep", "train.C=0.01,1", "--sweep", "train.max_iter=50,300", "--sort", "accuracy"]
    first = run_json(repo, *sweep)
    variants = first["variants"]
    assert len(variants) == 4 and first["ok"]
    assert sorted((v["params"]["train.C"], v["params"]["train.max_iter"]) for v in variants) == \
        [(0.01, 50), (0.01, 300), (1, 50), (1, 300)]
    assert first["executed"] == 8 and sum(v["executed"] for v in variants) == 8  # train + evaluate per variant
    models = {(repo.root / "buildml-out/sweep" / v["id"] / "models/model.pkl").read_bytes() for v in variants}
    assert len(models) == 4
    assert all(v["out"] == str(repo.root / "buildml-out/sweep" / v["id"]) for v in variants)
    assert (repo.root / "models/model.pkl").read_bytes() == work_model  # the work tree's outputs are untouched
    accuracy = [v["metrics"]["accuracy"] for v in variants]
    assert accuracy == sorted(accuracy, reverse=True) and len(set(accuracy)) > 1

    again = run_json(repo, *sweep)
    assert again["executed"] == 0 and [v["executed"] for v in again["variants"]] == [0] * 4
    assert [v["id"] for v in again["variants"]] == [v["id"] for v in variants]
    shutil.rmtree(repo.root / "buildml-out/sweep")  # outputs gone: every variant comes back from the cache
    restored = run_json(repo, *sweep[:-1], "accuracy:asc")
    assert restored["executed"] == 0 and restored["cached"] > 0
    assert [v["metrics"]["accuracy"] for v in restored["variants"]] == sorted(accuracy)

    text = repo.run(*sweep, check=0).stdout.splitlines()
    table = text[text.index("sweep: 4 variants of train.C x train.max_iter, best first by accuracy:desc") + 1:]
    assert table[0].split()[:5] == ["rank", "variant", "train.C", "train.max_iter", "accuracy"]
    assert [line.split()[1] for line in table[1:5]] == [v["id"] for v in variants]
    assert "outputs of each variant: buildml-out/sweep/<variant>/" in text
    repo.run("clean", check=0)  # the variants' files go; their results stay in the cache
    assert not (repo.root / "buildml-out/sweep").exists() and not (repo.root / ".buildml/sweep").exists()
    assert run_json(repo, *sweep)["executed"] == 0


def test_sweep_rejects_bad_input(repo):
    """Unknown swept keys, malformed --sweep, --sort alone, an unknown sort metric: exit 2 with the name."""
    proc = repo.run("build", "//:train", "--sweep", "train.lr=0.1,1", check=2)
    assert "--sweep train.lr: no target of this build selects param 'train.lr'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "invalid --sweep 'train.C'" in repo.run("build", "--sweep", "train.C", check=2).stderr
    assert "given twice" in repo.run("build", "--sweep", "train.C=1", "--sweep", "train.C=2", check=2).stderr
    assert "--sort ranks the variants of a sweep" in repo.run("build", "--sort", "accuracy", check=2).stderr
    assert "both swept and set" in repo.run("build", "--sweep", "train.C=1,2", "--param", "train.C=3", check=2).stderr
    assert "--history and --compare" in repo.run("metrics", "--history", "--compare", "HEAD", check=2).stderr
    proc = repo.run("metrics", "//:train", check=2)
    assert "no target matched by //:train declares metrics" in proc.stderr and "//:evaluate" in proc.stderr
    proc = repo.run("build", "//:train", "--sweep", "train.C=0.25", "--sort", "loss", check=2)  # all cached: C=0.25 is B
    assert "--sort loss: no such metric" in proc.stderr and "accuracy" in proc.stderr
    assert "sweep: 1 variants of train.C" in proc.stdout  # the table is still shown


def test_manifest_index_follows_the_cache(tmp_path):
    """The history index picks up new manifests and drops entries gc removed, opening only new manifests."""
    store = LocalStore(tmp_path / "cache")
    state = tmp_path / "state"

    def put(key, label):
        store.put_action(key, {"key": key, "label": label, "exit_code": 0, "outputs": {"o": {"digest": key[::-1], "size": 1}},
                               "metrics": {}, "provenance": {"started": 1.0, "params": {"p.yaml": {"a": 1}}}})

    def labels():
        index = manifest_index.open_index(store, state)
        try:
            return [e["label"] for l in ("//:x", "//:y") for e in index.of_label(l)], index.producers("bb" * 16)
        finally:
            index.close()

    put("aa" * 16, "//:x")
    assert labels() == (["//:x"], [])
    put("bb" * 16, "//:y")
    store.action_path("aa" * 16).unlink()
    found, producers = labels()
    assert found == ["//:y"] and [(p["key"], p["params"]) for p in producers] == [("bb" * 16, {"p.yaml": {"a": 1}})]
    store.action_path("bb" * 16).write_text("{}")  # indexed already: not re-read
    assert labels()[0] == ["//:y"]
    (state / manifest_index.INDEX_FILE).write_bytes(b"not a database" * 100)  # a broken index is rebuilt
    assert labels()[0] == []  # ...from the cache as it is now (the entry above no longer parses)


def test_a_failing_variant_fails_the_sweep_and_ranks_last(repo):
    """One variant failing (a negative C) fails the sweep (exit 1) and shows its error; the others are still built and ranked."""
    lines = [json.loads(l) for l in repo.run("build", "//:train", "--sweep", "train.C=-1,0.25", "--sort", "accuracy",
                                             "--json", check=1).stdout.splitlines()]
    assert [l["event"] for l in lines] == ["variant", "variant", "summary"]  # a line per variant as it ends
    info = lines[-1]
    assert [(v["params"]["train.C"], v["ok"]) for v in info["variants"]] == [(0.25, True), (-1, False)]
    assert info["variants"][0]["executed"] == 0  # C=0.25 is commit B's build, already cached
    failed = info["variants"][1]
    assert failed["failed"] == 1 and failed["metrics"] == {} and "//:train" in failed["errors"][0]
    text = repo.run("build", "//:train", "--sweep", "train.C=-1,0.25", check=1).stdout
    assert "FAILED //:train" in text
    row = next(l for l in text.splitlines() if l.startswith("1 "))  # no --sort: sweep order, -1 first
    assert row.split()[2] == "-1" and row.split()[-1] == "FAILED"


def test_sort_is_checked_before_the_sweep_runs(repo, ws):
    """--sort without any metrics target fails before a variant runs; an unknown metric stops the sweep after the first variant."""
    ws.write("params.yaml", "a: 1\n")
    ws.write("BUILD.yaml", "targets:\n  make:\n    command: echo ran >> ../ran.txt; echo x > out.txt\n"
                           "    params: [a]\n    outs: [out.txt]\n")
    proc = ws.run("build", "//:make", "--sweep", "a=1,2,3", "--sort", "accuracy", check=2)
    assert "--sort accuracy: no target of this sweep declares metrics" in proc.stderr
    assert "variant" not in proc.stdout and not (ws.root / "buildml-out/sweep").exists()  # nothing was built
    lines = [json.loads(l) for l in repo.run("build", "//:train", "--sweep", "train.C=0.25,0.3,0.35,0.4", "--sort", "acuracy",
                                             "--jobs", "1", "--json", check=2).stdout.splitlines()]
    variants = [l for l in lines if l["event"] == "variant"]
    assert len(variants) < 4 and variants[0]["ok"]  # stopped once the first variant's metrics lacked it
    error = lines[-1]
    assert "acuracy: no such metric" in json.dumps(error) and "accuracy" in json.dumps(error)
    assert "sweep was stopped" in json.dumps(error)
