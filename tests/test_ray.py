"""The Ray executor against a real local Ray cluster (tests/ray_cluster.py) with moto's S3 server as the shared cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import BIN, EXAMPLES, WS, default_sigint, executed
from ray_cluster import ray_cluster  # noqa: F401  (session fixture)

BUILD = """\
targets:
  prep:
    command: python -c "open('data.txt', 'w').write('a\\\\nb\\\\nc\\\\n')"
    outs: [data.txt]
  gpu_train:
    executor: cluster
    resources: {gpus: 1}
    command: python -c "import os; lines = open('data.txt').read().split(); print('training on', len(lines), 'rows'); os.makedirs('out', exist_ok=True); open('out/model.txt', 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'none') + ' ' + str(len(lines)))"
    deps: [data.txt]
    outs: [out/model.txt]
  cpu_task:
    executor: cluster
    command: python -c "import os; print('cpu side'); os.makedirs('cpu', exist_ok=True); open('cpu/out.txt', 'w').write(open('data.txt').read().upper())"
    deps: [data.txt]
    outs: [cpu/]
  big:
    executor: cluster
    resources: {gpus: 2}
    command: "true"
  wide:
    executor: cluster
    resources: {cpus: 2, gpus: 1}
    command: "true"
  slow:
    executor: cluster
    resources: {SPARE: 1}
    command: python -c "import os, time; open(os.environ['MARK'] + '.' + str(os.getpid()), 'w').close(); [print('tick', i, flush=True) or time.sleep(0.2) for i in range(int(os.environ['TICKS']))]; os.makedirs('slow', exist_ok=True); open('slow/done.txt', 'w').write('done')"
    env: {MARK: "MARKPATH", TICKS: "TICKCOUNT"}
    outs: [slow/done.txt]
"""


def workspace(tmp_path, name, server, cluster_address, bucket, ticks=10, spare="gpu_node", **executor) -> WS:
    """A workspace whose `cluster` executor is the test cluster and whose remote cache is bucket."""
    root = tmp_path / name
    root.mkdir()
    options = {"type": "ray", "address": cluster_address, "node_wait": 30, **executor}
    (root / "buildml.yaml").write_text(json.dumps({"cache": {"remote": bucket}, "executors": {"cluster": options}}))
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    (root / "BUILD.yaml").write_text(BUILD.replace("MARKPATH", str(marks / "run")).replace("TICKCOUNT", str(ticks))
                                     .replace("SPARE", spare))
    ws = WS(root, tmp_path / f"cache-{name}")
    base = ws.env
    ws.env = lambda **extra: base(**server.env, **extra)
    return ws


def runs_started(tmp_path) -> int:
    marks = tmp_path / "marks"
    return len(list(marks.iterdir())) if marks.exists() else 0


def show(ws, label) -> dict:
    return json.loads(ws.run("show", label, "--json", check=0).stdout)


def test_gpu_target_on_gpu_node_cpu_anywhere_outputs_through_the_remote_cache(tmp_path, moto_server, ray_cluster):
    """prep runs here; gpu_train lands on the GPU node and sees its device; outputs come back; a rebuild runs nothing."""
    bucket = moto_server.bucket()
    ws = workspace(tmp_path, "a", moto_server, ray_cluster.address, bucket)
    proc = ws.run("build", "-vv", "//:gpu_train", "//:cpu_task", check=0)
    assert "RUN       //:gpu_train [cluster]" in proc.stdout
    assert "//:gpu_train> training on 3 rows" in proc.stdout  # the node's log, streamed with the target's name
    assert "//:cpu_task> cpu side" in proc.stdout
    assert ws.read("out/model.txt") == "0 3"  # CUDA_VISIBLE_DEVICES as Ray assigned it on the GPU node
    assert ws.read("cpu/out.txt") == "A\nB\nC\n"

    provenance = show(ws, "//:gpu_train")["provenance"]
    assert provenance["executor"] == "cluster"
    assert provenance["ray_node_id"] == ray_cluster.node_with("gpu_node")
    assert provenance["ray_node_id"][:12] in provenance["host"]
    assert show(ws, "//:prep")["provenance"]["executor"] == "local"
    cost = show(ws, "//:gpu_train")["cost"]  # measured by the node's own executor (wait4 there), sent back
    assert cost["executor"] == "cluster" and cost["resources"] == {"gpus": 1} and cost["output_bytes"] == 3
    assert cost["cpu_s"] > 0 and cost["wall_s"] > 0, cost
    assert cost["peak_rss_bytes"] is None or cost["peak_rss_bytes"] > 2**20  # unknown below the Ray worker's own
    digest = show(ws, "//:gpu_train")["outputs"][0]["digest"]
    assert moto_server.fs().exists(f"{bucket.split('://', 1)[1]}/cas/{digest[:2]}/{digest}")

    summary, events = ws.build_json("//:gpu_train", "//:cpu_task")
    assert summary["executed"] == 0 and summary["failed"] == 0

    # A second machine with an empty local cache and an unreachable cluster: a remote hit, Ray never contacted.
    other = workspace(tmp_path, "b", moto_server, "127.0.0.1:1", bucket)
    summary, events = other.build_json("//:gpu_train", "//:cpu_task")
    assert summary["executed"] == 0 and summary["cached"] == 3 and summary["failed"] == 0
    assert other.read("out/model.txt") == "0 3"


def test_unsatisfiable_resources_are_refused_at_once(tmp_path, moto_server, ray_cluster):
    """gpus: 2 (the GPU node has 1) and cpus 2 + gpus 1 (no single node has both) fail in seconds with exit 2."""
    ws = workspace(tmp_path, "big", moto_server, ray_cluster.address, moto_server.bucket())
    start = time.monotonic()
    proc = ws.run("build", "//:big", check=2, timeout=60)
    assert "gpus: 2" in proc.stdout + proc.stderr and "has 1" in proc.stdout + proc.stderr
    proc = ws.run("build", "//:wide", check=2, timeout=60)
    assert "no single node" in proc.stdout + proc.stderr and "cpus: 2" in proc.stdout + proc.stderr
    assert time.monotonic() - start < 45


def test_without_a_remote_cache_the_ray_executor_is_refused(ws):
    """A ray executor needs the shared remote cache; the core install never imports Ray."""
    ws.write("buildml.yaml", "executors: {cluster: {type: ray, address: '127.0.0.1:1'}}\n")
    ws.write("BUILD.yaml", "targets:\n  t: {executor: cluster, command: 'true'}\n")
    proc = ws.run("build", "//:t", check=2)
    assert "needs a shared remote cache" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    code = "import sys, buildml.cli, buildml.api, buildml.engine.scheduler, buildml.load.executor_settings; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_ctrl_c_cancels_the_remote_action(tmp_path, moto_server, ray_cluster):
    """SIGINT stops the build at once, the action's process on the node is killed and its actor ended."""
    ws = workspace(tmp_path, "c", moto_server, ray_cluster.address, moto_server.bucket(), ticks=600)
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "-vv", "//:slow"], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    for line in proc.stdout:
        if "//:slow> tick 2" in line:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    pids = [int(p.name.rsplit(".", 1)[1]) for p in (tmp_path / "marks").iterdir()]
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids)
    assert ws.run("status", "--json", check=0).stdout.count('"remote_running": []') == 1


def test_detach_status_then_attach_runs_once(tmp_path, moto_server, ray_cluster):
    """--detach returns at once; status lists the running action; a later build attaches and the action ran once."""
    ws = workspace(tmp_path, "d", moto_server, ray_cluster.address, moto_server.bucket(), ticks=40)
    start = time.monotonic()
    proc = ws.run("build", "--detach", "//:slow", check=0)
    assert "detached: //:slow: submitted to cluster" in proc.stdout
    assert time.monotonic() - start < 30 and not (ws.root / "slow/done.txt").exists()
    status = ws.run("status", check=0).stdout
    assert "//:slow: running on cluster" in status or "//:slow: finished" in status
    proc = ws.run("build", "-vv", "//:slow", check=0)
    assert "//:slow> tick 0" in proc.stdout  # the whole log, from the start of the detached run
    assert "ATTACH    //:slow [cluster] attached to the run" in proc.stdout  # not announced as a new run
    assert "RUN       //:slow" not in proc.stdout
    assert ws.read("slow/done.txt") == "done"
    assert runs_started(tmp_path) == 1
    assert "remote_running\": []" in ws.run("status", "--json", check=0).stdout


def test_a_node_lost_mid_action_is_retried_then_reported(tmp_path, moto_server, ray_cluster):
    """Killing the node running the action: the build retries on a node that comes back; with no retries left it fails."""
    spare = f"spare_{uuid.uuid4().hex[:6]}"
    ray_cluster.add_node("spare1", cpus=1, resources={spare: 1})
    ws = workspace(tmp_path, "e", moto_server, ray_cluster.address, moto_server.bucket(), ticks=30, spare=spare)
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "-vv", "//:slow"], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "//:slow> tick 1" in line:
            break
    ray_cluster.nodes["spare1"].kill()
    ray_cluster.add_node("spare2", cpus=1, resources={spare: 1})
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 0, out
    assert "was lost while running //:slow; retrying (attempt 2 of 3)" in out
    assert ws.read("slow/done.txt") == "done" and runs_started(tmp_path) == 2

    ws2 = workspace(tmp_path, "f", moto_server, ray_cluster.address, moto_server.bucket(), ticks=31, spare=spare,
                    max_retries=0)
    proc = subprocess.Popen([str(BIN / "buildml"), "build", "-vv", "//:slow"], cwd=ws2.root, env=ws2.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    for line in proc.stdout:
        if "//:slow> tick 1" in line:
            break
    ray_cluster.nodes["spare2"].kill()
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 1
    assert "was lost while running it (1 attempts; executors.cluster.max_retries: 0)" in out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.docker
def test_example_repo_trains_on_the_gpu_node(tmp_path, moto_server, ray_cluster):
    """examples/ml-repo with `trainer` on Ray: data steps here, the classifier in its image on the GPU node; then 0 actions."""
    import yaml

    from conftest import REPO

    subprocess.run([str(REPO / "tools/base-images.sh"), "python"], check=True, capture_output=True)
    root = tmp_path / "ml-repo"
    shutil.copytree(EXAMPLES / "ml-repo", root, ignore=shutil.ignore_patterns(
        "raw", "split", "out", ".endpoint", ".buildml", "__pycache__"))
    config = yaml.safe_load((root / "buildml.yaml").read_text())
    config["executors"]["trainer"] = {"type": "ray", "address": ray_cluster.address}
    config["cache"] = {"remote": moto_server.bucket()}
    (root / "buildml.yaml").write_text(yaml.safe_dump(config))
    models = root / "models/BUILD.yaml"
    models.write_text(models.read_text().replace("resources: {cpus: 1, memory: 2GB}", "resources: {cpus: 1, memory: 2GB, gpus: 1}"))
    ws = WS(root, tmp_path / "cache")
    base = ws.env
    ws.env = lambda **extra: base(**moto_server.env, **extra)

    summary, events = ws.build_json("//models/...")
    assert summary["failed"] == 0 and "//models:classifier" in executed(events)
    source = {e["target"]: e["source"] for e in events}
    assert source["//models:classifier"] == "trainer" and source["//data:raw"] == "local"
    provenance = show(ws, "//models:classifier")["provenance"]
    assert provenance["ray_node_id"] == ray_cluster.node_with("gpu_node") and provenance["ray_gpus"] == "0"
    assert show(ws, "//data:split")["provenance"]["executor"] == "local"
    assert ws.build_json("//models/...")[0]["executed"] == 0

    models.write_text(models.read_text().replace("gpus: 1}", "gpus: 2}"))
    proc = ws.run("build", "--param", "train.C=0.3", "//models:classifier", check=2, timeout=60)  # stale: resources are not keyed
    assert "gpus: 2" in proc.stdout + proc.stderr


def test_nodes_run_the_clients_own_buildml_with_a_merged_runtime_env(tmp_path, moto_server, ray_cluster):
    """The client ships its own buildml to the actors (runtime_env py_modules): a client whose buildml says another
    version is the one the node ran. A configured runtime_env is merged with it (its env_vars and the declared
    secrets both arrive), not replaced; ship_buildml: false leaves the nodes their own buildml."""
    from conftest import REPO

    client = tmp_path / "client"
    shutil.copytree(REPO / "buildml", client / "buildml", ignore=shutil.ignore_patterns("__pycache__"))
    init = client / "buildml" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9+client-'))
    ws = workspace(tmp_path, "ship", moto_server, ray_cluster.address, moto_server.bucket(),
                   runtime_env={"env_vars": {"FROM_USER": "kept"}})
    ws.write("BUILD.yaml", """\
        targets:
          who:
            executor: cluster
            command: python -c "import os; open('who.txt', 'w').write(str(len(os.environ['TOKEN'])))"
            secrets: [TOKEN]
            outs: [who.txt]
        """)
    env = ws.env(PYTHONPATH=str(client), TOKEN="s3cr3t")
    proc = ws.run("build", "//:who", env=env, check=0)
    assert ws.read("who.txt") == "6", proc.stdout  # the secret merged into the user's env_vars
    provenance = json.loads(ws.run("show", "//:who", "--json", env=env, check=0).stdout)["provenance"]
    assert provenance["ray_buildml"].startswith("9.9.9+client-")  # the node imported the client's copy

    settings = json.loads(ws.read("buildml.yaml"))
    settings["executors"]["cluster"]["ship_buildml"] = False
    ws.write("buildml.yaml", json.dumps(settings))
    ws.write("BUILD.yaml", ws.read("BUILD.yaml").replace("who.txt", "who2.txt"))
    ws.run("build", "//:who", env=env, check=0)
    provenance = json.loads(ws.run("show", "//:who", "--json", env=env, check=0).stdout)["provenance"]
    assert not provenance["ray_buildml"].startswith("9.9.9")  # the node's own install
