"""ssh:// engines through the `ssh` binary, as the docker CLI reaches them (`ssh host docker system dial-stdio`).

docker-py can shell out to `ssh` too (`use_ssh_client=True`), but its transport module imports paramiko first, so
without paramiko installed every ssh:// host fails with "Install paramiko package to enable ssh:// support". This is
that shell-out transport without the paramiko import (the same socket/pool/adapter shapes, so docker-py's streaming
helpers find what they expect), plus what a build tool needs: no password prompts (BatchMode), a connect timeout, and
ssh's own complaint (its stderr) in the error when the engine cannot be reached.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import tempfile
import urllib.parse

import requests.adapters
import requests.exceptions
import urllib3
import urllib3.connection
import urllib3.connectionpool

from buildml.errors import EnvironmentProblem

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=30", "-T")
_POOL_HOST = "localhost"  # urllib3 wants a host name; the bytes go through ssh


def ssh_argv(host: str, *remote: str) -> list[str]:
    """The ssh command line that runs `remote` on the engine's host of an ssh://[user@]host[:port] address."""
    url = urllib.parse.urlsplit(host)
    if url.scheme != "ssh" or not url.hostname or url.path not in ("", "/"):
        raise EnvironmentProblem(f"{host} is not an ssh://[user@]host[:port] address",
                                 hint="e.g. DOCKER_HOST=ssh://me@gpu-box (options such as the key go in ~/.ssh/config)")
    argv = [ssh_binary(), *SSH_OPTIONS]
    if url.username:
        argv += ["-l", urllib.parse.unquote(url.username)]
    if url.port:
        argv += ["-p", str(url.port)]
    return [*argv, "--", url.hostname, *remote]


def ssh_binary() -> str:
    """The `ssh` on PATH, or a clear error saying what to install."""
    found = shutil.which("ssh")
    if not found:
        raise EnvironmentProblem("an ssh:// Docker engine needs the OpenSSH client, and there is no `ssh` on PATH",
                                 hint="install it (Debian/Ubuntu: `apt-get install openssh-client`), or point "
                                      "DOCKER_HOST at a unix:// or tcp:// engine")
    return found


class SSHSocket(socket.socket):
    """One `ssh host docker system dial-stdio` process standing in for a socket (docker-py's shell-out socket)."""

    def __init__(self, argv: list[str]):
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.argv = argv
        self.proc = None
        self.stderr = None

    def connect(self, *_args, **_kwargs):
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env.pop("LD_LIBRARY_PATH", None)
        env.pop("SSL_CERT_FILE", None)
        # its own session: a Ctrl-C meant for buildml does not cut the engine off while containers are removed
        self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, start_new_session=True)

    def complaint(self) -> str:
        """The last line ssh wrote to stderr (why it could not connect), or ''."""
        if self.stderr is None or self.stderr.closed:
            return ""
        self.stderr.seek(0)
        lines = [l.strip() for l in self.stderr.read().decode(errors="replace").splitlines() if l.strip()]
        return lines[-1][:300] if lines else ""

    def _write(self, data):
        if not self.proc or self.proc.stdin.closed:
            raise OSError("the ssh process is not running")
        written = self.proc.stdin.write(data)
        self.proc.stdin.flush()
        return written

    def sendall(self, data):
        self._write(data)

    def send(self, data):
        return self._write(data)

    def recv(self, n):
        if not self.proc:
            raise OSError("the ssh process is not running")
        return self.proc.stdout.read(n)

    def makefile(self, mode):
        if not self.proc:
            self.connect()
        self.proc.stdout.channel = self  # docker-py's _get_raw_response_socket looks for it
        return self.proc.stdout

    def close(self):
        if self.proc and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write(b"\n\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        super().close()


class _Connection(urllib3.connection.HTTPConnection):
    def __init__(self, argv, timeout, sockets):
        super().__init__(_POOL_HOST, timeout=timeout)
        self.argv, self.sockets = argv, sockets

    def connect(self):
        sock = SSHSocket(self.argv)
        sock.settimeout(self.timeout)
        sock.connect()
        self.sockets.append(sock)
        del self.sockets[:-8]  # the newest few, for complaint()
        self.sock = sock


class _Pool(urllib3.connectionpool.HTTPConnectionPool):
    scheme = "ssh"

    def __init__(self, argv, timeout, maxsize, sockets):
        super().__init__(_POOL_HOST, timeout=timeout, maxsize=maxsize)
        self.argv, self.sockets = argv, sockets

    def _new_conn(self):
        return _Connection(self.argv, self.timeout, self.sockets)

    def _get_conn(self, timeout):  # as docker-py: reuse a pooled process, else start a new one
        try:
            conn = self.pool.get(block=self.block, timeout=timeout)
        except AttributeError as exc:
            raise urllib3.exceptions.ClosedPoolError(self, "Pool is closed.") from exc
        except queue.Empty:
            if self.block:
                raise urllib3.exceptions.EmptyPoolError(self, "Pool reached maximum size") from None
            conn = None
        return conn or self._new_conn()

    def _put_conn(self, conn):
        """A finished request ends its ssh process: every request gets its own pool (as docker-py's shell-out does)."""
        if conn is not None:
            conn.close()


class SSHAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections are ssh processes running `docker system dial-stdio`."""

    def __init__(self, host: str, timeout, max_pool_size: int):
        self.argv = ssh_argv(host, "docker", "system", "dial-stdio")
        self.timeout, self.max_pool_size = timeout, max_pool_size
        self.sockets: list[SSHSocket] = []
        super().__init__()

    def get_connection(self, url, proxies=None):
        return _Pool(self.argv, self.timeout, self.max_pool_size, self.sockets)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self.get_connection(request.url, proxies)

    def complaint(self) -> str:
        """What ssh said last on any connection, or ''."""
        for sock in reversed(self.sockets):
            text = sock.complaint()
            if text:
                return text
        return ""


def ssh_client(host: str, timeout: int):
    """A docker.DockerClient for an ssh:// host, pinged; DockerException carrying ssh's complaint when unreachable."""
    import docker
    from docker.constants import DEFAULT_MAX_POOL_SIZE, MINIMUM_DOCKER_API_VERSION

    # Made for a placeholder tcp address with a fixed version so nothing is contacted, then pointed at ssh the way
    # docker-py's own ssh branch does (mount, unmount http(s), base_url), then the version asked of the engine.
    api = docker.APIClient(base_url="tcp://127.0.0.1:9", version=MINIMUM_DOCKER_API_VERSION, timeout=timeout)
    adapter = SSHAdapter(host, timeout, DEFAULT_MAX_POOL_SIZE)
    api._custom_adapter = adapter
    api.mount("http+docker://ssh", adapter)
    api._unmount("http://", "https://")
    api.base_url = "http+docker://ssh"
    try:
        api._version = api._retrieve_server_version()
        client = docker.DockerClient.__new__(docker.DockerClient)
        client.api = api
        client.ping()
        return client
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        said = adapter.complaint()
        api.close()
        if said:
            raise docker.errors.DockerException(said if said.startswith("ssh:") else f"ssh: {said}") from None
        if isinstance(exc, docker.errors.DockerException):
            raise exc from None
        raise docker.errors.DockerException(str(exc)) from None
