"""Issue 15, findings 9 and 11: every odd input is a clear error (never exit 3), and secrets are masked as values."""

from __future__ import annotations

import json
import os

import pytest

from conftest import WS
from test_docker import app, busybox_image, dws, remove_test_images  # noqa: F401  (the real-engine fixtures)

BAD = "bad\\xff.txt"  # how a file named b"bad\xff.txt" is shown in messages
PEM = ("-----BEGIN TEST PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q3VfLk8Zr2Tn5xWm0Yp4Jd6Hc9Ua1Se7Rb3Ng0Mf2Lh8Ki5Oj4Pz\n"
       "-----END TEST PRIVATE KEY-----")
SECRET_LINES = PEM.splitlines()


def clear(proc, code: int) -> str:
    """The output of a run that ended with `code` and no internal error or traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}\n{text}"
    assert "internal error" not in text and "Traceback" not in text, text
    return text


def test_metrics_with_a_date_and_binary_are_recorded_as_text(ws):
    """A metrics file holding a YAML date, a timestamp, !!binary and an int key builds, its metrics shown as text;
    one holding a recursive alias builds with no metrics."""
    ws.write("src.yaml", "acc: 0.9\nwhen: 2024-01-01\nat: 2024-01-01 10:00:00\nraw: !!binary aGVsbG8=\n1: one\n")
    ws.write("rec.yaml", "a: &a [*a]\n")
    ws.write("BUILD.yaml", "targets:\n"
             "  m:\n    command: cp src.yaml m.yaml\n    deps: [src.yaml]\n    metrics: [m.yaml]\n"
             "  r:\n    command: cp rec.yaml r.yaml\n    deps: [rec.yaml]\n    metrics: [r.yaml]\n")
    clear(ws.run("build"), 0)
    metrics = {t["target"]: t["metrics"] for t in json.loads(ws.run("metrics", "--json", check=0).stdout)["targets"]}
    assert metrics["//:m"] == {"acc": 0.9, "when": "2024-01-01", "at": "2024-01-01T10:00:00", "raw": "aGVsbG8=",
                               "1": "one"}
    assert metrics["//:r"] == {"": None}  # an unreadable metrics file, as before


PARAMS = {
    "date": ("cutoff: 2024-01-01\n", "params.yaml:1:1: param 'cutoff' in params.yaml is a date"),
    "binary": ("cutoff: !!binary aGVsbG8=\n", "params.yaml:1:1: param 'cutoff' in params.yaml is a !!binary value"),
    "mixed keys": ("cutoff: {1: a, b: c}\n", "param 'cutoff' in params.yaml is a mapping whose keys mix int and str"),
    "nested date": ("cutoff:\n  - 1\n  - {at: 2024-02-02}\n",
                    "params.yaml:3:6: param 'cutoff.1.at' in params.yaml is a date"),
}


@pytest.mark.parametrize("case", sorted(PARAMS))
def test_params_that_are_not_plain_data_name_file_and_line(ws, case):
    """A selected param holding a date, bytes or mixed-type keys is a user error at its line, not a crash in keying."""
    text, expected = PARAMS[case]
    ws.write("params.yaml", text)
    ws.write("BUILD.yaml", "targets:\n  p:\n    command: cat params.yaml\n    params: [cutoff]\n")
    out = clear(ws.run("build"), 2)
    assert expected in out and "quote" in out


def test_param_and_sweep_flags_that_are_not_plain_yaml(ws):
    """--param k=2024-01-01 and --param/--sweep 'k=[x' are clear errors; a quoted string overriding a date in the
    file builds, and the command sees text."""
    ws.write("params.yaml", "cutoff: 2023-06-30\n")
    ws.write("BUILD.yaml", """\
        targets:
          p:
            command: python -c "import yaml; print(type(yaml.safe_load(open('params.yaml'))['cutoff']).__name__)"
            params: [cutoff]
        """)
    for flag, value, expected in (("--param", "cutoff=2024-01-01", "--param cutoff=2024-01-01: the value is a date"),
                                  ("--param", "cutoff=[x", "--param cutoff=[x: the value is not a YAML value"),
                                  ("--sweep", "cutoff=1,[x", "--sweep cutoff=[x: the value is not a YAML value")):
        assert f"invalid {expected}" in clear(ws.run("build", flag, value), 2)
    out = clear(ws.run("build", "-vv", "--param", "cutoff='2024-01-01'"), 0)
    assert "param cutoff overridden (2023-06-30 -> 2024-01-01)" in out and "//:p> str" in out


def test_non_utf8_file_names_are_named_with_escapes(ws):
    """A source (directory dep or glob), a directory out or a package directory named in non-UTF-8: a clear error."""
    (ws.root / "src").mkdir()
    (ws.root / "src" / "ok.txt").write_text("ok")
    bad = os.path.join(os.fsencode(ws.root / "src"), b"bad\xff.txt")
    with open(bad, "w"):
        pass
    for deps, where in (("[src]", " (in dep src)"), ("['src/*.txt']", "")):
        ws.write("BUILD.yaml", f"targets:\n  t:\n    command: ls src\n    deps: {deps}\n")
        assert f"src/{BAD}{where} of //:t has a file name that is not valid UTF-8" in clear(ws.run("build"), 2)
    os.remove(bad)
    ws.write("BUILD.yaml", """\
        targets:
          gen:
            command: mkdir -p gen && touch "gen/$(printf 'bad\\377.txt')"
            outs: [gen]
        """)
    assert f"output gen/{BAD} has a file name that is not valid UTF-8" in clear(ws.run("build"), 1)
    assert not (ws.root / "gen").exists()
    pkg = os.path.join(os.fsencode(ws.root), b"\xff")
    os.mkdir(pkg)
    with open(os.path.join(pkg, b"BUILD.yaml"), "w") as f:
        f.write("targets:\n  t:\n    command: 'true'\n")
    assert "package directory \\xff has a name that is not valid UTF-8" in clear(ws.run("build"), 2)


FIELDS = {
    "timeout .inf": ("timeout: .inf", "t.timeout: expected a finite positive number"),
    "timeout .nan": ("timeout: .nan", "t.timeout: expected a finite positive number"),
    "timeout huge int": ("timeout: 99999999999999999999999", "t.timeout: expected a finite positive number"),
    "timeout impossible date": ("timeout: 2024-13-45", "BUILD.yaml:4:14: invalid YAML value '2024-13-45'"),
    "timeout 5000 digits": ("timeout: " + "9" * 5000, "BUILD.yaml:4:14: invalid YAML value"),
    "tagged bool": ("timeout: !!bool x", "BUILD.yaml:4:14: invalid YAML value 'x': not a valid bool"),
    "tagged empty float": ("timeout: !!float ''", "BUILD.yaml:4:14: invalid YAML value '': not a valid float"),
    "tagged timestamp": ("timeout: !!timestamp x", "BUILD.yaml:4:14: invalid YAML value 'x': not a valid timestamp"),
    "cpus .nan": ("resources: {cpus: .nan}", "t.resources.cpus: expected a finite non-negative number"),
    "memory 1e999": ("resources: {memory: '1e999'}", "t.resources.memory: invalid size '1e999'"),
    "env NUL": ('env: {A: "a\\0b"}', "t.env.A: 'a\\x00b' contains a NUL byte"),
    "env binary": ("env: {A: !!binary aGVsbG8=}", "t.env.A: expected a string or number, got bytes"),
    "command NUL": ('command: ["echo", "a\\0"]', "t.command: 'a\\x00' contains a NUL byte"),
}


@pytest.mark.parametrize("case", sorted(FIELDS))
def test_odd_yaml_values_in_target_fields(ws, case):
    """Infinite, NaN, huge or impossible values and NUL bytes are load errors naming the field (exit 2)."""
    line, expected = FIELDS[case]
    body = line if line.startswith("command") else f"command: 'sleep 0.2'\n    {line}"  # the field on line 4
    ws.write("BUILD.yaml", f"targets:\n  t:\n    {body}\n")
    assert expected in clear(ws.run("build"), 2)


def test_test_retries_infinite_is_a_load_error(ws):
    """retries: .inf on a test target is a load error, not an OverflowError."""
    ws.write("BUILD.yaml", "targets:\n  t:\n    kind: test\n    command: 'exit 1'\n    retries: .inf\n")
    assert "t.retries: expected a finite positive number" in clear(ws.run("test"), 2)


PRINTS = ('echo "$PEM"; python -c "import json, os; s = os.environ[\'PEM\']; print(json.dumps({\'key\': s})); '
          'print(repr(s))"; echo done > out.txt')


def leaked_files(*roots) -> list[str]:
    """Every file under roots holding a line of the secret (or its JSON/repr form)."""
    found = []
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    data = f.read()
                if any(line.encode() in data for line in SECRET_LINES):
                    found.append(os.path.join(dirpath, name))
    return found


def test_multiline_secret_masked_in_every_sink(tmp_path, moto_server):
    """A PEM key printed raw, in JSON and as a repr is in no console line, cached log, record, report or S3 object."""
    url = moto_server.bucket()
    root = tmp_path / "ws"
    root.mkdir()
    (root / "buildml.yaml").write_text("")
    ws = WS(root, tmp_path / "cache")
    base = ws.env
    ws.env = lambda **more: base(**{"BUILDML_REMOTE_CACHE": url, **moto_server.env, "PEM": PEM, **more})
    ws.write("BUILD.yaml", f"targets:\n  show:\n    command: {json.dumps(PRINTS)}\n"
             "    secrets: [PEM]\n    outs: [out.txt]\n")
    out = clear(ws.run("build", "-vv"), 0)
    assert out.count("//:show> ***") >= 4 and '{"key": "***"}' in out and "'***'" in out, out
    assert all(line not in out for line in SECRET_LINES)
    log = clear(ws.run("log", "//:show"), 0)
    assert "***" in log and all(line not in log for line in SECRET_LINES)
    clear(ws.run("report", "--out", str(tmp_path / "site" / "report.html")), 0)
    assert (tmp_path / "site" / "report.html").exists() and (ws.cache / "cas").is_dir()
    assert (root / ".buildml" / "last-build.json").exists()
    assert leaked_files(ws.cache, root / ".buildml", tmp_path / "site") == []
    fs = moto_server.fs()
    objects = fs.find(url.split("://", 1)[1])
    assert len(objects) >= 3  # the manifest, the log, out.txt
    assert [o for o in objects if any(line.encode() in fs.cat(o) for line in SECRET_LINES)] == []


def test_secret_in_an_output_fails_unless_declared(ws):
    """A secret written into an out or a metrics file fails the action naming the secret, never its value;
    secrets_in_outputs: true builds it, and the manifest's metrics still mask it."""
    env = ws.env(PEM=PEM)
    ws.write("dump.py", "import json, os\njson.dump({'acc': 1, 'note': os.environ['PEM']}, open('m.json', 'w'))\n")
    ws.write("BUILD.yaml", """\
        targets:
          leak:
            command: echo "$PEM" > key.pem
            secrets: [PEM]
            outs: [key.pem]
          metric:
            command: python dump.py
            deps: [dump.py]
            secrets: [PEM]
            metrics: [m.json]
        """)
    for target, out in (("//:leak", "key.pem"), ("//:metric", "m.json")):
        text = clear(ws.run("build", target, env=env), 1)
        assert f"out {out} holds the value of secret PEM" in text and "secrets_in_outputs: true" in text
        assert all(line not in text for line in SECRET_LINES) and not (ws.root / out).exists()
    allowed = ws.read("BUILD.yaml").replace("secrets: [PEM]\n", "secrets: [PEM]\n    secrets_in_outputs: true\n")
    ws.write("BUILD.yaml", allowed)
    clear(ws.run("build", env=env), 0)
    assert ws.read("key.pem") == PEM + "\n"
    note = json.loads(ws.run("metrics", "--json", env=env, check=0).stdout)["targets"][0]["metrics"]["note"]
    assert note == "***" and leaked_files(ws.cache / "ac", ws.root / ".buildml") == []


@pytest.mark.docker
def test_multiline_secret_masked_from_a_container(dws):  # noqa: F811  (the fixture imported above)
    """The Docker executor masks each line of a multi-line secret the container prints, in the console and the log."""
    app(dws, 'echo "$PEM"; echo done > out.txt', outs=["out.txt"], secrets=["PEM"])
    out = clear(dws.run("build", "-vv", "//...", env=dws.env(PEM=PEM)), 0)
    assert out.count("//app:run> ***") == len(SECRET_LINES) and all(line not in out for line in SECRET_LINES)
    log = clear(dws.run("log", "//app:run", env=dws.env(PEM=PEM)), 0)
    assert all(line not in log for line in SECRET_LINES) and leaked_files(dws.cache) == []
