"""`endpoint`: a server for model targets; building it makes its deployable (a serving image, or a descriptor)."""

import json

from buildml.rule import LabelError, LoadError
from buildml.rule import parse_label
from buildml.rule import COMMON_ATTRS, Attr, Rule, command_argv

_KEEP_COMMON = ("kind", "doc", "deps", "exclude", "env", "executor", "image")
DESCRIBE = ("python3", "-m", "buildml.executors.serving_image")  # writes the descriptor on the local executor


class EndpointRule(Rule):
    kind = "endpoint"
    version = "1"
    attrs = {
        "models": Attr("strings", "labels of the model targets it serves; their outs are in its tree at their paths"),
        "command": Attr("command", "the server command (run in the package dir); it listens on $PORT", required=True),
        "port": Attr("number", "the port the server listens on (the env var PORT)", required=True),
        "health": Attr("string", "path answering 200 once the server is ready", default="/health"),
        "repository": Attr("string", "repository of the serving image (default buildml/<package>/<name>)"),
        "tags": Attr("strings", "extra tags given to the serving image (it is always tagged <repository>:<key>)"),
        "push": Attr("bool", "push the serving image to docker.registry (buildml.yaml) after a build", default=False),
    }

    def schema(self) -> dict:
        return {**{k: COMMON_ATTRS[k] for k in _KEEP_COMMON}, **self.attrs}

    def analyse(self, target):
        a, label = target.attrs, target.label
        if "PORT" in a.get("env", {}):
            raise LoadError("env PORT is set by buildml from the endpoint's port", location=target.where("env", "PORT"),
                            field=f"{label.name}.env", hint="set `port:` instead")
        models = tuple(_model_label(target, i, text) for i, text in enumerate(a.get("models", ())))
        serve = {
            "target": str(label),
            "command": list(command_argv(a["command"])),
            "port": _port(target),
            "health": _health(target),
            "env": dict(a.get("env", {})),
            "models": list(models),
            "out": descriptor_path(label),
        }
        argv = DESCRIBE + (json.dumps(serve, sort_keys=True),)
        return self.base_spec(target, argv, deps=tuple(a.get("deps", ())) + models, outs=(descriptor_path(label),),
                              metrics=(), params=(), secrets=(), network=False, resources=(), timeout=None,
                              extra=(("endpoint", serve),))


def descriptor_path(label) -> str:
    """<package>/.endpoint/<name>.json: the deployable descriptor every endpoint build writes."""
    return "/".join(p for p in (label.package, ".endpoint", f"{label.name}.json") if p)


def _model_label(target, i, text) -> str:
    where = target.where("models", i)
    if not text.startswith(("//", ":")):
        raise LoadError(f"models entry {text!r} is not a label", location=where, field=f"{target.label.name}.models",
                        hint="name the model target, e.g. //models:classifier")
    try:
        return str(parse_label(text, target.label.package))
    except LabelError as exc:
        raise LoadError(exc.message, location=where, field=f"{target.label.name}.models", hint=exc.hint) from None


def _port(target) -> int:
    port = target.attrs["port"]
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise LoadError(f"port must be a whole number from 1 to 65535, not {port!r}", location=target.where("port"),
                        field=f"{target.label.name}.port", hint="the port the server listens on inside, e.g. 8000")
    return port


def _health(target) -> str:
    path = target.attrs["health"]
    if not path.startswith("/"):
        raise LoadError(f"health must be a URL path starting with /, not {path!r}", location=target.where("health"),
                        field=f"{target.label.name}.health", hint="e.g. /health")
    return path
