"""The Docker executor: one container per action, the sandbox mounted as the workspace, always removed."""

from __future__ import annotations

import os
import socket
import threading
import time

from buildml.executors import Executor, RunOutcome, RunRequest, mask
from buildml.executors.docker.engine import CONTAINER_LABEL, engine_error
from buildml.executors.docker.copy import (
    HOME,
    WORKSPACE,
    copy_config,
    fetch_outs,
    give_back,
    lend,
    run_user,
    send_workspace,
)
from buildml.errors import EnvironmentProblem

MAX_RO_MOUNTS = 256  # inputs mounted read-only one by one up to this many; beyond, they are made read-only by mode
_ENV_FROM_SANDBOX = ("PATH", "HOME", "TMPDIR", "BUILDML_WORKSPACE")


class DockerExecutor(Executor):
    """Runs each action in a fresh container of its image target's image."""

    name = "docker"

    def __init__(self, engine, image_ref):
        self.engine = engine
        self.image_ref = image_ref  # (image label, image key) -> "repository:key"
        self.owner = f"{os.getpid()}@{socket.gethostname()}"
        self.copy = engine.settings.transfer == "copy" or (engine.settings.transfer is None and not engine.is_local)
        self._running: dict[str, object] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    def run(self, request: RunRequest) -> RunOutcome:
        action, spec = request.action, request.action.spec
        ref = self.image_ref(spec.image, action.image_key)
        if not self.engine.image_present(ref):
            raise EnvironmentProblem(f"image {ref} of {spec.label} is not in the Docker engine",
                                     hint=f"build it: buildml build {spec.image}")
        start = time.monotonic()
        self._lend(request)
        try:
            container = self._create(request, ref)
            try:
                return self._run_created(container, request, start, ref)
            finally:
                self._remove(container)
        finally:
            self._give_back(request)

    def _lend(self, request: RunRequest) -> None:
        """A root caller's container runs as nobody: let it write the mounted sandbox."""
        if run_user() != (os.getuid(), os.getgid()) and not self.copy:
            lend(request.sandbox, *run_user())

    def _give_back(self, request: RunRequest) -> None:
        if run_user() != (os.getuid(), os.getgid()) and not self.copy:
            give_back(request.sandbox)

    # -- steps -------------------------------------------------------------------------
    def _create(self, request: RunRequest, ref: str):
        import docker

        spec = request.action.spec
        try:
            container = self.engine.client().containers.create(ref, **self._config(request, ref))
        except docker.errors.APIError as exc:
            raise engine_error(exc, f"creating the container of {spec.label}") from None
        with self._lock:
            self._running[container.id] = container
            cancelled = self._cancelled
        if cancelled:
            self._remove(container)
            raise KeyboardInterrupt
        return container

    def _config(self, request: RunRequest, ref: str) -> dict:
        spec = request.action.spec
        workdir = f"{WORKSPACE}/{spec.workdir}" if spec.workdir else WORKSPACE
        config = dict(
            command=list(spec.argv), working_dir=workdir, user="%d:%d" % run_user(),
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            environment=self._env(request, ref), network_disabled=not spec.network,
            labels={CONTAINER_LABEL: self.owner, "buildml.target": str(spec.label), "buildml.key": request.action.key},
            stdin_open=False, tty=False, init=True,
        )
        if not spec.network:
            config["network_mode"] = "none"
        config.update(copy_config() if self.copy else {"mounts": self._mounts(request)})
        config.update(_limits(dict(spec.resources)))
        return config

    def _env(self, request: RunRequest, ref: str) -> dict:
        """The sandbox env with container paths: the image's PATH, private HOME and /tmp, declared env, secrets."""
        env = {k: v for k, v in request.env.items() if k not in _ENV_FROM_SANDBOX}
        env.update({"HOME": HOME, "TMPDIR": "/tmp", "BUILDML_WORKSPACE": WORKSPACE})
        image_path = _image_env(self.engine.client().images.get(ref)).get("PATH")
        env["PATH"] = image_path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env.update(dict(request.action.spec.env))  # a declared PATH wins
        return env

    def _mounts(self, request: RunRequest) -> list:
        from docker.types import Mount

        sandbox = request.sandbox
        mounts = [Mount(WORKSPACE, str(sandbox.ws), type="bind"), Mount(HOME, str(sandbox.home), type="bind"),
                  Mount("/tmp", str(sandbox.tmp), type="bind")]
        inputs = sorted(request.action.inputs)
        if len(inputs) <= MAX_RO_MOUNTS:
            mounts += [Mount(f"{WORKSPACE}/{p}", str(sandbox.ws / p), type="bind", read_only=True) for p in inputs]
        else:
            for p in inputs:
                os.chmod(sandbox.ws / p, 0o555 if request.action.inputs[p].executable else 0o444)
        return mounts

    def _run_created(self, container, request: RunRequest, start: float, ref: str) -> RunOutcome:
        spec = request.action.spec
        timed_out = threading.Event()
        timer = None
        start_wall = time.time()
        if spec.timeout:
            timer = threading.Timer(spec.timeout, lambda: (timed_out.set(), self._kill(container)))
            timer.daemon = True
        try:
            if self.copy:
                send_workspace(container, request)
            container.start()
            if timer:
                timer.start()
            self._stream(container, request)
            code = container.wait().get("StatusCode", 1)
            if self.copy and code == 0 and not timed_out.is_set():
                fetch_outs(container, request)
        except Exception as exc:  # docker.errors.APIError; imported lazily
            if type(exc).__module__.startswith("docker"):
                raise engine_error(exc, f"running {spec.label}") from None
            raise
        finally:
            if timer:
                timer.cancel()
        state = container.client.api.inspect_container(container.id)["State"] if not timed_out.is_set() else {}
        detail = f"timed out after {spec.timeout:g}s" if timed_out.is_set() else \
            _death(container, state, code, start_wall, dict(spec.resources)) \
            if (code > 128 or state.get("OOMKilled")) and not self._cancelled else ""
        return RunOutcome(code if not timed_out.is_set() else -9, time.monotonic() - start, self.name, self.engine.host,
                          timed_out=timed_out.is_set(), detail=detail, extra={"image": ref})

    def _stream(self, container, request: RunRequest) -> None:
        """Copy the container's output into the log and the live view, line by line."""
        pending = ""
        with open(request.log_path, "a", encoding="utf-8", errors="replace") as log:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                pending += chunk.decode("utf-8", errors="replace")
                *lines, pending = pending.split("\n")
                for line in lines:
                    line = mask(line, request.masks)
                    log.write(line + "\n")
                    request.on_line(line)
            if pending:
                line = mask(pending, request.masks)
                log.write(line + "\n")
                request.on_line(line)

    def _kill(self, container) -> None:
        try:
            container.kill()
        except Exception:  # already gone
            pass

    def _remove(self, container) -> None:
        with self._lock:
            self._running.pop(container.id, None)
        try:
            container.remove(force=True)
        except Exception as exc:  # 404: already removed
            if getattr(getattr(exc, "response", None), "status_code", None) not in (404, 409):
                pass

    def shell(self, request: RunRequest, argv: list, tty: bool) -> int:
        """Run argv interactively in the action's container (for `buildml shell`); return its exit code."""
        import subprocess

        spec = request.action.spec
        ref = self.image_ref(spec.image, request.action.image_key)
        if not self.engine.image_present(ref):
            raise EnvironmentProblem(f"image {ref} of {spec.label} is not in the Docker engine",
                                     hint=f"build it: buildml build {spec.image}")
        config = {**self._config(request, ref), "command": argv, "tty": tty, "stdin_open": True}
        self._lend(request)
        container = self.engine.client().containers.create(ref, **config)
        try:
            if self.copy:
                send_workspace(container, request)
            return subprocess.call(["docker", "start", "-a", "-i", container.id], env=self.engine.cli_env())
        finally:
            self._remove(container)
            self._give_back(request)

    def cancel(self) -> None:
        """Ctrl-C: kill and remove every container this process started."""
        with self._lock:
            self._cancelled = True
            running = list(self._running.values())
        for container in running:
            self._remove(container)
        sweep(self.engine, self.owner)


def sweep(engine, owner: str) -> None:
    """Remove every container labelled as ours (owner `pid@host`), running or not."""
    try:
        client = engine.client()
        for c in client.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={owner}"}):
            c.remove(force=True)
    except Exception:  # best effort while stopping
        pass


def sweep_orphans(engine) -> None:
    """Remove containers left by buildml processes of this host that died without cleaning up."""
    host = socket.gethostname()
    for c in engine.client().containers.list(all=True, filters={"label": CONTAINER_LABEL}):
        pid, _, where = c.labels.get(CONTAINER_LABEL, "").partition("@")
        if where == host and pid.isdigit() and not _alive(int(pid)):
            try:
                c.remove(force=True)
            except Exception:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _death(container, state: dict, code: int, since: float, resources: dict) -> str:
    """Why a container died of a signal: the kernel's OOM killer, a `docker kill` buildml did not send, or the signal."""
    if state.get("OOMKilled"):
        return f"out of memory (limit {_megabytes(resources['memory'])})" if resources.get("memory") else "out of memory"
    try:  # the engine logs every kill request; buildml's own (timeout, Ctrl-C) are excluded by the caller
        events = container.client.api.events(since=int(since), until=int(time.time()) + 1, decode=True,
                                             filters={"container": container.id, "event": "kill"})
        sent = [e.get("Actor", {}).get("Attributes", {}).get("signal", "") for e in events]
    except Exception:  # an engine without the events API: fall back to the exit code
        sent = []
    name = _signal_name(int(sent[-1]) if sent and sent[-1].isdigit() else code - 128)
    return f"killed from outside ({name}, e.g. `docker kill`)" if sent else f"killed by {name}"


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _megabytes(size: int) -> str:
    return f"{size // (1 << 20)} MB" if size % (1 << 20) == 0 else f"{size / (1 << 20):.1f} MB"


def _image_env(image) -> dict:
    pairs = (image.attrs.get("Config") or {}).get("Env") or []
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def _limits(resources: dict) -> dict:
    """resources -> engine limits: cpus -> nano_cpus, memory -> mem_limit, gpus -> device requests."""
    from docker.types import DeviceRequest

    limits = {}
    if resources.get("cpus"):
        limits["nano_cpus"] = int(resources["cpus"] * 1e9)
    if resources.get("memory"):
        limits["mem_limit"] = int(resources["memory"])
        limits["memswap_limit"] = int(resources["memory"])
    if resources.get("gpus"):
        limits["device_requests"] = [DeviceRequest(count=int(resources["gpus"]), capabilities=[["gpu"]])]
    return limits


def gpu_devices(device_ids: list) -> list:
    """device_requests naming GPUs by id (as Ray assigns them to a node's action)."""
    from docker.types import DeviceRequest

    return [DeviceRequest(device_ids=list(device_ids), capabilities=[["gpu"]])]
