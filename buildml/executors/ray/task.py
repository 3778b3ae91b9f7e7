"""The node side of the Ray executor: stage an action's inputs from the remote cache, run it here, push its outputs.

One detached Ray actor (`ActionRunner`) per action. Its constructor starts the work in a
thread, so the run goes on when the client that submitted it exits (`--detach`); the client
(or a later one that attaches) polls `poll(offset)` for log bytes and the result. The result
is also written to the remote cache under `runs/<key[:2]>/<key>.json`, so a client that comes
back after the actor has gone finds it there without contacting Ray. Result manifests are
written by the client's Runner as for any other executor: this side never writes `ac/`.

Ray is imported only inside functions: the client imports this module for its codec too.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

LINGER_S = 60  # a finished actor waits this long for a client to read its result, then exits
LOG_CHUNK = 1 << 20  # log bytes per poll
RUNS = "runs"  # result records under the remote cache root


# -- the action as JSON (the node needs no pickles from the cache) --------------------------
def action_to_json(action) -> dict:
    """The Action as plain JSON-able data (spec fields, inputs, params, image key, key)."""
    import dataclasses

    spec = {f.name: getattr(action.spec, f.name) for f in dataclasses.fields(action.spec)}
    return {"spec": json.loads(json.dumps(spec, default=list)), "key": action.key, "image_key": action.image_key,
            "inputs": {p: [f.digest, f.size, f.executable] for p, f in action.inputs.items()},
            "params": action.param_values}


def action_from_json(data: dict):
    """The Action back from action_to_json (its key is carried, not recomputed)."""
    from buildml.action import Action, ActionSpec, InputFile
    from buildml.labels import Label

    fields = {k: _tuples(v) for k, v in data["spec"].items()}
    fields["label"] = Label(*fields["label"])
    fields["image"] = Label(*fields["image"]) if fields.get("image") else None
    known = set(ActionSpec.__dataclass_fields__)
    spec = ActionSpec(**{k: v for k, v in fields.items() if k in known})
    inputs = {p: InputFile(d, s, e) for p, (d, s, e) in data["inputs"].items()}
    action = Action(spec, inputs, data["params"], data.get("image_key"))
    object.__setattr__(action, "_key", data["key"])
    return action


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


# -- result records in the remote cache ----------------------------------------------------------
def record_path(root: str, key: str) -> str:
    return f"{root}/{RUNS}/{key[:2]}/{key}.json"


def read_record(store, key: str) -> dict | None:
    """The result record of a run of key, or None (also when it is malformed: the remote cache is untrusted)."""
    from buildml.store.remote import open_fs
    from buildml.trust import Untrusted, check_digest, validate_outputs, validate_relpaths

    fs, root = open_fs(store.url, store.storage_options)
    try:
        record = json.loads(fs.cat_file(record_path(root, check_digest(key, "action key"))))
        if not isinstance(record, dict):
            return None
        validate_outputs(record.get("outputs", {}), "run record outputs")
        validate_relpaths(record.get("dirs", []), "run record dirs")
        if record.get("log") is not None:
            check_digest(record["log"], "run record log")
        return record
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError, Untrusted):
        return None


def write_record(store, key: str, result: dict) -> None:
    from buildml.store.remote import open_fs

    fs, root = open_fs(store.url, store.storage_options)
    path = record_path(root, key)
    if "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(result, sort_keys=True).encode())


def drop_record(store, key: str) -> None:
    from buildml.store.remote import open_fs

    fs, root = open_fs(store.url, store.storage_options)
    try:
        fs.rm_file(record_path(root, key))
    except (FileNotFoundError, OSError):
        pass


# -- where this runs ---------------------------------------------------------------------------
def where() -> dict:
    """This node: Ray node id and IP, host name, the GPUs Ray assigned, the buildml version it runs."""
    import ray

    from buildml import __version__

    ctx = ray.get_runtime_context()
    return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "buildml": __version__}


def describe(exc: BaseException) -> dict:
    """An exception as data the client turns back into the right error class."""
    from buildml.errors import BuildmlError

    if isinstance(exc, BuildmlError):
        return {"who": exc.who, "type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return {"who": "internal", "type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}", "hint": ""}


# -- the actor -----------------------------------------------------------------------------------
class ActionRunner:
    """Runs one action on this node in a background thread; clients poll it for log bytes and the result."""

    def __init__(self, job: dict):
        self._dir = Path(tempfile.mkdtemp(prefix="buildml-ray-"))
        self._log = self._dir / "action.log"  # what the executor writes (the log kept in the cache)
        self._stream = self._dir / "stream.log"  # the same lines, flushed one by one: what clients poll
        self._stream.touch()
        self._state, self._result, self._executor = "running", None, None
        self._stopped, self._released = False, threading.Event()
        self._started = time.time()
        self._where = where()
        threading.Thread(target=self._work, args=(job,), daemon=True).start()

    def poll(self, offset: int) -> dict:
        """Log bytes from offset (at most LOG_CHUNK), the state, and the result once done."""
        state = self._state
        with open(self._stream, "rb") as f:
            f.seek(offset)
            data = f.read(LOG_CHUNK)
        return {"state": state, "log": data, "result": self._result if state == "done" else None,
                "where": self._where, "started": self._started}

    def info(self) -> dict:
        """State, node, start time and the last log line (for `buildml status`)."""
        with open(self._stream, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", errors="replace").strip().splitlines()
        return {"state": self._state, "where": self._where, "started": self._started,
                "last_line": lines[-1] if lines else ""}

    def stop(self) -> None:
        """Ctrl-C on the client: kill the action (its process group, or its container)."""
        self._stopped = True
        if self._executor is not None:
            self._executor.cancel()

    def release(self) -> None:
        """The client has the result: end this actor."""
        import ray

        self._released.set()
        _remove(self._dir)
        ray.actor.exit_actor()

    def _work(self, job: dict) -> None:
        try:
            with open(self._stream, "a", encoding="utf-8") as stream:
                result = run_job(job, self._log, self._hold, lambda: self._stopped, _line_writer(stream))
        except BaseException as exc:  # the client gets it as data, never a hang
            result = {"error": describe(exc), "node": self._where}
        self._result, self._state = result, "done"
        if not self._released.wait(job.get("linger", LINGER_S)):
            import ray

            ray.get_runtime_context().current_actor.release.remote()

    def _hold(self, executor) -> None:
        self._executor = executor
        if self._stopped:
            executor.cancel()


def _line_writer(stream):
    def on_line(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()
    return on_line


def _remove(path) -> None:
    from buildml.store.local import remove_tree

    remove_tree(path)


# -- one run ---------------------------------------------------------------------------------------
def run_job(job: dict, log_path: Path, hold, stopped, on_line=lambda line: None) -> dict:
    """Stage, run, push; the result (also written to the remote cache as the run's record unless stopped)."""
    from buildml.store.remote import RemoteStore

    store = RemoteStore(job["store"], job.get("storage_options") or {})
    payload = json.loads(store.read_bytes(job["payload"]))
    action = action_from_json(payload["action"])
    try:
        log_path.touch()
        result = _run(store, action, payload, log_path, hold, on_line)
    except Exception as exc:  # staging, a missing out, the Docker engine: reported to the client as data
        result = {"error": describe(exc), "node": where()}
    try:
        result["log"] = store.put_bytes(log_path.read_bytes())
    except Exception:  # the error above says more
        pass
    if not stopped():
        write_record(store, action.key, result)
    return result


def _run(store, action, payload, log_path: Path, hold, on_line) -> dict:
    from buildml.executors.sandbox import Sandbox

    root = Path(tempfile.mkdtemp(prefix="buildml-ray-run-"))
    try:
        sandbox = Sandbox(root / "sandbox")
        _stage(store, sandbox, action, root / "blobs")
        env, masks = _env(action.spec, sandbox, payload)
        executor = _executor(payload)
        hold(executor)
        result = _execute(executor, action, sandbox, env, masks, log_path, on_line)
        if result["exit_code"] == 0:
            result.update(_push_outputs(store, sandbox, action.spec))
        return result
    finally:
        _remove(root)


def _stage(store, sandbox, action, blobs: Path) -> None:
    """Download every input blob (concurrently), then lay the sandbox out, verifying each digest."""
    from buildml.errors import EnvironmentProblem
    from buildml.executors.action_env import params_by_file
    from buildml.executors.sandbox import Staged

    blobs.mkdir(parents=True, exist_ok=True)
    found = store.download({f.digest for f in action.inputs.values()}, blobs)
    missing = sorted(p for p, f in action.inputs.items() if f.digest not in found)
    if missing:
        raise EnvironmentProblem(f"input {missing[0]} of {action.spec.label} is not in the remote cache {store.url}",
                                 hint="the client uploads inputs before submitting; check that both see the same cache")
    staged = [Staged(p, f.digest, f.executable, source=found[f.digest]) for p, f in sorted(action.inputs.items())]
    sandbox.stage(store, staged, params_by_file(action), action.spec.workdir, action.spec.outs, link=False)


def _env(spec, sandbox, payload) -> tuple[dict, tuple]:
    """The documented action env for this node's sandbox; secrets from this worker's env; the assigned GPUs."""
    from buildml.executors.action_env import action_env

    caller = {"PATH": os.environ.get("PATH", os.defpath)}
    caller.update({n: os.environ[n] for n in spec.secrets if n in os.environ})
    env, masks = action_env(spec, sandbox, caller)
    if not payload.get("image_ref") and os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env, masks


def _executor(payload):
    """A sandboxed process, or the target's image in this node's Docker engine with the assigned GPUs."""
    if not payload.get("image_ref"):
        from buildml.executors.local import LocalExecutor

        return LocalExecutor()
    from buildml.executors.docker.engine import DockerSettings, Engine
    from buildml.errors import EnvironmentProblem

    engine = Engine(DockerSettings(registry=payload.get("registry")))
    ref = payload["image_ref"]
    repository, _, tag = ref.rpartition(":")
    if not engine.image_present(ref) and not engine.pull_from_registry(repository, tag):
        raise EnvironmentProblem(f"image {ref} is not in the Docker engine of node {socket.gethostname()}",
                                 hint="set docker.registry in buildml.yaml and push: true on the image target so nodes can pull it")
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return _node_docker(engine, ref, gpus)


def _node_docker(engine, ref: str, gpus: list):
    from buildml.executors.docker.run import DockerExecutor, gpu_devices

    class NodeDocker(DockerExecutor):
        """The Docker executor, with GPU device requests naming the devices Ray assigned."""

        def _config(self, request, image):
            config = super()._config(request, image)
            if not (gpus and config.get("device_requests")):
                return config
            if _nvidia_runtime(engine):
                config["device_requests"] = gpu_devices(gpus)
                return config
            config.pop("device_requests")  # a node that declares GPUs its engine cannot attach (e.g. a test node)
            config["environment"]["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            note = (f"buildml: the Docker engine of {socket.gethostname()} has no NVIDIA runtime; the container runs "
                    f"without GPU devices (CUDA_VISIBLE_DEVICES={','.join(gpus)} as Ray assigned)")
            with open(request.log_path, "a") as log:
                log.write(note + "\n")
            request.on_line(note)
            return config

    return NodeDocker(engine, lambda label, key: ref)


def _nvidia_runtime(engine) -> bool:
    try:
        return "nvidia" in (engine.client().info().get("Runtimes") or {})
    except Exception:  # no answer: try the device request and let the engine say what is wrong
        return True


def _execute(executor, action, sandbox, env, masks, log_path, on_line) -> dict:
    from buildml.executors.action_env import screened
    from buildml.executors import RunRequest

    outcome = executor.run(RunRequest(action, sandbox, env, log_path, on_line, masks))
    outcome = screened(outcome, sandbox, action.spec, {n: env[n] for n in action.spec.secrets if n in env}, log_path)
    return {"exit_code": outcome.exit_code, "duration": outcome.duration, "timed_out": outcome.timed_out,
            "cpu_s": outcome.cpu_s, "peak_rss_bytes": outcome.peak_rss_bytes, "detail": outcome.detail, "extra": outcome.extra, "node": where(), "finished": time.time()}


def _push_outputs(store, sandbox, spec) -> dict:
    """Upload every output file; {outputs: {path: {digest, size, exec}}, dirs: [outs that are directories]}."""
    from buildml.hashing import copy_and_digest

    private = sandbox.root / "push"  # a copy only buildml holds: a process the command left cannot swap or rewrite it
    private.mkdir(exist_ok=True)
    outputs, copies = {}, []
    for i, (path, (_full, executable)) in enumerate(sorted(sandbox.collect(spec.outs).items())):
        copy = private / str(i)
        digest = copy_and_digest(sandbox.open_output(path), copy)  # an fd opened without following links; closed
        outputs[path] = {"digest": digest, "size": os.path.getsize(copy), "exec": executable}
        copies.append((copy, digest))
    store.put_files(copies)
    return {"outputs": outputs, "dirs": [o for o in spec.outs if (sandbox.ws / o).is_dir()]}
