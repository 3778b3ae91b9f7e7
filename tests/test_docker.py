"""Image targets and the Docker executor on the real Docker engine of this machine (base images made locally)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from conftest import EXAMPLES, REPO, BIN, WS, default_sigint, executed

pytestmark = pytest.mark.docker
BUSYBOX = "buildml-base/busybox:1"
PYTHON = "buildml-base/python-ml:bookworm"
TEST_REPO = "buildml-test"
RUN_AS = (os.getuid(), os.getgid()) if os.getuid() else (65534, 65534)  # containers never run as root


def docker(*args, check=True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def our_containers() -> list[str]:
    """Every container buildml started (running or stopped) that still exists."""
    return docker("ps", "-aq", "--filter", "label=buildml").split()


@pytest.fixture(scope="session")
def busybox_image():
    subprocess.run([str(REPO / "tools/base-images.sh"), "busybox"], check=True, capture_output=True)
    return BUSYBOX


@pytest.fixture(scope="session")
def python_image():
    subprocess.run([str(REPO / "tools/base-images.sh"), "python"], check=True, capture_output=True)
    return PYTHON


@pytest.fixture(scope="session", autouse=True)
def remove_test_images():
    yield
    refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).split()
    ours = [r for r in refs if r.startswith(TEST_REPO + "/")]
    if ours:
        docker("rmi", "-f", *ours, check=False)


@pytest.fixture
def dws(ws, busybox_image) -> WS:
    """A workspace with //images:tools (busybox, a unique repository) and a helper to add targets."""
    ws.repo = f"{TEST_REPO}/{uuid.uuid4().hex[:10]}"
    ws.write("images/BUILD.yaml", f"""\
        targets:
          tools:
            kind: image
            repository: {ws.repo}
        """)
    ws.write("images/Dockerfile", f"FROM {busybox_image}\nCOPY hello.txt /opt/hello.txt\n")
    ws.write("images/hello.txt", f"hello {ws.repo}\n")
    ws.write("images/.dockerignore", "notes.md\nscratch/\n")
    ws.write("images/notes.md", "not part of the image\n")
    yield ws
    assert our_containers() == [], "a buildml container was left behind"


def app(ws: WS, command: str, **fields) -> None:
    """//app:run, in //images:tools, running `command`."""
    lines = [f"      {k}: {json.dumps(v)}" for k, v in fields.items()]
    ws.write("app/BUILD.yaml", "targets:\n  run:\n    image: //images:tools\n"
             f"    command: {json.dumps(command)}\n" + "".join(l[2:] + "\n" for l in lines))


def image_tags(repo: str) -> list[str]:
    return docker("images", "--format", "{{.Tag}}", repo).split()


def test_image_key_stable_and_dockerignore(dws):
    """The image is tagged with its key; a rebuild and a .dockerignore'd edit change nothing; a context edit rebuilds."""
    app(dws, "cat /opt/hello.txt > out.txt", outs=["out.txt"])
    summary, events = dws.build_json("//...")
    assert executed(events) == ["//images:tools", "//app:run"]
    key = {e["target"]: e["key"] for e in events}["//images:tools"]
    assert image_tags(dws.repo) == [key]
    assert dws.read("app/out.txt") == f"hello {dws.repo}\n"

    assert dws.build_json("//...")[0]["executed"] == 0
    dws.write("images/notes.md", "edited\n")
    dws.write("images/scratch/big.bin", "x" * 1000)
    summary, events = dws.build_json("//...")
    assert summary["executed"] == 0

    dws.write("images/hello.txt", "changed\n")
    status = dws.run("status", check=0).stdout
    assert "input images/hello.txt changed" in status
    summary, events = dws.build_json("//...")
    assert executed(events) == ["//images:tools", "//app:run"]
    assert dws.read("app/out.txt") == "changed\n"
    assert len(image_tags(dws.repo)) == 2


def test_present_image_skips_build_and_missing_image_rebuilds(dws):
    """With the tag in the engine no build runs even without state or cache; a removed image is rebuilt with a reason."""
    app(dws, "true")
    dws.build_json("//images:tools")
    shutil.rmtree(dws.root / ".buildml")
    shutil.rmtree(dws.cache)
    dws.build_json("//images:tools")
    assert "already in the engine; build skipped" in dws.run("log", "//images:tools", check=0).stdout

    docker("rmi", "-f", *[f"{dws.repo}:{t}" for t in image_tags(dws.repo)])
    assert "is not in the Docker engine" in dws.run("status", check=0).stdout
    summary, events = dws.build_json("//...")
    assert executed(events) == ["//images:tools", "//app:run"]
    assert "Successfully tagged" in dws.run("log", "//images:tools", check=0).stdout


def test_outputs_owned_by_invoking_user(dws):
    """The container runs as the caller's uid:gid (nobody's for root), not the image's USER; outputs belong to the caller."""
    dws.write("images/Dockerfile", dws.read("images/Dockerfile") + "USER 4321:4321\n")
    app(dws, "mkdir out; id -u > out/uid; id -g >> out/uid; touch out/made", outs=["out/"])
    dws.build_json("//...")
    assert dws.read("app/out/uid").split() == [str(RUN_AS[0]), str(RUN_AS[1])]
    for name in ("uid", "made"):
        st = os.stat(dws.root / "app/out" / name)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_network_off_unless_declared(dws):
    """A socket to the engine's bridge gateway is unreachable without network: true and reaches the host with it."""
    gateway = docker("network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}").strip()
    probe = f"{{ nc -w 3 {gateway} 9 </dev/null 2>&1; echo rc=$?; ls /sys/class/net; }}"
    app(dws, probe + " > net.txt", outs=["net.txt"])
    dws.build_json("//...")
    offline = dws.read("app/net.txt")
    assert "Network is unreachable" in offline and "rc=1" in offline and "eth0" not in offline
    app(dws, probe + " > net.txt", outs=["net.txt"], network=True)
    dws.build_json("//...")
    online = dws.read("app/net.txt")
    assert ("Connection refused" in online or "rc=0" in online) and "unreachable" not in online and "eth0" in online


def test_env_is_declared_only_and_secrets_masked(dws):
    """The caller's env does not leak in; declared env does; a secret reaches the command but never the log."""
    app(dws, "env | sort > env.txt; echo token=$TOKEN", outs=["env.txt"], env={"MODE": "fast"}, secrets=["TOKEN"],
        secrets_in_outputs=True)  # env.txt holds the secret on purpose: it shows the command saw it
    dws.run("build", "//...", env=dws.env(LEAKY="leak", TOKEN="s3cr3t-value"), check=0)
    env = dict(l.split("=", 1) for l in dws.read("app/env.txt").splitlines() if "=" in l)
    assert env["MODE"] == "fast" and env["TOKEN"] == "s3cr3t-value" and "LEAKY" not in env
    assert env["HOME"] == "/buildml/home" and env["PWD"] == "/workspace/app" and env["PATH"] == "/bin"
    log = dws.run("log", "//app:run", check=0).stdout
    assert "token=***" in log and "s3cr3t" not in log


def test_inputs_read_only_and_exit_code_decides(dws):
    """An input cannot be written in the container; a non-zero exit fails the target with its log tail."""
    dws.write("app/in.txt", "input\n")
    app(dws, "echo overwritten > in.txt; echo still-running; exit 3", deps=["in.txt"])
    summary, events = dws.build_json("//...", check=1)
    failed = {e["target"]: e for e in events}["//app:run"]
    assert failed["status"] == "failed" and "exit code 3" in failed["error"]
    log = dws.run("log", "//app:run", check=0).stdout
    assert "Read-only file system" in log and "still-running" in log
    assert dws.read("app/in.txt") == "input\n"


def test_timeout_kills_the_container(dws):
    """A target running past its timeout is killed, fails with a clear reason, and its container is gone."""
    app(dws, "sleep 60", timeout=1)
    start = time.monotonic()
    summary, events = dws.build_json("//...", check=1)
    assert time.monotonic() - start < 30
    assert "timed out after 1s" in {e["target"]: e for e in events}["//app:run"]["error"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_containers(dws, sig):
    """Ctrl-C (or SIGTERM) in the middle of a run stops and removes every container; docker ps -a shows none."""
    app(dws, "sleep 120")
    dws.build_json("//images:tools")
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "//..."], cwd=dws.root, env=dws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 60
    while not docker("ps", "-q", "--filter", "label=buildml").split():
        assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert our_containers() == []


def test_containers_of_a_killed_build_are_swept(dws):
    """Containers of a buildml killed with SIGKILL are removed by the next containerized build."""
    app(dws, "sleep 120")
    dws.build_json("//images:tools")
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "//..."], cwd=dws.root, env=dws.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not docker("ps", "-q", "--filter", "label=buildml").split():
        assert time.monotonic() < deadline, "the container never started"
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert our_containers()
    app(dws, "true")
    dws.build_json("//...")
    assert our_containers() == []


def test_gpu_request_on_gpu_less_engine(dws):
    """Asking for a GPU on an engine without a GPU runtime fails with a message saying so, no traceback."""
    app(dws, "true", resources={"gpus": 1})
    proc = dws.run("build", "//...", check=1)
    assert "no GPU runtime" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_engine_unreachable_and_executor_local(dws):
    """An unreachable engine names the host and --executor local; with it the target runs here without images."""
    app(dws, "echo ran-here > out.txt", outs=["out.txt"])
    env = dws.env(DOCKER_HOST="unix:///nonexistent/docker.sock")
    proc = dws.run("build", "//...", env=env, check=1)
    text = proc.stdout + proc.stderr
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in text and "--executor local" in text
    assert "Traceback" not in text
    proc = dws.run("build", "--executor", "local", "//...", env=env, check=0)
    assert dws.read("app/out.txt") == "ran-here\n"


def test_image_build_failure_shows_log_tail(dws):
    """A failing Dockerfile step fails the image target with the engine's message and the build log's tail."""
    dws.write("images/Dockerfile", f"FROM {BUSYBOX}\nRUN echo about-to-fail && false\n")
    app(dws, "true")
    proc = dws.run("build", "//...", check=1)
    text = proc.stdout + proc.stderr
    assert "image build failed" in text and "about-to-fail" in text
    assert "//app:run" in text  # reported as not built


def test_big_context_warning(dws):
    """A context over docker.context_warn_mb is built with a warning naming its biggest paths."""
    dws.write("buildml.yaml", "docker: {context_warn_mb: 1}\n")
    dws.write("images/weights/big.bin", "w" * (3 << 20))
    app(dws, "true")
    proc = dws.run("build", "//...", check=0)
    assert "WARNING" in proc.stdout and "weights/ (3.0 MB)" in proc.stdout


def test_image_label_must_name_an_image(dws):
    """image: pointing at a non-image target is a BUILD error with its location (exit 2)."""
    dws.write("app/BUILD.yaml", "targets:\n  a:\n    command: 'true'\n  run:\n    image: :a\n    command: 'true'\n")
    proc = dws.run("build", "//...", check=2)
    assert "app/BUILD.yaml:5" in proc.stderr and "not an image" in proc.stderr


def test_containerized_quickstart(tmp_path, python_image):
    """The docker quickstart: 0 actions and 0 image builds the second time; ignored edits change nothing; a Dockerfile edit re-runs all."""
    ws = WS(tmp_path / "qs", tmp_path / "cache")
    shutil.copytree(EXAMPLES / "quickstart-docker", ws.root,
                    ignore=shutil.ignore_patterns(".buildml", "data", "models", "metrics.json"))
    ws.write("docker/Dockerfile", ws.read("docker/Dockerfile") + f"# {uuid.uuid4().hex}\n")
    summary, events = ws.build_json("//...")
    assert executed(events) == ["//:python", "//:prepare", "//:train", "//:evaluate"]
    first_key = {e["target"]: e["key"] for e in events}["//:python"]
    assert json.loads(ws.read("metrics.json"))["accuracy"] > 0.9
    assert os.stat(ws.root / "models/model.pkl").st_uid == os.getuid()
    assert ws.build_json("//...")[0]["executed"] == 0

    ws.write("docker/NOTES.md", "edited notes\n")
    assert ws.build_json("//...")[0]["executed"] == 0

    ws.write("docker/Dockerfile", ws.read("docker/Dockerfile") + "ENV EXTRA=1\n")
    summary, events = ws.build_json("//...")
    assert executed(events) == ["//:python", "//:prepare", "//:train", "//:evaluate"]
    repo_tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "buildml/python").split()
    docker("rmi", *[t for t in repo_tags if t.split(":")[1] in {e["key"] for e in events} | {first_key}], check=False)
    assert our_containers() == []


def test_shell_in_container_and_sandbox(dws):
    """`buildml shell` runs in the target's container (inputs read-only in place) or, for local targets, its sandbox."""
    dws.write("app/in.txt", "input\n")
    app(dws, "true", deps=["in.txt"])
    dws.write("app/BUILD.yaml", dws.read("app/BUILD.yaml") + "  here:\n    command: 'true'\n    deps: [in.txt]\n")
    proc = dws.run("shell", "//app:run", "-c", "pwd; cat in.txt; cat /opt/hello.txt; id -u; echo x > in.txt", check=1)
    assert proc.stdout.splitlines()[:4] == ["/workspace/app", "input", f"hello {dws.repo}", str(RUN_AS[0])]
    assert "Read-only file system" in proc.stderr
    proc = dws.run("shell", "//app:here", "-c", "ls; exit 4", check=4)
    assert proc.stdout.split() == ["BUILD.yaml", "in.txt"] or proc.stdout.split() == ["in.txt"]


def test_dep_outputs_enter_the_context_and_secrets_stay_out(dws):
    """An image can COPY another target's outputs (e.g. wheels fetched with a secret); the secret is in no image, key or log."""
    dws.write("images/BUILD.yaml", dws.read("images/BUILD.yaml") + (
        "  wheels:\n"
        "    command: mkdir -p wheels && echo \"fetched with ${#TOKEN}-char token\" > wheels/pkg.whl\n"
        "    secrets: [TOKEN]\n"
        "    outs: [wheels/]\n"))
    dws.write("images/Dockerfile", dws.read("images/Dockerfile") + "COPY wheels/ /opt/wheels/\n")
    app(dws, "cat /opt/wheels/pkg.whl > out.txt", outs=["out.txt"])
    dws.run("build", "//...", env=dws.env(TOKEN="tok-123456"), check=0)
    assert dws.read("app/out.txt") == "fetched with 10-char token\n"
    key = json.loads(dws.run("explain", "--json", "//images:tools", env=dws.env(TOKEN="tok-123456"), check=0).stdout)
    assert "images/wheels/pkg.whl" in key["last_inputs"]
    history = docker("history", "--no-trunc", f"{dws.repo}:{key['key']}")
    blobs = subprocess.run(["grep", "-rl", "tok-123456", str(dws.cache), str(dws.root / ".buildml")],
                           capture_output=True, text=True).stdout
    assert "tok-123456" not in history and blobs == ""


def test_copy_transfer_for_engines_without_this_disk(dws):
    """docker.transfer: copy (the default for ssh:// and tcp:// engines) sends inputs as a tar and fetches outs back."""
    dws.write("buildml.yaml", "docker: {transfer: copy}\n")
    dws.write("app/data/in.txt", "input\n")
    app(dws, "mkdir -p res; cat data/in.txt /opt/hello.txt > res/both.txt; id -u > res/uid; echo $HOME > res/home",
        deps=["data/in.txt"], outs=["res/"])
    summary, events = dws.build_json("//...")
    assert executed(events) == ["//images:tools", "//app:run"]
    assert dws.read("app/res/both.txt") == f"input\nhello {dws.repo}\n"
    assert dws.read("app/res/uid").strip() == str(RUN_AS[0]) and dws.read("app/res/home").strip() == "/buildml/home"
    assert os.stat(dws.root / "app/res/both.txt").st_uid == os.getuid()
    assert dws.run("shell", "//app:run", "-c", "cat data/in.txt", check=0).stdout == "input\n"
    app(dws, "echo no outs here", outs=["missing.txt"])
    summary, events = dws.build_json("//...", check=1)
    assert "missing.txt" in {e["target"]: e for e in events}["//app:run"]["error"]


def test_image_context_upload_reports_byte_progress(dws):
    """Sending an image's context to the engine reports byte progress ending at the tar's size."""
    dws.write("images/payload.bin", "p" * 300_000)
    proc = dws.run("build", "--json", "//images:tools", check=0)
    transfers = [json.loads(l) for l in proc.stdout.splitlines() if '"transfer"' in l]
    assert transfers and transfers[-1]["what"] == "image context //images:tools"
    assert transfers[-1]["done"] == transfers[-1]["total"] >= 300_000


@pytest.mark.parametrize("line, named", [
    ("RUN --mount=type=cache,target=/root/.cache true", "RUN --mount needs BuildKit"),
    ("COPY --link hello.txt /opt/", "COPY/ADD --link needs BuildKit"),
    ("RUN <<EOF\necho hi\nEOF", "a heredoc (<<EOF) needs BuildKit"),
])
def test_buildkit_only_syntax_is_named_before_the_build(dws, line, named):
    """The engine's classic builder cannot parse BuildKit syntax: the image target fails at once (exit 2), naming
    the Dockerfile line and what to change, instead of the engine's parse error."""
    dws.write("images/Dockerfile", f"FROM {BUSYBOX}\n{line}\n")
    app(dws, "true")
    proc = dws.run("build", "//...", check=2)
    text = proc.stdout + proc.stderr
    assert f"images/Dockerfile:2: {named}" in text, text
    assert "hint:" in text
    dws.write("images/Dockerfile", f"# syntax=docker/dockerfile:1\nFROM {BUSYBOX}\n")
    assert "images/Dockerfile:1: a `# syntax=` frontend directive needs BuildKit" in dws.run("build", "//...", check=2).stdout
