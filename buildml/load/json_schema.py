"""JSON Schemas (draft 2020-12) for BUILD.yaml and buildml.yaml, generated from the rules' attribute tables.

Editors use them for completion and early errors; the loader stays the authority (a schema may accept a
file the loader rejects, e.g. a model without outs, but it rejects what the tables alone forbid).
"""

from __future__ import annotations

from buildml.labels import _NAME
from buildml.load.schema import NUMBER_MAX, RuleRegistry
from buildml.load.workspace import _CACHE_SETTINGS, _SETTINGS

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TARGET_NAME = _NAME.pattern

_NON_EMPTY = {"type": "string", "minLength": 1}
_SCALAR = {"type": ["string", "number", "boolean"]}

TYPE_SCHEMAS = {
    "string": {"type": "string"},
    "command": {"anyOf": [{"type": "string", "pattern": r"\S"},
                          {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}}]},
    "strings": {"anyOf": [_NON_EMPTY, {"type": "array", "items": _NON_EMPTY}]},
    "params": {"type": "array", "items": {"anyOf": [
        _NON_EMPTY,
        {"type": "object", "minProperties": 1, "maxProperties": 1,
         "additionalProperties": {"type": ["array", "null"], "items": _NON_EMPTY}},  # null: the whole file
    ]}},
    "outs": {"anyOf": [_NON_EMPTY, {"type": "array", "items": {"anyOf": [  # a path, or {path: {cache: .., x: ..}}
        _NON_EMPTY, {"type": "object", "minProperties": 1, "maxProperties": 1,
                     "additionalProperties": {"type": ["object", "null"]}}]}}]},
    "env": {"type": "object", "propertyNames": {"pattern": "^[^=\u0000]+$"}, "additionalProperties": _SCALAR},
    "bool": {"type": "boolean"},
    "number": {"type": "number", "exclusiveMinimum": 0, "maximum": NUMBER_MAX},
    "mapping": {"type": "object"},
    "resources": {"type": "object", "properties": {"memory": {"type": ["string", "number"]}},
                  "additionalProperties": {"type": "number", "minimum": 0}},
    "label": {"type": "string", "minLength": 1},
}


def attr_schema(attr) -> dict:
    """One attribute's schema: its type's (anything for a type the table does not know), with its doc and default."""
    out = dict(TYPE_SCHEMAS.get(attr.type, {}))
    if attr.choices:
        out["enum"] = list(attr.choices)
    if attr.doc:
        out["description"] = attr.doc
    if attr.default is not None:
        out["default"] = attr.default
    return out


def kind_schema(rule) -> dict:
    """The fields one kind accepts: its attribute table, closed, with its required fields."""
    table = rule.schema()
    properties = {name: attr_schema(attr) for name, attr in table.items()}
    properties["kind"] = {"const": rule.kind}
    properties["matrix"] = {"type": "object", "minProperties": 1, "description": "one target per combination",
                            "additionalProperties": {"type": "array", "minItems": 1}}
    out = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [name for name, attr in table.items() if attr.required]
    if required:
        out["required"] = required
    return out


def build_schema(registry: RuleRegistry) -> dict:
    """The schema of a BUILD.yaml for every kind of `registry` (built-in and the workspace's own)."""
    kinds = registry.kinds()
    per_kind = []
    for kind in kinds:
        when = {"properties": {"kind": {"const": kind}}, "required": ["kind"]}
        if kind == "command":  # the default kind
            when = {"anyOf": [when, {"not": {"required": ["kind"]}}]}
        per_kind.append({"if": when, "then": kind_schema(registry.get(kind))})
    target = {"type": "object", "properties": {"kind": {"enum": kinds, "description": "the rule (default command)"}},
              "allOf": per_kind}
    foreach = {"type": "object", "required": ["foreach", "do"], "additionalProperties": False,
               "properties": {"foreach": {"type": ["array", "object"], "description": "one target per item"},
                              "do": target}}
    entry = {"if": {"type": "object", "required": ["foreach"]}, "then": foreach, "else": target}
    return {
        "$schema": DRAFT, "title": "buildml BUILD.yaml", "type": ["object", "null"], "additionalProperties": False,
        "properties": {"targets": {"type": ["object", "null"], "propertyNames": {"pattern": TARGET_NAME},
                                   "additionalProperties": entry, "description": "targets by name"}},
    }


# buildml.yaml's docker: mapping (checked when the engine is first used: buildml/executors/docker/engine.py SETTINGS)
DOCKER_SETTINGS = {
    "host": {"type": "string", "description": "engine address (unix://, tcp://, ssh://); DOCKER_HOST wins over it, "
                                              "it wins over Docker contexts"},
    "registry": {"type": "string", "description": "where push: true pushes and missing images are looked for"},
    "context_warn_mb": {"type": "number", "exclusiveMinimum": 0, "description": "warn above this image context size"},
    "transfer": {"enum": ["mount", "copy"], "description": "mount binds the sandbox (the engine shares this disk); "
                 "copy sends inputs as a tar and copies outs back (remote engines; the default for non-unix:// ones)"},
}


def workspace_schema() -> dict:
    """The schema of buildml.yaml: its top-level settings and the cache section (the loader checks the rest)."""
    settings = {name: {"description": doc} for name, doc in _SETTINGS.items()}
    settings["cache"].update(type=["object", "null"], additionalProperties=False,
                             properties={name: {} for name in _CACHE_SETTINGS})
    settings["cache"]["properties"].update(upload={"type": "boolean"}, storage_options={"type": ["object", "null"]})
    settings["jobs"].update(type="integer", minimum=1)
    settings["max_files_per_folder"].update(type="integer", minimum=1)
    settings["rules"].update(type=["object", "null"], additionalProperties={"type": "string"})
    for name in ("templates", "executors", "docker", "env"):
        settings[name]["type"] = ["object", "null"]
    settings["executor"]["type"] = "string"
    settings["docker"].update(additionalProperties=False, properties=DOCKER_SETTINGS)
    return {"$schema": DRAFT, "title": "buildml buildml.yaml", "type": ["object", "null"],
            "additionalProperties": False, "properties": settings}

