"""What an action runs with, here or on a remote node: its environment, the params files it may read, and the
screen that fails an action whose outputs hold a secret (the runner and the Ray node task both use these)."""

from __future__ import annotations

import dataclasses
import os
import sys

from buildml.errors import UserError
from buildml.executors.masking import masks_for, secret_in_outputs
from buildml.executors.sandbox import Sandbox


def action_env(spec, sandbox: Sandbox, caller_env: dict) -> tuple[dict, tuple]:
    """The command's environment: documented basics, declared env, and secrets (with the forms to mask:
    masking.masks_for of their values)."""
    path = os.path.dirname(sys.executable) + os.pathsep + caller_env.get("PATH", os.defpath)
    env = {
        "PATH": path,
        "HOME": str(sandbox.home),
        "TMPDIR": str(sandbox.tmp),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "BUILDML_WORKSPACE": str(sandbox.ws),
    }
    env.update(dict(spec.env))
    for name in spec.secrets:
        if name not in caller_env:
            raise UserError(f"secret {name} needed by {spec.label} is not set in the environment",
                            hint=f"export {name}=... before running buildml")
        env[name] = caller_env[name]
    return env, masks_for(caller_env[name] for name in spec.secrets)


def screened(outcome, sandbox: Sandbox, spec, secrets: dict, log_path):
    """The outcome, turned into a failure (logged) when an output holds a secret's value, unless the target
    declares secrets_in_outputs: nothing is then stored, so a secret never reaches a shared cache."""
    if outcome.exit_code != 0 or not secrets or spec.secrets_in_outputs or not spec.outs:
        return outcome
    found = secret_in_outputs(sandbox.ws, sandbox.collect(spec.outs), secrets)
    if found is None:
        return outcome
    failure = (f"out {found[0]} holds the value of secret {found[1]}: outputs are cached and shared, so they must "
               f"not hold secrets; write it elsewhere, or set secrets_in_outputs: true on {spec.label}")
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"buildml: {failure}\n")
    return dataclasses.replace(outcome, exit_code=1, detail=failure)


def params_by_file(action) -> dict:
    """The selected param values of each params file the action reads without having it as an input."""
    return {f: vals for f, vals in action.param_values.items() if f not in action.inputs}
