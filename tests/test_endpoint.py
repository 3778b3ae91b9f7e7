"""The endpoint kind and `buildml run`: real servers started by the real CLI, answering real HTTP requests."""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import BIN, EXAMPLES, WS, default_sigint, executed
from test_docker import busybox_image, python_image  # noqa: F401  (session fixtures: the local base images)

MODEL_BUILD = """\
targets:
  classifier:
    kind: model
    command: python3 train.py
    deps: [train.py]
    params: [bias]
    outs: [out/model.json]
"""
TRAIN = """\
import json, yaml
bias = yaml.safe_load(open("params.yaml"))["bias"]
json.dump({"bias": bias}, open("out/model.json", "w"))
"""
APP = """\
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

MODE = os.environ.get("MODE", "ok")
print("loading ../models/out/model.json", flush=True)
if MODE == "crash":
    sys.exit("boom: the model file is corrupt")
MODEL = json.load(open("../models/out/model.json"))


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200 if self.path == "/health" and MODE != "sick" else 503,
                   {"status": MODE, "buildml_key": os.environ.get("BUILDML_ENDPOINT_KEY")})

    def do_POST(self):
        pixels = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["pixels"]
        self.reply(200, {"digit": (sum(pixels) + MODEL["bias"]) % 10})


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def endpoint_build(port: int, **fields) -> str:
    extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in fields.items())
    return ("targets:\n  classifier:\n    kind: endpoint\n    models: [//models:classifier]\n"
            f"    command: python3 app.py\n    deps: [app.py]\n    port: {port}\n{extra}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as reply:
        return json.loads(reply.read())


def docker(*args, check=True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def our_containers(status: str = "") -> list[str]:
    return docker("ps", "-aq", "--filter", "label=buildml", *(("--filter", f"status={status}") if status else ())).split()


class Served:
    """`buildml run ARGS` in the background, its output collected line by line."""

    def __init__(self, ws: WS, *args):
        self.proc = subprocess.Popen([str(BIN / "buildml"), "run", *args], cwd=ws.root, env=ws.env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        self.out, self.err, self.lines = [], [], queue.Queue()
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream, sink) -> None:
        for line in stream:
            sink.append(line)
            self.lines.put(line)

    def url(self, timeout: float = 300) -> str:
        """The URL printed once the server is healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out:
                found = re.match(r"serving (\S+) at (http://127\.0\.0\.1:\d+)", line)
                if found:
                    return found.group(2)
            assert self.proc.poll() is None, f"buildml run exited {self.proc.returncode}:\n{self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"no URL within {timeout}s:\n{self.output()}")

    def stop(self, sig=signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # let the readers drain
        return code

    def output(self) -> str:
        return "".join(self.out) + "\n--- stderr ---\n" + "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def served():
    started = []

    def start(ws, *args):
        started.append(Served(ws, *args))
        return started[-1]
    yield start
    for s in started:
        s.kill()


@pytest.fixture
def ews(ws) -> WS:
    """A small workspace: //models:classifier writes out/model.json (its bias param); //serve:classifier serves it."""
    ws.port = free_port()
    ws.write("models/BUILD.yaml", MODEL_BUILD)
    ws.write("models/train.py", TRAIN)
    ws.write("models/params.yaml", "bias: 3\n")
    ws.write("serve/BUILD.yaml", endpoint_build(ws.port))
    ws.write("serve/app.py", APP)
    return ws


@pytest.fixture
def ml_repo(tmp_path) -> WS:
    """A copy of the example ML monorepo."""
    root = tmp_path / "ml-repo"
    shutil.copytree(EXAMPLES / "ml-repo", root, ignore=shutil.ignore_patterns(".buildml", "out", "raw", "split", ".endpoint"))
    return WS(root, tmp_path / "cache")


def digits(n: int):
    from sklearn.datasets import load_digits

    data = load_digits()
    return [(list(map(float, data.data[i])), int(data.target[i])) for i in range(n)]


# -- local -------------------------------------------------------------------------------------
def test_example_repo_serves_predictions_locally(ml_repo, served):
    """`buildml run //serve:classifier` on the example builds the pipeline, serves real predictions, stops on Ctrl-C."""
    run = served(ml_repo, "//serve:classifier")
    url = run.url()
    port = int(url.rsplit(":", 1)[1])
    answers = [(post(url + "/predict", {"pixels": pixels})["digit"], truth) for pixels, truth in digits(20)]
    assert sum(a == t for a, t in answers) >= 18, answers
    with pytest.raises(urllib.error.HTTPError) as bad:
        post(url + "/predict", {"pixels": [1, 2]})
    assert bad.value.code == 400
    assert run.stop() == 130, run.output()
    assert "stopped //serve:classifier" in "".join(run.err) and "Traceback" not in run.output()
    assert '"POST /predict HTTP/1.1" 200' in "".join(run.out)  # the server's log was streamed
    assert not port_open(port)
    descriptor = json.loads(ml_repo.read("serve/.endpoint/classifier.json"))
    assert descriptor["port"] == 8080 and descriptor["health"] == "/health"
    assert set(descriptor["files"]) == {"models/out/model.pkl", "serve/app.py", "features/src/featurize.py"}


def test_local_server_sees_only_its_inputs_and_port(ews, served):
    """The local server runs in a sandbox holding the endpoint's inputs, with declared env and PORT only."""
    ews.write("serve/BUILD.yaml", endpoint_build(ews.port, env={"MODE": "ok"}))
    ews.write("serve/app.py", "import os, json\nprint(json.dumps({'cwd': os.getcwd(), 'env': sorted(os.environ),"
              " 'tree': sorted(os.listdir('..'))}), flush=True)\n" + APP)
    run = served(ews, "//serve:classifier")
    url = run.url()
    assert url == f"http://127.0.0.1:{ews.port}"
    assert post(url + "/predict", {"pixels": [1, 2, 3]}) == {"digit": 9}
    assert run.stop(signal.SIGTERM) == 130
    seen = json.loads(next(l for l in run.out if l.startswith("{")))
    assert seen["cwd"].endswith("/ws/serve") and seen["tree"] == ["models", "serve"]
    assert "MODE" in seen["env"] and "PORT" in seen["env"] and "BUILDML_CACHE_DIR" not in seen["env"]
    assert not port_open(ews.port)


def test_status_live_says_what_made_a_running_endpoint_stale(ews, served):
    """`status --live` (the endpoint buildml started, or any at a URL) says whether it serves what the graph builds
    now, and names the training param that changed; `buildml run` leaves an unchanged endpoint alone, and replaces
    a stale one, after which it is current."""
    first = served(ews, "//serve:classifier")
    url = first.url()
    for args in ((), (url,)):
        proc = ews.run("status", "//serve:classifier", "--live", *args, "--exit-code", check=0)
        assert f"//serve:classifier at {url}: serves what the graph builds now" in proc.stdout
    again = ews.run("run", "//serve:classifier", check=0, timeout=120)
    assert "already serves this build" in again.stderr and first.proc.poll() is None

    ews.write("models/params.yaml", "bias: 4\n")
    for args in ((), (url,)):
        proc = ews.run("status", "//serve:classifier", "--live", *args, "--exit-code", check=1)
        assert f"//serve:classifier at {url}: stale" in proc.stdout
        assert "//models:classifier: param bias changed (3 -> 4)" in proc.stdout, proc.stdout
    ews.run("build", "//models:classifier", check=0)  # rebuilt, not yet served: the chain names the param too
    proc = ews.run("status", "//serve:classifier", "--live", "--json", check=0)
    info = json.loads(proc.stdout.splitlines()[-1])
    assert info["stale"] and "//models:classifier: param bias changed (3 -> 4)" in info["reasons"], info
    assert any(r.startswith("//serve:classifier: input models/out/model.json changed") for r in info["reasons"])

    second = served(ews, "//serve:classifier")
    new_url = second.url()
    assert first.wait() == 130  # the stale one was stopped
    assert "serves an older build" in "".join(second.err)
    proc = ews.run("status", "//serve:classifier", "--live", "--exit-code", check=0)
    assert f"//serve:classifier at {new_url}: serves what the graph builds now" in proc.stdout
    assert post(new_url + "/predict", {"pixels": [1, 2, 3]}) == {"digit": 0}
    assert second.stop() == 130
    proc = ews.run("status", "//serve:classifier", "--live", check=2)
    assert "no server of //serve:classifier that `buildml run` started is running" in proc.stderr


def test_a_record_naming_another_process_is_never_acted_on(ews, served):
    """.buildml/endpoints.json is a file: a pid in it that is not a `buildml run` is neither trusted nor signalled."""
    first = served(ews, "//serve:classifier")
    first.url()
    other = subprocess.Popen(["sleep", "60"])
    try:
        path = ews.root / ".buildml" / "endpoints.json"
        record = json.loads(path.read_text())
        record["//serve:classifier"]["pid"] = other.pid
        path.write_text(json.dumps(record))
        proc = ews.run("status", "//serve:classifier", "--live", check=2)
        assert "no server of //serve:classifier that `buildml run` started is running" in proc.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert first.stop() == 130


def test_taken_port_moves_to_a_free_one_and_explicit_port_must_be_free(ews, served):
    """With the endpoint's port taken the server moves to a free port and says so; a taken --port is a usage error."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ews.port))
        holder.listen()
        run = served(ews, "//serve:classifier")
        url = run.url()
        assert url != f"http://127.0.0.1:{ews.port}"
        assert f"port {ews.port} is in use; serving on port {url.rsplit(':', 1)[1]} instead" in "".join(run.err)
        assert post(url + "/predict", {"pixels": [7]}) == {"digit": 0}
        assert run.stop() == 130
        proc = ews.run("run", "--port", str(ews.port), "//serve:classifier", check=2)
        assert f"port {ews.port} on 127.0.0.1 is in use" in proc.stderr


def test_server_crashing_at_start_gives_its_log_tail(ews):
    """A server that exits before it is healthy fails `buildml run` with exit 1 and the end of its log."""
    ews.write("serve/BUILD.yaml", endpoint_build(ews.port, env={"MODE": "crash"}))
    proc = ews.run("run", "//serve:classifier", check=1, timeout=120)
    assert "the server of //serve:classifier exited with code 1 before it was healthy" in proc.stderr
    assert "loading ../models/out/model.json" in proc.stderr and "boom: the model file is corrupt" in proc.stderr
    assert "internal error" not in proc.stderr


def test_server_never_healthy_times_out_and_is_stopped(ews):
    """A server whose health check never passes fails after --ready-timeout, and is killed (its port is closed)."""
    ews.write("serve/BUILD.yaml", endpoint_build(ews.port, env={"MODE": "sick"}))
    start = time.monotonic()
    proc = ews.run("run", "--ready-timeout", "2", "//serve:classifier", check=1, timeout=120)
    assert time.monotonic() - start < 60
    assert f"did not answer 200 at http://127.0.0.1:{ews.port}/health within 2s" in proc.stderr
    assert "loading ../models/out/model.json" in proc.stderr
    assert not port_open(ews.port)


def test_endpoint_key_covers_code_model_command_port_and_health(ews):
    """The endpoint rebuilds when its code, the model's bytes, its port or health change, and only then."""
    summary, events = ews.build_json("//serve:classifier")
    assert executed(events) == ["//models:classifier", "//serve:classifier"]
    descriptor = json.loads(ews.read("serve/.endpoint/classifier.json"))
    assert descriptor["command"] == ["sh", "-c", "python3 app.py"] and descriptor["models"] == ["//models:classifier"]
    assert set(descriptor["files"]) == {"models/out/model.json", "serve/app.py"}
    assert ews.build_json("//serve:classifier")[0]["executed"] == 0
    ews.write("models/params.yaml", "bias: 4\n")
    assert executed(ews.build_json("//serve:classifier")[1]) == ["//models:classifier", "//serve:classifier"]
    ews.write("serve/app.py", APP + "\n# edited\n")
    assert executed(ews.build_json("//serve:classifier")[1]) == ["//serve:classifier"]
    for change in ({"health": "/ready"}, {"command": "python3 app.py --v2"}):
        ews.write("serve/BUILD.yaml", endpoint_build(ews.port, **change).replace("    command: python3 app.py\n", "", 1)
                  if "command" in change else endpoint_build(ews.port, **change))
        assert executed(ews.build_json("//serve:classifier")[1]) == ["//serve:classifier"], change
    ews.write("serve/BUILD.yaml", endpoint_build(ews.port + 1 if ews.port < 65535 else 1024))
    assert executed(ews.build_json("//serve:classifier")[1]) == ["//serve:classifier"]
    ews.write("serve/notes.md", "not an input\n")
    assert ews.build_json("//serve:classifier")[0]["executed"] == 0


@pytest.mark.parametrize("field, value, message", [
    ("port", 70000, "port must be a whole number from 1 to 65535"),
    ("health", "health", "health must be a URL path starting with /"),
    ("env", {"PORT": "1"}, "env PORT is set by buildml from the endpoint's port"),
    ("models", ["models/out/model.json"], "models entry 'models/out/model.json' is not a label"),
    ("replicas", 2, "unknown field 'replicas' for kind 'endpoint'"),
])
def test_bad_endpoint_fields_are_user_errors(ews, field, value, message):
    """A malformed endpoint field is a usage error naming the BUILD file line and the field."""
    text = endpoint_build(value) if field == "port" else endpoint_build(ews.port, **{field: value})
    if field == "models":
        text = text.replace("    models: [//models:classifier]\n", "")
    ews.write("serve/BUILD.yaml", text)
    proc = ews.run("run", "//serve:classifier", check=2)
    assert message in proc.stderr and "serve/BUILD.yaml:" in proc.stderr and "Traceback" not in proc.stderr


def test_run_needs_one_endpoint(ews):
    """`buildml run` on a target of another kind says so (exit 2)."""
    proc = ews.run("run", "//models:classifier", check=2)
    assert "//models:classifier is a model target, not an endpoint" in proc.stderr


# -- Docker -------------------------------------------------------------------------------------
@pytest.fixture
def test_repository():
    """A unique repository for serving images, removed afterwards; no buildml container may be left."""
    repository = f"buildml-test/{uuid.uuid4().hex[:10]}"
    yield repository
    refs = [r for r in docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).split()
            if r.startswith(repository)]
    if refs:
        docker("rmi", "-f", *refs, check=False)
    assert our_containers() == [], "a buildml container was left behind"


def tags(repository: str) -> list[str]:
    return docker("images", "--format", "{{.Tag}}", repository).split()


@pytest.mark.docker
def test_example_repo_serves_from_its_serving_image(ml_repo, served, python_image, test_repository):
    """In Docker the endpoint builds a key-tagged serving image once; `buildml run` serves predictions from it."""
    serve_build = ml_repo.read("serve/BUILD.yaml").replace("    port: 8080\n", f"    port: 8080\n    repository: {test_repository}\n")
    ml_repo.write("serve/BUILD.yaml", serve_build)
    summary, events = ml_repo.build_json("--executor", "docker", "//serve:classifier")
    key = {e["target"]: e["key"] for e in events}["//serve:classifier"]
    assert "//serve:classifier" in executed(events) and tags(test_repository) == [key]
    config = json.loads(docker("image", "inspect", f"{test_repository}:{key}"))[0]["Config"]
    assert config["User"] == "65534:65534" and "8080/tcp" in config["ExposedPorts"]
    assert config["WorkingDir"] == "/workspace/serve" and "PORT=8080" in config["Env"]
    assert config["Cmd"] == ["sh", "-c", "python3 app.py"]
    assert ml_repo.build_json("--executor", "docker", "//serve:classifier")[0]["executed"] == 0
    shutil.rmtree(ml_repo.root / ".buildml")
    shutil.rmtree(ml_repo.cache)  # nothing remembered: the tag in the engine is found, nothing is built twice
    ml_repo.build_json("--executor", "docker", "//serve:classifier")
    assert "already in the engine; build skipped" in ml_repo.run("log", "//serve:classifier", check=0).stdout
    assert tags(test_repository) == [key]

    run = served(ml_repo, "--executor", "docker", "//serve:classifier")
    url = run.url()
    running = our_containers("running")
    assert len(running) == 1
    info = json.loads(docker("inspect", running[0]))[0]
    assert info["Config"]["Image"] == f"{test_repository}:{key}" and info["Mounts"] == []  # the model is in the image
    answers = [(post(url + "/predict", {"pixels": pixels})["digit"], truth) for pixels, truth in digits(10)]
    assert sum(a == t for a, t in answers) >= 9, answers
    assert run.stop() == 130, run.output()
    assert our_containers() == [] and not port_open(int(url.rsplit(":", 1)[1]))


@pytest.mark.docker
def test_container_crashing_at_start_gives_its_log_tail(ws, busybox_image, test_repository):
    """A serving container that exits at start fails `buildml run` (exit 1) with its log tail; it is removed."""
    ws.write("images/BUILD.yaml", "targets:\n  base:\n    kind: image\n")
    ws.write("images/Dockerfile", f"FROM {busybox_image}\n")
    ws.write("serve/BUILD.yaml", f"""\
        targets:
          api:
            kind: endpoint
            image: //images:base
            repository: {test_repository}
            command: echo "starting on $PORT"; echo "no model found" >&2; exit 3
            port: {free_port()}
        """)
    proc = ws.run("run", "//serve:api", check=1, timeout=300)
    assert "the server of //serve:api exited with code 3 before it was healthy" in proc.stderr
    assert "starting on" in proc.stderr and "no model found" in proc.stderr
    assert len(tags(test_repository)) == 1
