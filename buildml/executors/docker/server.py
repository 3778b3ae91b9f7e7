"""An endpoint's server as a container (`buildml run`): its port published on 127.0.0.1 only."""

from __future__ import annotations

import os
import socket

from buildml.executors.docker.engine import CONTAINER_LABEL, engine_error
from buildml.executors.docker.run import sweep_orphans


def start_server_container(engine, ref: str, inner_port: int, host_port: int, label: str, env: dict | None = None):
    """Create and start a container of image ref serving on inner_port, published as 127.0.0.1:host_port;
    it runs as the invoking user, labelled so that a killed buildml's leftovers are swept."""
    import docker

    client = engine.client()
    sweep_orphans(engine)
    try:
        container = client.containers.create(
            ref, ports={f"{inner_port}/tcp": ("127.0.0.1", host_port)},
            user=f"{os.getuid()}:{os.getgid()}", environment={**(env or {}), "PORT": str(inner_port), "PYTHONUNBUFFERED": "1"},
            labels={CONTAINER_LABEL: f"{os.getpid()}@{socket.gethostname()}", "buildml.target": label},
            network_mode="bridge", init=True, stdin_open=False, tty=False)
        container.start()
    except docker.errors.APIError as exc:
        raise engine_error(exc, f"starting the server of {label}") from None
    return container
