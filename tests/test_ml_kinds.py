"""The dataset and model kinds, dataset checks, --param overrides, and user-defined kinds (rule modules, templates)."""

import gzip
import json

import pytest

from buildml.load.checks import run_check
from conftest import executed

DATASET = """
targets:
  raw:
    kind: dataset
    command: python make.py {rows}
    deps: [make.py]
    outs: [data/raw.csv]
    checks:
      - {{path: data/raw.csv, min_rows: 5, columns: [label, p0]}}
"""
MAKE = """
import sys
rows = int(sys.argv[1])
with open("data/raw.csv", "w") as f:
    f.write("label,p0\\n" + "".join(f"{i % 10},{i}\\n" for i in range(rows)))
"""


@pytest.fixture
def dataset_ws(ws):
    ws.write("make.py", MAKE)
    return ws


def test_dataset_check_failure_names_the_check_and_stores_nothing(dataset_ws):
    """Too few rows fails the target with the check's name and counts; nothing is cached or materialized."""
    ws = dataset_ws
    ws.write("BUILD.yaml", DATASET.format(rows=3))
    proc = ws.run("build", check=1)
    assert "check min_rows failed on data/raw.csv: 3 rows, expected at least 5" in proc.stdout
    assert not (ws.root / "data/raw.csv").exists()
    assert "check min_rows failed" in ws.run("log", "//:raw", check=0).stdout
    ws.write("BUILD.yaml", DATASET.format(rows=8))
    summary, events = ws.build_json()
    assert executed(events) == ["//:raw"] and ws.read("data/raw.csv").count("\n") == 9
    summary, _ = ws.build_json()
    assert summary["executed"] == 0


def test_dataset_missing_column_is_named(dataset_ws):
    """A required column the data lacks fails the columns check, listing what the file has."""
    ws = dataset_ws
    ws.write("BUILD.yaml", DATASET.format(rows=8).replace("[label, p0]", "[label, pixel0]"))
    proc = ws.run("build", check=1)
    assert "check columns failed on data/raw.csv: missing column pixel0 (it has: label, p0)" in proc.stdout


def test_checks_are_part_of_the_key(dataset_ws):
    """Tightening a check re-runs the dataset (and it then fails), although command and inputs are unchanged."""
    ws = dataset_ws
    ws.write("BUILD.yaml", DATASET.format(rows=8))
    ws.build_json()
    ws.write("BUILD.yaml", DATASET.format(rows=8).replace("min_rows: 5", "min_rows: 50"))
    assert "check min_rows failed on data/raw.csv: 8 rows, expected at least 50" in ws.run("build", check=1).stdout


def test_directory_out_is_checked_file_by_file(ws):
    """A directory out: rows are summed over its data files; each file must have the columns."""
    ws.write("BUILD.yaml", """
        targets:
          shards:
            kind: dataset
            command: "mkdir -p out && printf 'a,b\\n1,2\\n3,4\\n' > out/s1.csv && printf 'a\\n5\\n' > out/s2.csv"
            outs: [out/]
            checks:
              - {path: out/, min_rows: 3}
              - {path: out/, columns: [b]}
        """)
    proc = ws.run("build", check=1)
    assert "check columns failed on out/s2.csv: missing column b (it has: a)" in proc.stdout


def test_check_formats(tmp_path):
    """csv, tsv, gzipped csv and jsonl are read; a parquet file without pyarrow says so."""
    (tmp_path / "a.tsv").write_text("x\ty\n1\t2\n")
    with gzip.open(tmp_path / "b.csv.gz", "wt") as f:
        f.write("x\n1\n2\n3\n")
    (tmp_path / "c.jsonl").write_text('{"x": 1, "y": 2}\n\n{"x": 3}\n')
    (tmp_path / "d.jsonl").write_text('{"x": 1}\nnot json\n')
    assert run_check({"path": "a.tsv", "columns": ("y",), "min_rows": 1}, str(tmp_path)) == ""
    assert run_check({"path": "b.csv.gz", "max_rows": 2}, str(tmp_path)) == \
        "check max_rows failed on b.csv.gz: 3 rows, expected at most 2"
    assert run_check({"path": "c.jsonl", "columns": ("y",)}, str(tmp_path)).startswith(
        "check columns failed on c.jsonl: missing column y")  # not every row has y
    assert "line 2 is not valid JSON" in run_check({"path": "d.jsonl", "not_empty": True}, str(tmp_path))
    (tmp_path / "e.csv").write_text("x\n")
    assert run_check({"path": "e.csv", "not_empty": True}, str(tmp_path)) == "check not_empty failed on e.csv: no rows"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # without the parquet extra: the check says what to install
        (tmp_path / "f.parquet").write_bytes(b"PAR1")
        assert "needs pyarrow" in run_check({"path": "f.parquet", "min_rows": 1}, str(tmp_path))
    else:  # the [test] extra installs pyarrow: real parquet files are read
        pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "f.parquet")
        assert run_check({"path": "f.parquet", "columns": ("x",), "min_rows": 3}, str(tmp_path)) == ""
        assert run_check({"path": "f.parquet", "min_rows": 4}, str(tmp_path)) == \
            "check min_rows failed on f.parquet: 3 rows, expected at least 4"


@pytest.mark.parametrize("check, message, hint", [
    ("{path: other.csv, min_rows: 1}", "check path 'other.csv' is not among the target's outs", "list it"),
    ("{path: data/raw.csv, min_row: 1}", "unknown check 'min_row'", "did you mean 'min_rows'"),
    ("{path: data/raw.csv, min_rows: many}", "min_rows must be a non-negative integer", ""),
    ("{min_rows: 1}", "a check is a mapping with a path", ""),
])
def test_bad_checks_are_load_errors_with_location(dataset_ws, check, message, hint):
    """A wrong check is refused before anything runs: exit 2, BUILD.yaml:line, the field, a hint."""
    ws = dataset_ws
    ws.write("BUILD.yaml", DATASET.format(rows=8).replace("{{path: data/raw.csv, min_rows: 5, columns: [label, p0]}}", check)
             .replace("{path: data/raw.csv, min_rows: 5, columns: [label, p0]}", check))
    proc = ws.run("build", check=2)
    assert "BUILD.yaml:9:" in proc.stderr and message in proc.stderr and hint in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_needs_command_and_an_out(ws):
    """A model without outs, or without a command, is a load error naming the target."""
    ws.write("BUILD.yaml", "targets:\n  m:\n    kind: model\n    command: train\n")
    proc = ws.run("build", check=2)
    assert "BUILD.yaml:2:" in proc.stderr and "model 'm' needs at least one out" in proc.stderr
    ws.write("BUILD.yaml", "targets:\n  m:\n    kind: model\n    outs: [m.pkl]\n")
    assert "missing required field 'command' for kind 'model'" in ws.run("build", check=2).stderr


MODEL = """
targets:
  classifier:
    kind: model
    command: "python -c \\"import yaml; p = yaml.safe_load(open('params.yaml')); open('model.txt', 'w').write(str(p)); open('m.json', 'w').write('{\\\\\\"acc\\\\\\": 0.9}')\\""
    params: [train.lr, train.seed]
    outs: [model.txt]
    metrics: [m.json]
    resources: {cpus: 1}
"""


def test_param_override_is_reported_keyed_and_in_provenance(ws):
    """--param train.lr=0.05: the run says it is an override, the key differs, show names the override."""
    ws.write("BUILD.yaml", MODEL)
    ws.write("params.yaml", "train: {lr: 0.1, seed: 7}\n")
    ws.run("build", check=0)
    proc = ws.run("build", "--param", "train.lr=0.05", check=0)
    assert "RUN       //:classifier [local] param train.lr overridden (0.1 -> 0.05)" in proc.stdout
    assert "0.05" in ws.read("model.txt")
    info = json.loads(ws.run("show", "--json", "--param", "train.lr=0.05", "//:classifier", check=0).stdout)
    assert info["provenance"]["param_overrides"] == [{"param": "train.lr", "file": "params.yaml", "from": 0.1, "to": 0.05}]
    assert info["provenance"]["params"] == {"params.yaml": {"train.lr": 0.05, "train.seed": 7}}
    assert info["metrics"] == {"m.json": {"acc": 0.9}}
    text = ws.run("show", "--param", "train.lr=0.05", "//:classifier", check=0).stdout
    assert "override:  train.lr = 0.05 (--param; params.yaml has 0.1)" in text
    plain = json.loads(ws.run("show", "--json", "//:classifier", check=0).stdout)
    assert "param_overrides" not in plain["provenance"] and plain["key"] != info["key"]
    assert "CACHED    //:classifier" in ws.run("build", check=0).stdout  # back to the file's value: from the cache
    again = ws.run("build", "--param", "train.lr=0.05", check=0).stdout
    assert "CACHED    //:classifier" in again  # the override's result is cached under its own key


RULE = '''
"""A kind that writes a greeting."""
from buildml.rule import Attr, Rule


class Greeting(Rule):
    kind = "greeting"
    attrs = {"who": Attr("string", "whom to greet", required=True)}

    def analyse(self, target):
        who = target.attrs["who"]
        return self.base_spec(target, ("sh", "-c", f"echo hello {who} > hello.txt"), outs=("hello.txt",))
'''


def test_user_rule_module_defines_a_kind(ws):
    """rules: {greeting: rules/greeting.py} in buildml.yaml adds a kind whose targets build like any other."""
    ws.write("buildml.yaml", "rules: {greeting: rules/greeting.py}\n")
    ws.write("rules/greeting.py", RULE)
    ws.write("BUILD.yaml", "targets:\n  hi:\n    kind: greeting\n    who: world\n")
    summary, events = ws.build_json()
    assert executed(events) == ["//:hi"] and ws.read("hello.txt") == "hello world\n"
    assert ws.build_json()[0]["executed"] == 0
    ws.write("BUILD.yaml", "targets:\n  hi:\n    kind: greeting\n    whom: world\n")
    assert "unknown field 'whom' for kind 'greeting'" in ws.run("build", check=2).stderr
    ws.write("BUILD.yaml", "targets:\n  hi:\n    kind: greetin\n    who: world\n")
    assert "did you mean 'greeting'?" in ws.run("build", check=2).stderr


def test_editing_a_rule_module_reruns_its_targets(ws):
    """The rule module's content is part of its version, so a changed rule re-runs its targets."""
    ws.write("buildml.yaml", "rules: {greeting: rules/greeting.py}\n")
    ws.write("rules/greeting.py", RULE)
    ws.write("BUILD.yaml", "targets:\n  hi:\n    kind: greeting\n    who: world\n")
    ws.build_json()
    ws.write("rules/greeting.py", RULE.replace("echo hello", "echo hi"))
    assert executed(ws.build_json()[1]) == ["//:hi"] and ws.read("hello.txt") == "hi world\n"


@pytest.mark.parametrize("source, message", [
    ("def broken(:\n", "rule module rules/greeting.py has a syntax error"),
    ("import nonexistent_module_xyz\n", "rule module rules/greeting.py failed while importing it: ModuleNotFoundError"),
    ("x = 1\n", "rule module rules/greeting.py defines no subclass of buildml.rule.Rule"),
    ("from buildml.rule import Rule\nclass G(Rule):\n    kind = 'greeting'\n", "has no analyse() method"),
    (RULE.replace('who = target.attrs["who"]', "who = 1 / 0"), "rules/greeting.py:11:0: rule module rules/greeting.py "
                                                               "failed while analyse(): ZeroDivisionError"),
])
def test_broken_rule_module_is_a_clear_error_naming_the_file(ws, source, message):
    """A rule module that does not import, defines no rule, or raises is exit 2 naming the file, no traceback."""
    ws.write("buildml.yaml", "rules: {greeting: rules/greeting.py}\n")
    ws.write("rules/greeting.py", source)
    ws.write("BUILD.yaml", "targets:\n  hi:\n    kind: greeting\n    who: world\n")
    proc = ws.run("build", check=2)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_rule_registration_errors(ws):
    """A missing module file or a built-in kind name is reported at its line of buildml.yaml."""
    ws.write("BUILD.yaml", "targets: {}\n")
    ws.write("buildml.yaml", "jobs: 2\nrules:\n  greeting: rules/nope.py\n")
    proc = ws.run("build", check=2)
    assert "buildml.yaml:3:" in proc.stderr and "rule module rules/nope.py (kind 'greeting') does not exist" in proc.stderr
    ws.write("buildml.yaml", "rules:\n  model: rules/model.py\n")
    assert "kind 'model' is built in" in ws.run("build", check=2).stderr


def test_template_presets_attributes_of_a_kind(ws):
    """templates: {gpu_model: {kind: model, resources: {gpus: 1}}}: its targets are models asking for a GPU."""
    ws.write("buildml.yaml", """
        executors: {local: {gpus: 1}}
        templates:
          gpu_model: {kind: model, resources: {gpus: 1}, env: {FRAMEWORK: torch}}
        """)
    ws.write("BUILD.yaml", """
        targets:
          train:
            kind: gpu_model
            command: "echo $FRAMEWORK $CUDA_VISIBLE_DEVICES > model.txt"
            outs: [model.txt]
            resources: {memory: 1GB}
        """)
    env = ws.env()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    ws.run("build", check=0, env=env)
    assert ws.read("model.txt") == "torch 0\n"  # preset env, the one declared GPU
    ws.write("buildml.yaml", ws.read("buildml.yaml").replace("gpus: 1}}", "gpus: 0}}"))
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("echo", "echo x"))
    proc = ws.run("build", check=2)
    assert "//:train asks for gpus: 1, but executor 'local' has 0" in proc.stdout


def test_template_errors_point_at_buildml_yaml(ws):
    """A template of an unknown kind, or with a field its kind lacks, is an error at its line."""
    ws.write("BUILD.yaml", "targets: {}\n")
    ws.write("buildml.yaml", "templates:\n  gpu_model: {kind: modle}\n")
    proc = ws.run("build", check=2)
    assert "buildml.yaml:2:" in proc.stderr and "unknown kind 'modle'" in proc.stderr and "did you mean 'model'?" in proc.stderr
    ws.write("buildml.yaml", "templates:\n  gpu_model:\n    kind: model\n    resource: {gpus: 1}\n")
    proc = ws.run("build", check=2)
    assert "buildml.yaml:4:" in proc.stderr and "unknown field 'resource'" in proc.stderr
