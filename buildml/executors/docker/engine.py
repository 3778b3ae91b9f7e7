"""The Docker engine of a session: one client chosen the docker SDK's way, image refs, clear errors."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from buildml.errors import EnvironmentProblem, LoadError

SETTINGS = ("host", "registry", "context_warn_mb", "transfer")
CONTAINER_LABEL = "buildml"  # every container we start carries it (value: our pid@host)


@dataclass(frozen=True)
class DockerSettings:
    """The `docker:` mapping of buildml.yaml."""

    host: str | None = None
    registry: str | None = None
    context_warn_bytes: int = 100 << 20
    transfer: str | None = None  # mount (bind the sandbox; local engines) or copy (tar in and out; remote engines)


def docker_settings(raw) -> DockerSettings:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise LoadError("docker must be a mapping", hint="e.g. docker: {host: ssh://gpu-box, registry: registry.example.com/ml}")
    for key in raw:
        if key not in SETTINGS:
            raise LoadError(f"unknown docker setting {key!r}", hint="known: " + ", ".join(SETTINGS))
    warn_mb = raw.get("context_warn_mb", 100)
    if isinstance(warn_mb, bool) or not isinstance(warn_mb, (int, float)) or warn_mb <= 0:
        raise LoadError(f"docker.context_warn_mb must be a positive number of MB, not {warn_mb!r}")
    if raw.get("transfer") not in (None, "mount", "copy"):
        raise LoadError(f"docker.transfer must be mount or copy, not {raw['transfer']!r}",
                        hint="mount binds the sandbox (the engine shares this disk); copy sends it as a tar")
    return DockerSettings(raw.get("host"), raw.get("registry"), int(warn_mb * (1 << 20)), raw.get("transfer"))


def default_repository(label) -> str:
    """buildml/<package>/<name>, lower-cased into Docker's repository alphabet."""
    text = "/".join(p for p in ("buildml", label.package, label.name) if p).lower()
    return re.sub(r"[^a-z0-9._/-]+", "-", text)


class Engine:
    """A lazily created docker SDK client for the engine `discovery.find_endpoint` names.

    Precedence: DOCKER_HOST, then docker.host in buildml.yaml, then DOCKER_CONTEXT, then the docker CLI's current
    context, then the default socket (see buildml/executors/docker/discovery.py).
    """

    def __init__(self, settings: DockerSettings):
        self.settings = settings
        self._client = None
        self._endpoint = None

    @property
    def endpoint(self):
        """Where the engine is and where that came from (found once, on first use)."""
        if self._endpoint is None:
            from buildml.executors.docker.discovery import find_endpoint

            self._endpoint = find_endpoint(self.settings.host)
        return self._endpoint

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def is_local(self) -> bool:
        return self.host.startswith("unix://")

    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def cli_env(self) -> dict:
        """os.environ for a `docker` CLI process that must reach this same engine."""
        return self.endpoint.cli_env(os.environ)

    def _connect(self):
        import docker

        endpoint = self.endpoint
        try:
            if endpoint.host.startswith("ssh://"):
                from buildml.executors.docker.ssh import ssh_client

                return ssh_client(endpoint.host, timeout=600)
            if endpoint.tls is None:
                client = docker.DockerClient(base_url=endpoint.host, timeout=600)
            else:  # the API version is asked only once the engine's own CA is sure to be used
                from docker.constants import MINIMUM_DOCKER_API_VERSION

                client = docker.DockerClient(base_url=endpoint.host, tls=endpoint.tls, timeout=600,
                                             version=MINIMUM_DOCKER_API_VERSION)
                _keep_engine_verify(client.api)
                client.api._version = client.api._retrieve_server_version()
            client.ping()
            return client
        except docker.errors.DockerException as exc:
            raise EnvironmentProblem(
                f"cannot reach the Docker engine at {endpoint.host} (from {endpoint.source}): {_short(exc)}",
                hint=_unreachable_hint(endpoint)) from None

    def image_present(self, ref: str) -> bool:
        import docker

        try:
            self.client().images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            raise engine_error(exc, f"inspecting image {ref}") from None

    def pull_from_registry(self, repository: str, tag: str) -> bool:
        """Fetch <registry>/<repository>:<tag> and tag it locally; False when no registry has it."""
        import docker

        if not self.settings.registry:
            return False
        remote = f"{self.settings.registry.rstrip('/')}/{repository}"
        try:
            image = self.client().images.pull(remote, tag=tag)
        except docker.errors.DockerException:
            return False
        image.tag(repository, tag)
        return True

    def push(self, repository: str, tag: str, on_line) -> None:
        remote = f"{self.settings.registry.rstrip('/')}/{repository}"
        client = self.client()
        client.images.get(f"{repository}:{tag}").tag(remote, tag)
        for chunk in client.api.push(remote, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise EnvironmentProblem(f"push of {remote}:{tag} failed: {chunk['error']}",
                                         hint="check `docker login` for the registry in docker.registry")
            if chunk.get("status"):
                on_line(f"push: {chunk['status']} {chunk.get('progress', '')}".rstrip())


def _keep_engine_verify(api) -> None:
    """Verify the engine against its own CA (or not at all), as the docker CLI does, whatever REQUESTS_CA_BUNDLE says.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the session's `verify`, which is where docker-py puts
    the engine's ca.pem; a machine with a corporate bundle set would then reject every TLS engine.
    """
    merge = api.merge_environment_settings

    def engine_verify(url, proxies, stream, verify, cert):
        settings = merge(url, proxies, stream, verify, cert)
        settings["verify"] = api.verify if verify is None else verify
        return settings

    api.merge_environment_settings = engine_verify


def _unreachable_hint(endpoint) -> str:
    where = ("start it (e.g. `sudo systemctl start docker`), point DOCKER_HOST or docker.host in buildml.yaml at a "
             "running engine")
    if endpoint.context:
        where = (f"start the engine of context {endpoint.context!r}, pick another (`docker context use NAME`), or set "
                 "DOCKER_HOST")
    elif endpoint.host.startswith("ssh://"):
        where = ("check that `ssh` reaches the host without a prompt (key, ~/.ssh/config, ssh-agent) and that its user "
                 "can run `docker`")
    return where + ", or run without containers: `buildml build --executor local`"


def engine_error(exc, doing: str) -> EnvironmentProblem:
    """An engine API error as a message saying what to do."""
    text = _short(exc)
    if "no space left" in text.lower():
        return EnvironmentProblem(f"the Docker engine is out of disk while {doing}",
                                  hint="free space: `docker system prune` (and check `docker system df`)")
    if "device driver" in text or "capabilities: [[gpu]]" in text:
        return EnvironmentProblem(f"{doing}: GPUs requested but the Docker engine has no GPU runtime",
                                  hint="install the NVIDIA container toolkit on the engine's host, or drop resources.gpus")
    return EnvironmentProblem(f"Docker engine error while {doing}: {text}")


def _short(exc) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(text))
    if errno:
        return errno.group(1).strip()
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else type(exc).__name__
