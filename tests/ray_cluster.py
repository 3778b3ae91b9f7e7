"""A real local Ray cluster for the tests: a head node and a second node that declares a GPU, started once per session.

Each node is `ray start --block` in its own session (so a test can kill one node, workers
included, by its session id); every port is a free one, the temp dir is private and short
(Unix socket paths are limited to 107 bytes), and fast health checks let Ray notice a killed
node in about two seconds. Nodes get the S3 server's environment: they reach the remote cache
with their own credentials, as real nodes do.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from servers import executable, free_port

__all__ = ["RayCluster", "ray_cluster"]

WORKER_PORTS = 100  # per node
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
               "RAY_health_check_timeout_ms": "1000", "RAY_health_check_initial_delay_ms": "500"}


class RayNode:
    """One `ray start --block` process (its own session: killing the session kills the node and its workers)."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log

    def kill(self) -> None:
        """SIGKILL every process of the node (raylet, agents, workers), as a lost machine."""
        sid = self.proc.pid
        for pid in _pids_of_session(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ray start --block stops what it started
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _free_range(n: int) -> int:
    """The first of n consecutive free ports below the ephemeral range (where free_port() picks the others)."""
    for _ in range(100):
        base = random.randrange(20000, 30000 - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range for Ray workers")


def _pids_of_session(sid: int) -> list:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


class RayCluster:
    """The head's GCS address, the nodes by name, and helpers to add, kill and inspect nodes."""

    def __init__(self, env: dict):
        self.tmp = Path(tempfile.mkdtemp(prefix="bray-", dir="/tmp"))
        self.env = {**os.environ, **env, **FAST_HEALTH, "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, RayNode] = {}

    def start_head(self, cpus: int = 2) -> None:
        self._start("head", ["--head", f"--port={self.port}", f"--num-cpus={cpus}", "--num-gpus=0",
                             "--include-dashboard=false", f"--temp-dir={self.tmp / 't'}",
                             f"--ray-client-server-port={free_port()}", f"--dashboard-port={free_port()}"])

    def add_node(self, name: str, cpus: int = 1, gpus: int = 0, resources: dict | None = None) -> RayNode:
        """Start a worker node and wait until the cluster lists it."""
        before = {n["id"] for n in self.alive()}
        node = self._start(name, [f"--address={self.address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                                  f"--resources={json.dumps(resources or {})}"])
        deadline = time.monotonic() + 60
        while not {n["id"] for n in self.alive()} - before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not join:\n{node.log.read_text()[-3000:]}")
            time.sleep(0.5)
        return node

    def _start(self, name: str, args: list) -> RayNode:
        log = self.tmp / f"{name}.log"
        ports = [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                 f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        start = _free_range(WORKER_PORTS)
        argv = [executable("ray"), "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                "--object-store-memory=80000000", f"--min-worker-port={start}",
                f"--max-worker-port={start + WORKER_PORTS - 1}",
                *ports, *args]
        proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        node = self.nodes[name] = RayNode(name, proc, log)
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                node.stop()
                raise RuntimeError(f"ray node {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        return node

    def alive(self) -> list[dict]:
        """The live nodes as Ray lists them (NodeID, Resources), asked from a short-lived driver."""
        code = ("import json, logging, ray; ray.init(address=%r, log_to_driver=False, logging_level=logging.ERROR); "
                "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
                % self.address)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=60)
        lines = [l for l in out.stdout.splitlines() if l.startswith("[")]
        return json.loads(lines[-1]) if lines else []

    def node_with(self, resource: str) -> str:
        """The id of the live node that has resource."""
        return next(n["id"] for n in self.alive() if n["resources"].get(resource))

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(moto_server):
    """A head (2 CPUs, no GPU) and node `gpu` (1 CPU, 1 GPU, resource gpu_node), with the S3 server's env."""
    cluster = RayCluster(moto_server.env)
    try:
        cluster.start_head()
        cluster.add_node("gpu", cpus=1, gpus=1, resources={"gpu_node": 1})
        yield cluster
    finally:
        cluster.stop()
