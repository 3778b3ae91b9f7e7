"""Where the Docker engine is, found as the docker CLI finds it.

The first of these that is set wins:

1. `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH` for a tcp:// host), as for the docker CLI;
2. `docker.host` in buildml.yaml (the project's `--host`; the same TLS variables apply);
3. the context named by `DOCKER_CONTEXT`;
4. the current context of the docker CLI: `currentContext` in `config.json` of `DOCKER_CONFIG` (default `~/.docker`),
   as `docker context use` sets it (Docker Desktop, Colima and rootless Docker set one up);
5. the default socket, unix:///var/run/docker.sock (also what the context named "default" means).

A context is read from `<config dir>/contexts/meta/<sha256 of its name>/meta.json` (its `docker` endpoint's Host and
SkipTLSVerify) and its TLS material from `<config dir>/contexts/tls/<sha256>/docker/{ca,cert,key}.pem`, the layout
`docker context create` writes. This is read here rather than through docker-py's ContextAPI because that one finds
the contexts folder next to whichever config.json exists (a DOCKER_CONFIG without config.json silently falls back to
~/.docker, and with none at all it looks in ./contexts) and turns a missing context into None.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from buildml.errors import EnvironmentProblem

DEFAULT_HOST = "unix:///var/run/docker.sock"
SCHEMES = ("unix://", "tcp://", "ssh://", "http://", "https://", "npipe://")


@dataclass(frozen=True)
class Endpoint:
    """An engine address, where it came from (in words, for messages), its TLS settings and its context's name."""

    host: str
    source: str
    tls: object = None  # docker.tls.TLSConfig, or None for no TLS
    context: str | None = None

    def cli_env(self, environ) -> dict:
        """The environment under which the docker CLI reaches this same engine (for `buildml shell`)."""
        env = dict(environ)
        if self.context:
            env.pop("DOCKER_HOST", None)
            env["DOCKER_CONTEXT"] = self.context
        else:
            env["DOCKER_HOST"] = self.host
        return env


def config_dir(environ) -> Path:
    """The docker CLI's configuration folder: DOCKER_CONFIG, else ~/.docker."""
    return Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def find_endpoint(setting_host: str | None, environ=None) -> Endpoint:
    """The engine to use, by the precedence in this module's docstring."""
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_HOST"):
        return _address(environ["DOCKER_HOST"], "DOCKER_HOST", environ)
    if setting_host:
        return _address(setting_host, "docker.host in buildml.yaml", environ)
    if environ.get("DOCKER_CONTEXT"):
        return context_endpoint(environ["DOCKER_CONTEXT"], "DOCKER_CONTEXT", environ)
    name, where = current_context(environ)
    if name:
        return context_endpoint(name, f"currentContext in {where}", environ)
    return Endpoint(DEFAULT_HOST, "the default socket (no DOCKER_HOST, docker.host or Docker context set)")


def current_context(environ) -> tuple[str | None, str]:
    """(currentContext of the CLI's config.json or None, that file's path)."""
    path = config_dir(environ) / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, str(path)
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot read the docker CLI's configuration {path}: {exc}",
                                 hint="fix or remove it, or set DOCKER_HOST") from None
    name = data.get("currentContext") if isinstance(data, dict) else None
    if name is not None and not isinstance(name, str):
        raise EnvironmentProblem(f"currentContext in {path} is not a context name: {name!r}",
                                 hint="`docker context use default`, or set DOCKER_HOST")
    return name or None, str(path)


def context_endpoint(name: str, source: str, environ) -> Endpoint:
    """The docker endpoint of the context `name` (named by `source`), as `docker context inspect` shows it."""
    said = f"context {name!r} (from {source})"
    if name == "default":
        return Endpoint(DEFAULT_HOST, f"the default socket, the {said}")
    contexts = config_dir(environ) / "contexts"
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta_path = contexts / "meta" / digest / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise EnvironmentProblem(f"Docker {said} does not exist: no {meta_path}",
                                 hint="list contexts with `docker context ls`; pick one with `docker context use NAME`,"
                                      " or set DOCKER_HOST") from None
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot read Docker {said}: {meta_path}: {exc}",
                                 hint="recreate it with `docker context create`, or set DOCKER_HOST") from None
    endpoint = meta.get("Endpoints", {}).get("docker") if isinstance(meta, dict) and isinstance(
        meta.get("Endpoints"), dict) else None
    host = endpoint.get("Host") if isinstance(endpoint, dict) else None
    if not isinstance(host, str) or not host.startswith(SCHEMES):
        raise EnvironmentProblem(f"Docker {said} has no docker endpoint address buildml can use ({meta_path})",
                                 hint="`docker context inspect " + name + "` shows it; "
                                      "recreate it with `docker context create NAME --docker host=...`")
    skip_verify = bool(endpoint.get("SkipTLSVerify", False))
    tls = _context_tls(contexts / "tls" / digest / "docker", skip_verify, said) if host.startswith("tcp://") else None
    return Endpoint(host, said, tls, context=name)


def _address(host: str, source: str, environ) -> Endpoint:
    if not isinstance(host, str) or not host.startswith(SCHEMES):
        raise EnvironmentProblem(f"{source} is {host!r}, not a Docker engine address",
                                 hint="e.g. unix:///var/run/docker.sock, tcp://host:2376 or ssh://me@gpu-box")
    tls = _env_tls(environ) if host.startswith(("tcp://", "https://")) else None
    return Endpoint(host, source, tls)


def _env_tls(environ):
    """TLS from DOCKER_TLS_VERIFY / DOCKER_TLS / DOCKER_CERT_PATH, as docker-py's kwargs_from_env, files checked."""
    from docker.tls import TLSConfig

    verify = bool(environ.get("DOCKER_TLS_VERIFY"))
    cert_path = environ.get("DOCKER_CERT_PATH") or ""
    if not (verify or environ.get("DOCKER_TLS") or cert_path):
        return None
    folder = Path(cert_path) if cert_path else config_dir(environ)
    named = "DOCKER_CERT_PATH" if cert_path else "the default DOCKER_CERT_PATH"
    hint = ("put the engine's ca.pem and your cert.pem and key.pem there (`dockerd --tlsverify` setup), "
            "point DOCKER_CERT_PATH at them, or unset DOCKER_TLS_VERIFY for an engine without TLS")
    if cert_path and not folder.is_dir():
        raise EnvironmentProblem(f"DOCKER_CERT_PATH {folder} is not a folder", hint=hint)
    ca, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    if verify and not ca.is_file():
        raise EnvironmentProblem(f"DOCKER_TLS_VERIFY is set but the CA certificate {ca} is missing ({named})",
                                 hint=hint)
    if cert.is_file() != key.is_file():
        missing = key if cert.is_file() else cert
        raise EnvironmentProblem(f"TLS client certificate incomplete: {missing} is missing ({named})", hint=hint)
    client_cert = (str(cert), str(key)) if cert.is_file() else None
    return TLSConfig(client_cert=client_cert, ca_cert=str(ca) if ca.is_file() else None, verify=verify)


def _context_tls(folder: Path, skip_verify: bool, said: str):
    """TLS of a context's docker endpoint from its tls folder, or None when it has none."""
    from docker.tls import TLSConfig

    ca, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    if not folder.is_dir() or not any(p.is_file() for p in (ca, cert, key)):
        return None
    if cert.is_file() != key.is_file():
        missing = key if cert.is_file() else cert
        raise EnvironmentProblem(f"TLS material of Docker {said} is incomplete: {missing} is missing",
                                 hint="recreate the context with ca=, cert= and key= in its --docker option")
    client_cert = (str(cert), str(key)) if cert.is_file() else None
    return TLSConfig(client_cert=client_cert, ca_cert=str(ca) if ca.is_file() else None, verify=not skip_verify)
