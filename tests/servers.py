"""Real storage servers on loopback for the tests: moto's S3 server, SeaweedFS, and a GCS emulator.

Each is a session-scoped fixture (started once, stopped at the end); `start_moto()` also gives
a private server that a test may kill. Each server object knows the environment a client
(s3fs, gcsfs, the buildml CLI) needs and makes fresh buckets.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

__all__ = ["Server", "start_moto", "moto_server", "seaweedfs_server", "gcs_emulator", "s3_bucket"]

READER = {"AWS_ACCESS_KEY_ID": "reader", "AWS_SECRET_ACCESS_KEY": "reader-secret"}
SEAWEED_IDENTITIES = {"identities": [
    {"name": "ci", "credentials": [{"accessKey": "testing", "secretKey": "testing"}],
     "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
    {"name": "developer", "credentials": [{"accessKey": READER["AWS_ACCESS_KEY_ID"], "secretKey": READER["AWS_SECRET_ACCESS_KEY"]}],
     "actions": ["Read", "List"]},
]}
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def executable(name: str) -> str:
    """A console script of this interpreter's environment (CI does not put the venv on PATH), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server at {url} did not start in {timeout}s:\n{log.read_text()[-3000:]}")


class Server:
    """A running server: its endpoint, the client environment, and a way to stop it."""

    def __init__(self, kind: str, endpoint: str, proc: subprocess.Popen, env: dict, workdir: Path):
        self.kind, self.endpoint, self.proc, self.env, self.workdir = kind, endpoint, proc, env, workdir

    @property
    def scheme(self) -> str:
        return "gs" if self.kind == "gcs" else "s3"

    def fs(self):
        """A fresh fsspec filesystem talking to this server."""
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        if self.kind == "gcs":
            import gcsfs

            return gcsfs.GCSFileSystem(project="test", token="anon", endpoint_url=self.endpoint, skip_instance_cache=True)
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.endpoint, skip_instance_cache=True)

    def bucket(self, prefix: str = "cache") -> str:
        """Create a new empty bucket; return its URL with a prefix, e.g. s3://b-1a2b/cache."""
        name = f"b-{uuid.uuid4().hex[:10]}"
        self.fs().mkdir(name)
        return f"{self.scheme}://{name}/{prefix}"

    def _recorder(self, action: str) -> str:
        method = "GET" if action == "download-recording" else "POST"
        request = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read().decode()

    @contextlib.contextmanager
    def recording(self):
        """moto only: the requests the server answered inside the block, filled in when it ends, as dicts
        {"method", "path" (unquoted, from the bucket on, e.g. /b-1a2b/cache/cas/ab/ab12...), "query", "headers"}.

        moto's recorder (/moto-api/recorder/*, a file in the server's working directory) is emptied and started
        here, then stopped and emptied again whatever happens, so the session's other tests are not recorded.
        """
        if self.kind != "moto":
            raise TypeError(f"only moto's server records requests, not {self.kind}")
        requests: list[dict] = []
        self._recorder("reset-recording")
        self._recorder("start-recording")
        try:
            yield requests
        finally:
            self._recorder("stop-recording")
            text = self._recorder("download-recording")
            self._recorder("reset-recording")
        for line in text.splitlines():
            entry = json.loads(line)
            url = urlparse(entry["url"])
            requests.append({"method": entry["method"], "path": unquote(url.path), "query": url.query,
                             "headers": entry["headers"]})

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(kind: str, argv: list, url_path: str, port: int, env: dict, workdir: Path | None = None) -> Server:
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"buildml-{kind}-"))
    log = workdir / "server.log"
    proc = subprocess.Popen(argv, cwd=workdir, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **env}, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    _wait_http(endpoint + url_path, proc, log)
    return Server(kind, endpoint, proc, env, workdir)


def start_moto() -> Server:
    """moto's standalone S3 server as a subprocess on a free port."""
    port = free_port()
    server = _spawn("moto", [executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                    "/", port, dict(S3_CREDENTIALS))
    server.env["AWS_ENDPOINT_URL"] = server.endpoint
    return server


def start_seaweedfs() -> Server:
    """SeaweedFS (`weed mini`, a real S3 server) with every port moved off its fixed defaults.

    Two identities: read-write (the default env, as CI on main) and read-only (`reader_env`, as developers).
    """
    workdir = Path(tempfile.mkdtemp(prefix="buildml-seaweedfs-"))
    config = workdir / "s3.json"
    config.write_text(json.dumps(SEAWEED_IDENTITIES))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port"]
    ports = {n: free_port() for n in names}
    argv = [executable("weed"), "mini", "-dir=.", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
            "-master.volumeSizeLimitMB=64", f"-s3.config={config}", *[f"-{n}={p}" for n, p in ports.items()]]
    server = _spawn("seaweedfs", argv, "/", ports["s3.port"], dict(S3_CREDENTIALS), workdir)
    server.env["AWS_ENDPOINT_URL"] = server.endpoint
    server.reader_env = {**server.env, **READER}
    _wait_bucket_ready(server)
    return server


def _wait_bucket_ready(server: Server, timeout: float = 60) -> None:
    """SeaweedFS answers HTTP before its filer accepts writes: retry a first write."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = server.bucket("probe")
            server.fs().pipe(url.split("://", 1)[1] + "/x", b"x")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def start_gcs_emulator() -> Server:
    """gcp-storage-emulator in memory, used through gcsfs with STORAGE_EMULATOR_HOST."""
    port = free_port()
    argv = [executable("gcp-storage-emulator"), "start", "--in-memory",
            "--host=127.0.0.1", f"--port={port}"]
    server = _spawn("gcs", argv, "/storage/v1/b", port, {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    server.env["STORAGE_EMULATOR_HOST"] = server.endpoint
    return server


@pytest.fixture(scope="session")
def moto_server():
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server():
    server = start_seaweedfs()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_emulator():
    server = start_gcs_emulator()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_server) -> str:
    """A fresh bucket on the session's moto server, as s3://bucket/cache."""
    return moto_server.bucket()
