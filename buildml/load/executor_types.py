"""Executor types by name: the built-in ones here, third-party ones through the "buildml.executors" entry points.

A type maps to "module:Class"; the module is imported only when an executor of that type is first needed.
A new executor is one module (a class subclassing buildml.executors.Executor) plus one line in BUILTIN.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from buildml.errors import UserError

ENTRY_POINT_GROUP = "buildml.executors"

BUILTIN = {
    "local": "buildml.executors.local:LocalExecutor",
    "docker": "buildml.executors.docker.run:DockerExecutor",
    "ray": "buildml.executors.ray.executor:RayExecutor",
    "fake": "buildml.executors.fake:FakeExecutor",
}

INSTALL_HINTS = {
    "ray": "install Ray (pip install 'buildml-cli[ray]'), or set a local/docker type for it in buildml.yaml",
}


@functools.cache
def types() -> dict:
    """Every known type name -> "module:Class" (built-in names win over entry points)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILTIN}


def type_names() -> tuple:
    """The known type names, sorted (for messages and did-you-mean)."""
    return tuple(sorted(types()))


def executor_class(kind: str, name: str = ""):
    """The class of executor type kind, imported now; a UserError naming the type and an install hint if it fails."""
    module_name, _, class_name = types()[kind].partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        who = f"executor {name!r} has type {kind}" if name else f"executor type {kind}"
        raise UserError(f"{who}, which this buildml cannot run: {exc}",
                        hint=INSTALL_HINTS.get(kind, f"install the package that provides the {kind!r} executor")) from None


def accepted_options(kind: str):
    """The buildml.yaml options a type accepts (a tuple), or None: any; that executor checks its own."""
    if kind in ("local", "docker"):
        return ()  # the built-ins take none; checked without importing their modules
    try:
        return executor_class(kind).config_options
    except UserError:
        return None  # cannot import it here: it will say so when first used
