"""Finding the Docker engine as the docker CLI does: contexts, TLS variables, ssh:// through a real sshd on loopback."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import BIN, executed
from test_docker import app, busybox_image, dws, remove_test_images  # noqa: F401 (the real-engine fixtures)

pytestmark = pytest.mark.docker
SOCKET = "/var/run/docker.sock"


def plain_env(ws, **extra) -> dict:
    """The workspace's environment with none of the engine variables of whoever runs the tests."""
    env = ws.env()
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"):
        env.pop(name, None)
    env.update(extra)
    return env


def provenance_host(ws, label: str, env: dict) -> str:
    return json.loads(ws.run("show", label, "--json", env=env, check=0).stdout)["provenance"]["host"]


@pytest.fixture
def contexts(tmp_path):
    """A DOCKER_CONFIG folder with contexts made by the docker CLI: `good` (a link to the real socket), `bogus`."""
    config = tmp_path / "docker-config"
    (tmp_path / "engine.sock").symlink_to(SOCKET)
    for name, host in (("good", f"unix://{tmp_path}/engine.sock"), ("bogus", f"unix://{tmp_path}/none.sock")):
        subprocess.run(["docker", "--config", str(config), "context", "create", name, "--docker", f"host={host}"],
                       check=True, capture_output=True)
    return config


def good_host(contexts) -> str:
    return f"unix://{contexts.parent}/engine.sock"


def test_docker_context_and_current_context_pick_the_engine(dws, contexts):
    """DOCKER_CONTEXT names a context; without it the CLI's currentContext (`docker context use`) is used."""
    app(dws, "echo via-context > out.txt", outs=["out.txt"])
    env = plain_env(dws, DOCKER_CONFIG=str(contexts), DOCKER_CONTEXT="good")
    dws.run("build", "//...", env=env, check=0)
    assert dws.read("app/out.txt") == "via-context\n"
    assert provenance_host(dws, "//app:run", env) == good_host(contexts)
    assert dws.run("shell", "//app:run", "-c", "cat /opt/hello.txt", env=env, check=0).stdout == f"hello {dws.repo}\n"

    subprocess.run(["docker", "--config", str(contexts), "context", "use", "good"], check=True, capture_output=True)
    assert json.loads((contexts / "config.json").read_text())["currentContext"] == "good"
    app(dws, "echo via-current > out.txt", outs=["out.txt"])
    env = plain_env(dws, DOCKER_CONFIG=str(contexts))
    dws.run("build", "//...", env=env, check=0)
    assert dws.read("app/out.txt") == "via-current\n"
    assert provenance_host(dws, "//app:run", env) == good_host(contexts)


def test_context_that_cannot_be_reached_or_does_not_exist_is_named(dws, contexts):
    """A context whose engine is not there, or no such context: the message names it and where it was set."""
    app(dws, "true")
    env = plain_env(dws, DOCKER_CONFIG=str(contexts), DOCKER_CONTEXT="bogus")
    proc = dws.run("build", "//...", env=env, check=1)
    text = proc.stdout + proc.stderr
    assert "cannot reach the Docker engine at unix://" in text and "none.sock" in text
    assert "context 'bogus' (from DOCKER_CONTEXT)" in text and "docker context use" in text
    assert "Traceback" not in text

    (contexts / "config.json").write_text(json.dumps({"currentContext": "nowhere"}))
    proc = dws.run("build", "//...", env=plain_env(dws, DOCKER_CONFIG=str(contexts)), check=1)
    text = proc.stdout + proc.stderr
    assert "context 'nowhere' (from currentContext in" in text and "does not exist" in text
    assert "docker context ls" in text and "Traceback" not in text

    # docker.host in buildml.yaml is the project's --host: it wins over any context (DOCKER_HOST wins over it)
    dws.write("buildml.yaml", f"docker: {{host: unix://{SOCKET}}}\n")
    dws.run("build", "//...", env=env, check=0)
    proc = dws.run("build", "//...", env={**env, "DOCKER_HOST": "unix:///nonexistent.sock"}, check=1)
    assert "unix:///nonexistent.sock (from DOCKER_HOST)" in proc.stdout + proc.stderr


def _openssl(*args, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(d) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (ca.pem, cert.pem, key.pem)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=d)
    for name, subject, ext in (("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                               ("client", "/CN=client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                 "-out", f"{name}-cert.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    shutil.copy(d / "client-cert.pem", d / "cert.pem")
    shutil.copy(d / "client-key.pem", d / "key.pem")


def _pump(src, dst) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory):
    """This machine's engine behind TLS with client certificates (dockerd --tlsverify's setup) on a loopback port.

    A second dockerd listening with TLS would need its own data root and privileges; a TLS front that checks the
    client certificate against the CA and forwards the bytes to the engine's socket gives the client side the same
    handshake: a real TLS server, a real CA, the real engine behind it.
    """
    d = tmp_path_factory.mktemp("tls")
    _certificates(d)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "server-cert.pem", d / "server-key.pem")
    context.load_verify_locations(d / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    rejected = []

    def serve(raw):
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            rejected.append(str(exc))
            raw.close()
            return
        engine = socket.socket(socket.AF_UNIX)
        engine.connect(SOCKET)
        threading.Thread(target=_pump, args=(engine, tls), daemon=True).start()
        _pump(tls, engine)

    def accept():
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield {"host": f"tcp://127.0.0.1:{listener.getsockname()[1]}", "certs": d, "rejected": rejected}
    listener.close()


def test_tls_engine_by_variables_and_by_context(dws, tls_engine, tmp_path):
    """DOCKER_TLS_VERIFY + DOCKER_CERT_PATH, then a context holding the TLS material, reach a TLS-only engine.

    REQUESTS_CA_BUNDLE is set to the system bundle on purpose: requests would let it replace the engine's CA.
    """
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        shutil.copy(tls_engine["certs"] / name, certs / name)
    app(dws, "echo via-tls > out.txt", outs=["out.txt"])
    env = plain_env(dws, DOCKER_HOST=tls_engine["host"], DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs),
                    REQUESTS_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt")
    dws.run("build", "//...", env=env, check=0)
    assert dws.read("app/out.txt") == "via-tls\n"
    assert provenance_host(dws, "//app:run", env) == tls_engine["host"]

    config = tmp_path / "docker-config"
    material = ",".join(f"{k}={certs}/{k}.pem" for k in ("ca", "cert", "key"))
    subprocess.run(["docker", "--config", str(config), "context", "create", "secure", "--docker",
                    f"host={tls_engine['host']},{material}"], check=True, capture_output=True)
    shutil.rmtree(certs)  # the context keeps its own copy under contexts/tls/
    app(dws, "echo via-tls-context > out.txt", outs=["out.txt"])
    env = plain_env(dws, DOCKER_CONFIG=str(config), DOCKER_CONTEXT="secure",
                    REQUESTS_CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt")
    dws.run("build", "//...", env=env, check=0)
    assert dws.read("app/out.txt") == "via-tls-context\n"

    # without a client certificate the engine refuses the handshake: the message names the engine and its source
    certs.mkdir()
    shutil.copy(tls_engine["certs"] / "ca.pem", certs / "ca.pem")
    env = plain_env(dws, DOCKER_HOST=tls_engine["host"], DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
    proc = dws.run("build", "//...", env=env, check=1)
    assert f"cannot reach the Docker engine at {tls_engine['host']} (from DOCKER_HOST)" in proc.stdout + proc.stderr
    assert tls_engine["rejected"]


def test_tls_variables_with_missing_certificates_name_the_path(dws, tmp_path):
    """DOCKER_TLS_VERIFY with certificates missing in DOCKER_CERT_PATH fails before connecting, naming the file."""
    app(dws, "true")
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "cert.pem").write_text("not read before the files are all there\n")
    (certs / "key.pem").write_text("not read before the files are all there\n")
    env = plain_env(dws, DOCKER_HOST="tcp://127.0.0.1:9", DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certs))
    proc = dws.run("build", "//...", env=env, check=1)
    text = proc.stdout + proc.stderr
    assert f"DOCKER_TLS_VERIFY is set but the CA certificate {certs}/ca.pem is missing" in text
    assert "DOCKER_CERT_PATH" in text and "Traceback" not in text

    (certs / "ca.pem").write_text("ca\n")
    (certs / "key.pem").unlink()
    proc = dws.run("build", "//...", env=env, check=1)
    assert f"{certs}/key.pem is missing" in proc.stdout + proc.stderr

    env["DOCKER_CERT_PATH"] = str(tmp_path / "no-such-folder")
    proc = dws.run("build", "//...", env=env, check=1)
    assert f"DOCKER_CERT_PATH {tmp_path}/no-such-folder is not a folder" in proc.stdout + proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH sshd on a loopback port, logging in this user by a key; and an `ssh` that trusts it.

    OpenSSH reads ~/.ssh/config from the passwd entry, not $HOME, so the client side (identity, the throwaway host
    key) comes through `-F` in a small `ssh` wrapper first on PATH, which execs the real ssh.
    """
    sshd_bin, ssh_bin = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin"), shutil.which("ssh")
    assert sshd_bin and ssh_bin, "openssh-server and openssh-client are needed: run tools/system-deps.sh"
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PermitRootLogin yes\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nPidFile {d}/sshd.pid\n")
    (d / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    (d / "bin").mkdir()
    (d / "bin/ssh").write_text(f'#!/bin/sh\nexec {ssh_bin} -F {d}/ssh_config "$@"\n')
    (d / "bin/ssh").chmod(0o755)
    if os.getuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "sshd.log").read_text()
            time.sleep(0.1)
    yield {"host": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "path": f"{d}/bin{os.pathsep}{os.environ['PATH']}",
           "port": port}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_build_on_an_ssh_engine(dws, sshd):
    """DOCKER_HOST=ssh://user@127.0.0.1:PORT reaches this machine's engine through sshd, without paramiko."""
    dws.write("buildml.yaml", "docker: {transfer: copy}\n")
    dws.write("app/data/in.txt", "input over ssh\n")
    app(dws, "mkdir -p res; cat data/in.txt /opt/hello.txt > res/both.txt", deps=["data/in.txt"], outs=["res/"])
    env = plain_env(dws, DOCKER_HOST=sshd["host"], PATH=f"{BIN}{os.pathsep}{sshd['path']}")
    proc = dws.run("build", "--json", "//...", env=env, check=0)
    events = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert executed([e for e in events if e.get("event") == "finished"]) == ["//images:tools", "//app:run"]
    assert dws.read("app/res/both.txt") == f"input over ssh\nhello {dws.repo}\n"
    assert provenance_host(dws, "//app:run", env) == sshd["host"]
    assert dws.run("shell", "//app:run", "-c", "cat data/in.txt", env=env, check=0).stdout == "input over ssh\n"


def test_ssh_engine_errors_say_what_ssh_said_or_that_ssh_is_missing(dws, sshd):
    """A refused ssh:// port shows ssh's own message; with no `ssh` on PATH the error says to install it."""
    app(dws, "true")
    closed = _free_port()
    env = plain_env(dws, DOCKER_HOST=f"ssh://{getpass.getuser()}@127.0.0.1:{closed}",
                    PATH=f"{BIN}{os.pathsep}{sshd['path']}")
    proc = dws.run("build", "//...", env=env, check=1)
    text = proc.stdout + proc.stderr
    assert f"cannot reach the Docker engine at ssh://{getpass.getuser()}@127.0.0.1:{closed} (from DOCKER_HOST)" in text
    assert "Connection refused" in text and "paramiko" not in text and "Traceback" not in text

    proc = dws.run("build", "//...", env={**env, "DOCKER_HOST": sshd["host"], "PATH": str(BIN)}, check=1)
    text = proc.stdout + proc.stderr
    assert "no `ssh` on PATH" in text and "openssh-client" in text and "Traceback" not in text
