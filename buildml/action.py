"""Actions: the fully resolved, immutable units of work, and their keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from buildml.hashing import digest_record
from buildml.labels import Label


IMAGE_EXECUTOR = "docker-build"  # ActionSpec.executor of image targets (set by the image rule; the image builder's name)

@dataclass(frozen=True)
class ActionSpec:
    """What a rule makes of a target during analysis, before input digests are known."""

    label: Label
    kind: str
    rule_version: str
    argv: tuple[str, ...]
    workdir: str  # package path, workspace-relative
    deps: tuple[str, ...] = ()  # as written: labels, paths, globs (resolved by the graph)
    excludes: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()  # workspace-relative
    metrics: tuple[str, ...] = ()  # subset of outs
    params: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (params file, selected keys)
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()  # env names passed through, never keyed or logged
    secrets_in_outputs: bool = False  # outputs may hold a secret's value (else that fails the action); not keyed
    image: Label | None = None
    network: bool = False
    resources: tuple[tuple[str, object], ...] = ()
    timeout: float | None = None
    executor: str | None = None
    is_test: bool = False
    retries: int = 0  # re-runs of a failing test (not part of the key)
    cacheable: bool = True
    extra: tuple = ()  # rule-specific key material (canonical-JSON-able)
    context_filter: tuple | None = None  # (dir, ignore file): files under dir matched by the .dockerignore are not inputs
    checks: tuple = ()  # dataset checks run on the outputs after the command (buildml/checks.py); keyed when set
    frozen: bool = False  # never re-run while its last outputs are in place (DVC's frozen); not keyed
    persist: tuple[str, ...] = ()  # outs whose previous version is staged before the command runs; keyed when set
    local_only: tuple[str, ...] = ()  # outs never uploaded to a remote cache (cache: false, push: false); not keyed
    plots: tuple = ()  # (out path, plot properties as canonical JSON text): shown in the report; not keyed
    prefer: str | None = None  # cache.prefer for remote hits (None: the workspace's); not keyed


class InputFile(NamedTuple):
    """One file of an action's input tree (a NamedTuple: there is one per input file, made on every build)."""

    digest: str
    size: int
    executable: bool


@dataclass(frozen=True)
class Action:
    """An ActionSpec with its inputs' digests and param values: everything its key covers."""

    spec: ActionSpec
    inputs: dict = field(hash=False)  # workspace path -> InputFile
    param_values: dict = field(hash=False)  # params file -> {key: value}
    image_key: str | None = None
    base_images: tuple = ()  # ((FROM reference, registry digest), ...) pinned in buildml.lock (image targets)

    def key_material(self) -> dict:
        s = self.spec
        return {
            "kind": s.kind,
            "rule_version": s.rule_version,
            "argv": list(s.argv),
            "workdir": s.workdir,
            "env": sorted(map(list, s.env)),
            "inputs": sorted([p, f.digest, f.executable] for p, f in self.inputs.items()),
            "params": self.param_values,
            "outs": sorted(s.outs),
            "image": self.image_key,
            "network": s.network,
            "extra": list(s.extra),
            **({"checks": [list(map(list, c)) for c in s.checks]} if s.checks else {}),
            **({"persist": sorted(s.persist)} if s.persist else {}),
            **({"base_images": [list(p) for p in self.base_images]} if self.base_images else {}),
        }

    @property
    def key(self) -> str:
        """The action key: digest of the canonical key material under the cache schema."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = digest_record("Action", self.key_material())
            object.__setattr__(self, "_key", cached)
        return cached
