"""Resource accounting: what each executor holds (cpus, gpus, memory) and what the running actions use.

An action reserves what its `resources:` declare (nothing when it declares none; `-j` still
bounds how many run at once). gpus and memory are hard limits: an action asking for more than
its executor has is refused at once. cpus are soft: an action asking for more than the executor
has runs when it is alone there, so nothing ever waits forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from buildml.errors import UserError
from buildml.events import Outcome

KEYS = ("cpus", "gpus", "memory")
HARD = ("gpus", "memory")
UNITS = {"cpus": "cpu", "gpus": "gpu", "memory": "bytes"}


def request_of(spec) -> dict:
    """What an action reserves: its declared cpus, gpus and memory (bytes); undeclared ones are 0."""
    declared = dict(spec.resources)
    return {k: declared.get(k, 0) or 0 for k in KEYS}


def machine_capacity(declared: dict, env=None) -> tuple[dict, tuple]:
    """This machine: cores, RAM, and GPUs as declared (else the NVIDIA driver's count); their device ids."""
    env = os.environ if env is None else env
    gpus = declared.get("gpus")
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if gpus is None:
        gpus = len(visible) if "CUDA_VISIBLE_DEVICES" in env else _nvidia_gpus()
    ids = tuple(visible[:int(gpus)]) if len(visible) >= gpus else tuple(str(i) for i in range(int(gpus)))
    capacity = {"cpus": declared.get("cpus", os.cpu_count() or 1), "gpus": gpus,
                "memory": declared.get("memory", _total_memory())}
    return capacity, ids


def _nvidia_gpus() -> int:
    """GPUs the NVIDIA kernel driver lists (a directory read; 0 without the driver)."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _total_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _show(key: str, value) -> str:
    if value is None:
        return "unknown"
    if key == "memory":
        return f"{value / (1 << 30):.1f}GB"
    return f"{value:g}"


@dataclass
class Pool:
    """One executor's capacity (None: unknown, unlimited) and what is in use on it."""

    name: str
    capacity: dict
    devices: tuple = ()  # GPU ids handed to local actions (CUDA_VISIBLE_DEVICES)
    used: dict = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    running: int = 0
    free_devices: list = field(default_factory=list)

    def __post_init__(self):
        self.free_devices = list(self.devices)

    def refusal(self, label, request: dict) -> str:
        """Why request can never run here, or ''."""
        for key in HARD:
            cap = self.capacity.get(key)
            if request[key] and cap is not None and request[key] > cap:
                return (f"{label} asks for {key}: {_show(key, request[key])}, but executor {self.name!r} has "
                        f"{_show(key, cap)}")
        return ""

    def fits(self, request: dict) -> bool:
        if self.running == 0:
            return True  # alone on its executor, anything not refused runs (cpus beyond capacity included)
        for key in KEYS:
            cap = self.capacity.get(key)
            if cap is not None and request[key] and self.used[key] + min(request[key], cap) > cap:
                return False
        return True

    def acquire(self, request: dict) -> tuple:
        self.running += 1
        for key in KEYS:
            cap = self.capacity.get(key)
            self.used[key] += min(request[key], cap) if cap is not None else request[key]
        n = request["gpus"]
        if n and n == int(n) and len(self.free_devices) >= n:
            taken, self.free_devices = self.free_devices[:int(n)], self.free_devices[int(n):]
            return tuple(taken)
        return ()

    def release(self, request: dict, devices: tuple) -> None:
        self.running -= 1
        for key in KEYS:
            cap = self.capacity.get(key)
            self.used[key] -= min(request[key], cap) if cap is not None else request[key]
        self.free_devices.extend(devices)


class Ledger:
    """The scheduler's view: which queued action may start now, and which never can.

    pool_for(spec) -> Pool (or None: not accounted). Without it nothing is limited but -j.
    """

    def __init__(self, pool_for=None):
        self.pool_for = pool_for
        self._held: dict = {}  # label -> (pool, request, devices)
        self._devices: dict = {}  # action key -> GPU ids

    def _needs(self, prepared) -> tuple:
        action, _staged, decision = prepared
        if self.pool_for is None or decision.what != Outcome.RUN:
            return None, None  # restores from the cache reserve nothing
        pool = self.pool_for(action.spec)
        return pool, request_of(action.spec) if pool is not None else None

    def refusal(self, label, prepared) -> UserError | None:
        """A UserError naming target, resource, requested and available, when the action can never fit."""
        pool, request = self._needs(prepared)
        why = pool.refusal(label, request) if pool is not None else ""
        if not why:
            return None
        return UserError(why, hint=f"lower resources in its BUILD.yaml, declare what the executor has in buildml.yaml "
                                   f"(executors: {{{pool.name}: {{gpus: N, memory: 64GB}}}}), or pick another executor "
                                   "(--executor NAME, or executor: on the target)")

    def take(self, queued):
        """Pop and reserve the first queued (label, prepared) that fits now; None when none does."""
        for i, (label, prepared) in enumerate(queued):
            pool, request = self._needs(prepared)
            if pool is not None and not pool.fits(request):
                continue
            del queued[i]
            if pool is not None:
                devices = pool.acquire(request)
                self._held[label] = (pool, request, devices)
                if devices:
                    self._devices[prepared[0].key] = devices
            return label, prepared
        return None

    def release(self, label) -> None:
        held = self._held.pop(label, None)
        if held is not None:
            pool, request, devices = held
            pool.release(request, devices)

    def lacking(self, spec) -> str:
        """Why spec's action could never run on its executor here (e.g. it needs a GPU), or ''."""
        pool = self.pool_for(spec) if self.pool_for is not None else None
        return pool.refusal(spec.label, request_of(spec)) if pool is not None else ""

    def device_env(self, action) -> dict:
        """CUDA_VISIBLE_DEVICES for a local action holding GPUs ({} otherwise)."""
        devices = self._devices.get(action.key)
        return {"CUDA_VISIBLE_DEVICES": ",".join(devices)} if devices else {}


def pools_for(settings, executor_of, engine_capacity):
    """pool_for(spec): one Pool per executor name, its capacity found once. executor_of(config) is the executor
    that reports its own capacity() (None: local, docker); engine_capacity() the Docker engine's cpus and memory."""
    from buildml.action import IMAGE_EXECUTOR

    pools: dict = {}

    def pool_for(spec):
        name = spec.executor or "local"
        if name == IMAGE_EXECUTOR or not any(request_of(spec).values()):
            return None
        if name not in pools:
            pools[name] = _make_pool(settings.get(name), executor_of, engine_capacity)
        return pools[name]

    return pool_for


def _make_pool(config, executor_of, engine_capacity) -> Pool:
    declared = dict(config.capacity)
    executor = executor_of(config)
    reported = executor.capacity() if executor is not None else None
    if reported is not None:  # an executor that knows its own (Ray; a test's fake)
        return Pool(config.name, {**dict.fromkeys(KEYS), **reported, **declared})
    if config.type == "local":
        capacity, ids = machine_capacity(declared)
        return Pool(config.name, capacity, ids)
    if config.type == "docker":
        return Pool(config.name, {**engine_capacity(), "gpus": None, **declared})  # gpus: only if declared
    return Pool(config.name, {**dict.fromkeys(KEYS), **declared})
