"""The Ray executor: each stale action runs on a node of an existing Ray cluster that has its resources.

One action is one *detached actor* (`buildml-<action key>`, namespace `buildml`), not a plain
Ray task: a task dies with the driver that submitted it, and `--detach` must outlive the
client. The actor asks for the target's `resources` as a task would (cpus -> num_cpus, gpus ->
num_gpus, memory, any other key as a custom resource such as `accelerator_type:A100`), holds
them while the action runs and exits when a client has the result (or LINGER_S after). Its
name is the lock that makes a later build attach to a running action instead of starting a
second one. (The Ray Jobs API would also outlive the client, but needs the dashboard and a
job per action.)

Inputs and outputs travel through the shared remote cache: the client uploads the input
blobs the remote lacks and the action (as JSON); on its node the actor pulls the inputs by
digest into a sandbox laid out like the workspace, runs the action there (a sandboxed process,
or the target's image in the node's Docker engine with the GPUs Ray assigned), pushes the
outputs and returns their digests (buildml/executors/ray_task.py). The client downloads them
into its sandbox, verified, and the Runner records them like any executor's: the result is a
normal cache entry, so the next build anywhere is a cache hit that never contacts Ray.

Secrets reach the node only through the actor's runtime_env env vars, never its arguments;
remote cache credentials are the node's own (its environment or instance role). Each actor gets
this client's own buildml package through runtime_env `py_modules` (Ray uploads it once per
content), so client and nodes never run different buildml code; its dependencies (fsspec and
the remote's filesystem) must be installed on the nodes. A configured runtime_env is merged with
that, never replaced; `ship_buildml: false` leaves buildml to the nodes' own install.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field

from buildml.executors import Executor, RunOutcome, RunRequest
from buildml.executors.ray import task as ray_task
from buildml.errors import CacheCorruption, EnvironmentProblem, ExecutionError, UserError
from buildml.trust import valid_cost

OPTIONS = ("address", "namespace", "max_retries", "node_wait", "runtime_env", "linger", "ship_buildml")
NAMESPACE = "buildml"
POLL_S = 0.25
CONNECT_TIMEOUT_S = 5
RAY_NAMES = {"cpus": "CPU", "gpus": "GPU", "memory": "memory"}
SECRET_WORDS = ("key", "secret", "token", "password", "credential")

_connection: dict = {}
_connect_lock = threading.Lock()


def package_dir() -> str:
    """The directory of the buildml package this client runs (what nodes get as a runtime_env py_module)."""
    import buildml

    return os.path.dirname(os.path.abspath(buildml.__file__))


def actor_name(key: str) -> str:
    return f"buildml-{key}"


def ray_options(spec) -> dict:
    """The actor's resource request: num_cpus (default 1), num_gpus, memory (bytes), custom resources."""
    res = dict(spec.resources)
    opts = {"num_cpus": res.pop("cpus", 1), "num_gpus": res.pop("gpus", 0)}
    memory = res.pop("memory", None)
    if memory:
        opts["memory"] = int(memory)
    if res:
        opts["resources"] = {k: float(v) for k, v in res.items()}
    return opts


def ray_needs(spec) -> dict:
    """{Ray resource name: amount} a node must have for spec (non-zero ones only)."""
    res = dict(spec.resources)
    res.setdefault("cpus", 1)
    return {RAY_NAMES.get(k, k): v for k, v in res.items() if v}


def connect(address: str, namespace: str = NAMESPACE, ship: bool = False):
    """The ray module, connected to address once per process (a second cluster is refused). ship: the job's
    runtime_env carries this client's buildml package (Ray uploads a local package only at ray.init; an actor
    then names it by the gcs:// URI, see shipped_modules)."""
    with _connect_lock:
        try:
            import ray
        except ImportError as exc:
            raise UserError(f"the Ray executor needs Ray: {exc}", hint="pip install 'buildml-cli[ray]'") from None
        if ray.is_initialized():
            if _connection.get("address") not in (None, address):
                raise UserError(f"one Ray cluster per build: already connected to {_connection['address']}, not {address}",
                                hint="point every ray executor in buildml.yaml at the same address")
            return ray
        _reachable(address)
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"py_modules": [package_dir()]} if ship else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EnvironmentProblem(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}",
                                     hint="start it (ray start --head) or fix the executor's address in buildml.yaml") from None
        _connection["address"] = address
        return ray


def shipped_modules(ray) -> list:
    """The py_modules URIs of this job's runtime_env (this client's buildml when connect shipped it)."""
    return list((ray.get_runtime_context().runtime_env or {}).get("py_modules") or [])


def _reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address (ray.init would wait)."""
    hostport = address.split("://", 1)[-1]
    if address == "auto" or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"the Ray cluster at {address} does not answer: {getattr(exc, 'strerror', None) or exc}",
                                 hint="start it (ray start --head) or fix the executor's address in buildml.yaml") from None


@dataclass
class Run:
    """One remote action this client follows."""

    handle: object
    key: str
    submitted: bool  # False: attached to a run another build started
    where: dict = field(default_factory=dict)
    stopped: bool = False


class RayExecutor(Executor):
    config_options = None  # checks its own (_checked_options)
    """Runs actions on a Ray cluster, inputs and outputs through the shared remote cache."""

    def __init__(self, config, context):
        self.config, self.context = config, context
        self.name = config.name
        self.options = _checked_options(config, context.settings)
        self.address = str(self.options.get("address") or os.environ.get("RAY_ADDRESS") or "auto")
        self.namespace = str(self.options.get("namespace", NAMESPACE))
        self.max_retries = int(self.options.get("max_retries", 2))
        self.node_wait = float(self.options.get("node_wait", 60))
        self.linger = float(self.options.get("linger", ray_task.LINGER_S))
        self.ship = bool(self.options.get("ship_buildml", True))
        self.remote = _remote_store(context.store, config.name)
        self._runs: dict = {}
        self._lock = threading.Lock()
        self._cancelled = False
        self._actor_class = None

    # -- the cluster -----------------------------------------------------------------------------
    def _ray(self):
        return connect(self.address, self.namespace, ship=self.ship)

    def _nodes(self) -> list:
        return [n for n in self._ray().nodes() if n.get("Alive")]

    def shell(self, request: RunRequest, argv: list, tty: bool) -> int:
        """`buildml shell` on a ray target opens the sandbox here, as before the registry (not on a cluster node)."""
        import subprocess

        return subprocess.call(argv, cwd=request.sandbox.workdir(request.action.spec.workdir), env=request.env)

    def capacity(self) -> dict:
        """The cluster's totals in buildml's names: cpus, gpus, memory (bytes)."""
        totals = self._ray().cluster_resources()
        return {"cpus": totals.get("CPU", 0), "gpus": totals.get("GPU", 0), "memory": totals.get("memory")}

    def _refusal(self, spec) -> UserError | None:
        """A UserError when no live node has everything spec asks for, naming the resource and the largest node."""
        needs = ray_needs(spec)
        nodes = [n.get("Resources", {}) for n in self._nodes()]
        if any(all(r.get(k, 0) >= v for k, v in needs.items()) for r in nodes):
            return None
        cluster = f"ray executor {self.name!r} ({self.address})"
        for key, amount in needs.items():
            best = max((r.get(key, 0) for r in nodes), default=0)
            if best < amount:
                return UserError(f"{spec.label} asks for {_show(key, amount)}, but the largest node of {cluster} has "
                                 f"{_show(key, best)}", field="resources",
                                 hint="lower the target's resources, or add a node that has them to the cluster")
        return UserError(f"{spec.label} asks for " + ", ".join(_show(k, v) for k, v in needs.items()) +
                         f", and no single node of {cluster} has all of them", field="resources",
                         hint="lower the target's resources, or add a node that has them to the cluster")

    # -- running one action --------------------------------------------------------------------------
    def run(self, request: RunRequest) -> RunOutcome:
        action = request.action
        record = ray_task.read_record(self.remote, action.key)
        if record is not None:  # finished while nobody watched: collect it without contacting Ray
            return self._collect(record, request, None, replay_log=True)
        refusal = self._refusal(action.spec)
        if refusal is not None:
            raise refusal
        run = self._attach(action.key) or self._submit(request)
        if self.context.detach:
            from buildml.executors.remote_runs import Detached

            how = "submitted to" if run.submitted else "already running on"
            raise Detached(f"{how} {self.name} (ray {self.address}); it goes on without this build", self.name)
        return self._follow(run, request)

    def attaching(self, action) -> str:
        """A detached (or another client's) run of action's key: finished, with its record in the remote cache, or
        still running as the named actor. Best effort: any failure here is left for run() to report."""
        try:
            if ray_task.read_record(self.remote, action.key) is not None:
                return f"attached to the run that finished on {self.name} (ray {self.address}): collecting its result"
            self._ray().get_actor(actor_name(action.key), namespace=self.namespace)
        except ValueError:  # no actor of that name: a new run
            return ""
        except Exception:  # noqa: BLE001 - the cluster or the remote is unreachable: run() says so
            return ""
        return f"attached to the run already going on {self.name} (ray {self.address}), not a new one"

    def _attach(self, key: str) -> Run | None:
        try:
            handle = self._ray().get_actor(actor_name(key), namespace=self.namespace)
        except ValueError:
            return None
        return self._track(Run(handle, key, submitted=False))

    def _submit(self, request: RunRequest) -> Run:
        """Upload inputs and the action, create the actor; attach instead if another client just did."""
        action = request.action
        ws = request.sandbox.ws
        self.remote.put_files([(ws / path, f.digest) for path, f in sorted(action.inputs.items())])
        payload = {"action": ray_task.action_to_json(action), "image_ref": self._image_ref(action),
                   "registry": (self.context.settings.raw.get("docker") or {}).get("registry")}
        job = {"store": self.remote.url, "storage_options": _public(self.remote.storage_options),
               "payload": self.remote.put_bytes(json.dumps(payload, sort_keys=True).encode()), "linger": self.linger}
        opts = dict(name=actor_name(action.key), namespace=self.namespace, lifetime="detached", max_restarts=0,
                    max_concurrency=4, **ray_options(action.spec))
        runtime_env = self._runtime_env(request)
        if runtime_env:
            opts["runtime_env"] = runtime_env
        deadline = time.monotonic() + 15
        while True:
            try:
                handle = self._actor().options(**opts).remote(job)
                break
            except ValueError:  # the name is taken: another client runs this key (or a dead run's name is being freed)
                run = self._attach(action.key)
                if run is not None:
                    return run
                if time.monotonic() > deadline:
                    raise EnvironmentProblem(f"cannot submit {action.spec.label}: Ray keeps the name {actor_name(action.key)}") from None
                time.sleep(0.5)
        from buildml.executors.remote_runs import remember

        remember(self.context.state_dir, action.key, {"label": str(action.spec.label), "executor": self.name,
                                                         "address": self.address, "namespace": self.namespace,
                                                         "actor": actor_name(action.key)})
        return self._track(Run(handle, action.key, submitted=True))

    def _actor(self):
        if self._actor_class is None:
            self._actor_class = self._ray().remote(ray_task.ActionRunner)
        return self._actor_class

    def _runtime_env(self, request: RunRequest) -> dict:
        """The configured runtime_env merged with this client's buildml package (py_modules, unless ship_buildml:
        false) and the declared secrets as env vars (never in the actor's arguments)."""
        runtime_env = dict(self.options.get("runtime_env") or {})
        if self.ship:  # an actor's py_modules replace the job's: list the user's and buildml's
            modules = list(runtime_env.get("py_modules") or [])
            runtime_env["py_modules"] = modules + [m for m in shipped_modules(self._ray()) if m not in modules]
        secrets = {n: request.env[n] for n in request.action.spec.secrets if n in request.env}
        if secrets:
            runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **secrets}
        return runtime_env

    def _image_ref(self, action) -> str | None:
        spec = action.spec
        if spec.image is None:
            return None
        return self.context.image_ref(spec.image, action.image_key)

    def _track(self, run: Run) -> Run:
        with self._lock:
            self._runs[run.key] = run
            if self._cancelled:
                self._stop(run)
        return run

    # -- following it ------------------------------------------------------------------------------
    def _follow(self, run: Run, request: RunRequest) -> RunOutcome:
        """Stream the log until the result; retry a bounded number of times when the node is lost."""
        start = time.monotonic()
        label = request.action.spec.label
        for attempt in range(1, self.max_retries + 2):
            how, value = self._stream(run, request)
            if how == "done":
                return self._collect(value, request, run)
            if how == "cancelled":
                return RunOutcome(130, time.monotonic() - start, self.name, _host(run.where),
                                  detail="cancelled; the remote action was stopped")
            record = ray_task.read_record(self.remote, run.key)  # lost: had it finished first?
            if record is not None:
                return self._collect(record, request, run, replay_log=False)
            lost = _host(run.where) or "(not yet placed)"
            if attempt > self.max_retries:
                break
            self._line(request, f"buildml: ray node {lost} was lost while running {label}; "
                                f"retrying (attempt {attempt + 1} of {self.max_retries + 1})")
            if not self._wait_for_room(request.action.spec):
                return self._lost(run, request, start, f"ray node {lost} was lost while running it, and no live node "
                                                        f"can run it now (waited {self.node_wait:g}s)")
            run = self._submit(request)
        self._forget(run)
        return self._lost(run, request, start, f"ray node {_host(run.where) or '?'} was lost while running it "
                                               f"({self.max_retries + 1} attempts; executors.{self.name}.max_retries: "
                                               f"{self.max_retries})")

    def _stream(self, run: Run, request: RunRequest) -> tuple[str, object]:
        """('done', result) | ('lost', error) | ('cancelled', None), copying log bytes as they come."""
        ray = self._ray()
        offset, partial, pending = 0, b"", None
        with open(request.log_path, "ab") as log:
            while True:
                if self._cancelled or run.stopped:
                    return "cancelled", None
                if pending is None:
                    pending = run.handle.poll.remote(offset)
                ready, _ = ray.wait([pending], timeout=POLL_S)
                if not ready:
                    continue
                ref, pending = pending, None
                try:
                    state = ray.get(ref)
                except ray.exceptions.ActorUnavailableError:  # maybe a network blip: wait for Ray to decide
                    time.sleep(POLL_S)
                    continue
                except ray.exceptions.RayActorError as exc:
                    return "lost", exc
                run.where = state.get("where") or run.where
                data = state["log"]
                offset += len(data)
                partial = self._emit(log, request, partial, data)
                if state["state"] == "done" and not data:
                    if partial:
                        request.on_line(partial.decode("utf-8", errors="replace"))
                    return "done", state["result"]
                if not data:
                    time.sleep(POLL_S)

    @staticmethod
    def _emit(log, request: RunRequest, partial: bytes, data: bytes) -> bytes:
        """Append data to the log; send each complete line to the live view; return the unfinished line."""
        if data:
            log.write(data)
            log.flush()
        *lines, rest = (partial + data).split(b"\n")
        for line in lines:
            request.on_line(line.decode("utf-8", errors="replace"))
        return rest

    def _line(self, request: RunRequest, text: str) -> None:
        with open(request.log_path, "a") as log:
            log.write(text + "\n")
        request.on_line(text)

    def _wait_for_room(self, spec) -> bool:
        """Wait up to node_wait seconds for a live node that can run spec (a node coming back, an autoscaler)."""
        deadline = time.monotonic() + self.node_wait
        while not self._cancelled:
            if self._refusal(spec) is None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return False

    def _lost(self, run, request, start, detail: str) -> RunOutcome:
        self._line(request, f"buildml: {detail}")
        return RunOutcome(1, time.monotonic() - start, self.name, _host(run.where), detail=detail)

    # -- the result ----------------------------------------------------------------------------------
    def _collect(self, result: dict, request: RunRequest, run: Run | None, replay_log: bool = False) -> RunOutcome:
        """Turn a run's result into the outcome; fetch its outputs into the sandbox for the Runner."""
        if run is not None:
            self._release(run)
        key = request.action.key
        if replay_log and result.get("log"):  # it finished unwatched: the whole log, to the file and the view
            with open(request.log_path, "ab") as log:
                rest = self._emit(log, request, b"", self.remote.read_bytes(result["log"]))
            if rest:
                request.on_line(rest.decode("utf-8", errors="replace"))
        node = result.get("node") or {}
        if "error" in result:
            ray_task.drop_record(self.remote, key)  # reported once; the next build tries again
            raise _error(result["error"], node)
        extra = {"ray_address": self.address, "ray_node_id": node.get("node_id"), "ray_node_ip": node.get("node_ip"),
                 "ray_gpus": node.get("gpus"), "ray_buildml": node.get("buildml"), **(result.get("extra") or {})}
        measured = valid_cost(result)  # the node's own executor measured them; from the node: untrusted
        outcome = RunOutcome(result["exit_code"], result.get("duration", 0.0), self.name, _host(node),
                             timed_out=result.get("timed_out", False), detail=result.get("detail", ""), extra=extra,
                             cpu_s=measured["cpu_s"], peak_rss_bytes=measured["peak_rss_bytes"])
        if outcome.exit_code != 0:
            ray_task.drop_record(self.remote, key)
            return outcome
        self._fetch_outputs(result, request)
        return outcome

    def _fetch_outputs(self, result: dict, request: RunRequest) -> None:
        from buildml.hashing import digest_file
        from buildml.store.local import remove_tree

        from buildml.trust import check_manifest_paths, validate_outputs, validate_relpaths

        ws = request.sandbox.ws
        outputs = validate_outputs(result.get("outputs", {}), "outputs of the remote action")  # from the node: untrusted
        dirs = validate_relpaths(list(result.get("dirs", ())), "dirs of the remote action")
        check_manifest_paths(outputs, request.action.spec.outs, dirs)
        for out in dirs:
            (ws / out).mkdir(parents=True, exist_ok=True)
        tmp = request.sandbox.root / "ray-outputs"
        tmp.mkdir(exist_ok=True)
        try:
            found = self.remote.download({m["digest"] for m in outputs.values()}, tmp)
            for path, meta in sorted(outputs.items()):
                src = found.get(meta["digest"])
                if src is None:
                    raise EnvironmentProblem(f"output {path} of {request.action.spec.label} is missing from the remote "
                                             f"cache {self.remote.url}", hint="run the build again")
                if digest_file(src) != meta["digest"]:
                    raise CacheCorruption(f"output {path} of {request.action.spec.label} is corrupt in the remote cache")
                dest = ws / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                os.chmod(dest, 0o755 if meta.get("exec") else 0o644)
        finally:
            remove_tree(tmp)

    def _release(self, run: Run) -> None:
        try:
            run.handle.release.remote()
        except Exception:  # already gone
            pass
        self._forget(run)

    def _forget(self, run: Run) -> None:
        from buildml.executors.remote_runs import forget

        with self._lock:
            self._runs.pop(run.key, None)
        forget(self.context.state_dir, run.key)

    # -- Ctrl-C --------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop every remote action this build follows (submitted or attached) and end their actors."""
        with self._lock:
            self._cancelled = True
            runs = list(self._runs.values())
        for run in runs:
            self._stop(run)

    def _stop(self, run: Run) -> None:
        if run.stopped:
            return
        run.stopped = True
        ray = self._ray()
        try:
            ray.get(run.handle.stop.remote(), timeout=10)
        except Exception:  # dead, or not yet placed
            pass
        try:
            ray.kill(run.handle)
        except Exception:
            pass
        self._forget(run)


def probe(record: dict) -> dict | None:
    """For `buildml status`: {state, node, last_line} of a recorded run, or None when its actor is gone."""
    from buildml.errors import BuildmlError

    try:
        ray = connect(record.get("address") or "auto", record.get("namespace") or NAMESPACE)
    except BuildmlError as exc:
        return {"state": "unknown", "node": f"(cannot ask Ray: {exc.message})"}
    try:
        handle = ray.get_actor(record["actor"], namespace=record.get("namespace") or NAMESPACE)
    except ValueError:
        return None
    try:
        info = ray.get(handle.info.remote(), timeout=10)
    except ray.exceptions.GetTimeoutError:
        return {"state": "pending", "node": None}
    except ray.exceptions.RayActorError:
        return None
    return {"state": info["state"], "node": _host(info["where"]), "last_line": info.get("last_line", "")}


def _host(node: dict) -> str:
    """'host (ip, ray node 1a2b3c4d5e6f)': what provenance and messages name."""
    if not node:
        return ""
    return f"{node.get('hostname')} ({node.get('node_ip')}, ray node {str(node.get('node_id'))[:12]})"


def _show(key: str, amount) -> str:
    name = {v: k for k, v in RAY_NAMES.items()}.get(key, key)
    if key == "memory":
        return f"memory: {amount / (1 << 30):.1f}GB"
    return f"{name}: {amount:g}"


def _error(info: dict, node: dict):
    """The node's error as the matching buildml error."""
    where = f"on ray node {_host(node)}: " if node else ""
    if info.get("type") == "ExecutionError":
        return ExecutionError(where + info["message"], hint=info.get("hint", ""))
    if info.get("who") == "user":
        return UserError(where + info["message"], hint=info.get("hint", ""))
    hint = info.get("hint") or ("this may be a bug in buildml; the node's Ray worker logs have details"
                                if info.get("who") == "internal" else "")
    return EnvironmentProblem(where + info["message"], hint=hint)


def _public(storage_options: dict) -> dict:
    """storage_options without anything that looks like a credential (nodes use their own)."""
    return {k: v for k, v in storage_options.items() if not any(w in str(k).lower() for w in SECRET_WORDS)}


def _remote_store(store, name: str):
    remote = store.remote
    if remote is None:
        raise UserError(f"executor {name!r} runs on Ray, which needs a shared remote cache: inputs and outputs "
                        "travel through it", field=f"executors.{name}",
                        hint="set cache.remote in buildml.yaml (s3://bucket/prefix, gs://..., file:///shared/dir), "
                             "$BUILDML_REMOTE_CACHE or --remote-cache URL")
    return remote


def _checked_options(config, settings) -> dict:
    doc = getattr(settings, "doc", None)  # None: settings made in code, not read from a buildml.yaml
    for key, value in config.options.items():
        where = doc.where(("executors", config.name, key)) if doc is not None else None
        if key not in OPTIONS:
            from buildml.errors import LoadError, did_you_mean

            raise LoadError(f"unknown option {key!r} for a ray executor", location=where, field=f"executors.{config.name}",
                            hint=did_you_mean(str(key), OPTIONS) or "options: type, cpus, gpus, memory, " + ", ".join(OPTIONS))
        if key in ("max_retries", "node_wait", "linger") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                               or value < 0):
            from buildml.errors import LoadError

            raise LoadError(f"{key} must be a non-negative number, not {value!r}", location=where,
                            field=f"executors.{config.name}.{key}")
        if key == "runtime_env" and (not isinstance(value, dict) or not isinstance(value.get("py_modules", []), list)):
            from buildml.errors import LoadError

            raise LoadError("runtime_env must be a mapping (Ray's runtime_env), its py_modules a list", location=where,
                            field=f"executors.{config.name}.runtime_env", hint="e.g. {pip: [scikit-learn]}")
        if key == "ship_buildml" and not isinstance(value, bool):
            from buildml.errors import LoadError

            raise LoadError(f"ship_buildml must be true or false, not {value!r}", location=where,
                            field=f"executors.{config.name}.ship_buildml",
                            hint="false: the nodes import their own installed buildml instead of this client's")
    return dict(config.options)


RayExecutor.probe = staticmethod(probe)  # the declared capability: status asks detached runs here
