"""`buildml import [PATH/dvc.yaml]`: write the BUILD.yaml equivalent to a package's dvc.yaml.

The targets are the ones buildml reads from dvc.yaml itself (`load/dvc.py` `DvcFile.stages`): foreach/matrix
expanded into one target per `stage@key`, paths made relative to the package through `wdir`, params that `${}`
read listed. A command keeps each `${}` that reads a params file (BUILD.yaml resolves it from the selected params,
so --param and --sweep vary it) when that resolves to the same command; every other `${}` is written resolved. Building with the BUILD.yaml therefore gives the
same action keys as building with the dvc.yaml: nothing re-runs. A comment sits above each target or field whose
written form differs from dvc.yaml's, and the header says that BUILD.yaml now shadows dvc.yaml.
An existing file is never overwritten. dvc.yaml is checked exactly as `buildml build` checks it, so its errors
are reported the same way (file:line, field, hint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import yaml

from buildml.errors import UserError
from buildml.labels import Label
from buildml.load.dvc import DVC_FILE, DvcFile, DvcStage, StageDocument, load_dvc_package
from buildml.load.loader import load_target
from buildml.load.params import ParamsReader
from buildml.load.workspace import BUILD_FILE
from buildml.load.yamlsrc import load_yaml

STDOUT = "-"
_OUT_FIELDS = ("outs", "metrics", "plots")
# the dvc.yaml field each BUILD.yaml field is read from (in the order they are written)
_SOURCE = {"doc": "desc", "wdir": "wdir", "command": "cmd", "deps": "deps", "params": "params", "outs": "outs",
           "metrics": "metrics", "plots": "plots", "frozen": "frozen", "always_changed": "always_changed"}
_OPTION_NOTES = {
    ("cache", False): "not stored in a remote cache; the file stays in place and is still keyed as an output",
    ("push", False): "kept locally, never uploaded",
    ("persist", True): "the previous version is in the sandbox when the command starts",
}


def dvc_file_of(session, path: str | None) -> tuple[str, Path]:
    """(package, absolute dvc.yaml path) named by path: a dvc.yaml file or the directory holding one (default:
    ./dvc.yaml)."""
    target = Path(path or DVC_FILE)
    if target.is_dir():
        target = target / DVC_FILE
    if target.name != DVC_FILE:
        raise UserError(f"{path} is not a {DVC_FILE}", hint=f"name a {DVC_FILE} file or the directory holding one")
    if not target.is_file():
        raise UserError(f"no {DVC_FILE} at {target}", hint=f"run buildml import in a directory holding {DVC_FILE}, "
                                                          f"or name one: buildml import path/to/{DVC_FILE}")
    full = target.resolve()
    try:
        rel = full.parent.relative_to(session.ws.root.resolve())
    except ValueError:
        raise UserError(f"{target} is outside the workspace {session.ws.root}",
                        hint="run buildml import inside the workspace that holds it") from None
    return ("" if str(rel) == "." else rel.as_posix()), full


class Imported(NamedTuple):
    text: str  # the BUILD.yaml
    written: str | None  # the file written, None for stdout
    targets: int
    package_dir: str  # where the BUILD.yaml belongs (its paths are relative to it)
    in_place: bool  # written as the BUILD.yaml beside dvc.yaml (which it now shadows)


def import_dvc(session, path: str | None = None, output: str | None = None) -> Imported:
    """The BUILD.yaml equivalent to the dvc.yaml at path, written to output (default: beside it; `-`: nowhere).
    Refuses to overwrite a file."""
    package, dvc_path = dvc_file_of(session, path)
    if output == STDOUT:
        dest = None
    else:
        dest = Path(output) if output else dvc_path.parent / BUILD_FILE
        if dest.exists() or dest.is_symlink():
            shown = dest if output else (f"{package}/{BUILD_FILE}" if package else BUILD_FILE)
            raise UserError(f"{shown} already exists; buildml import never overwrites it",
                            hint="write the result elsewhere with --output FILE, or print it with --output -"
                                 + ("" if output else f"; a {BUILD_FILE} beside {DVC_FILE} already shadows it"))
    params = ParamsReader(session.ws.root)
    native = load_dvc_package(session.ws, package, session.registry, params)  # errors exactly as `buildml build`'s
    dvc = DvcFile(session.ws, package, params)
    stages = list(dvc.stages())
    written = {s.name: _written(s, dvc, native, session.registry, params, package) for s in stages}
    text = render(dvc.data or {}, stages, package, written)
    _check_round_trip(text, written, native, session.registry, params, package)
    if dest is not None:
        try:
            with open(dest, "x") as f:  # "x": never over a file that appeared meanwhile
                f.write(text)
        except FileExistsError:
            raise UserError(f"{dest} already exists; buildml import never overwrites it",
                            hint="write the result elsewhere with --output FILE, or print it with --output -") from None
        except OSError as exc:
            raise UserError(f"cannot write {dest}: {exc.strerror}", hint="choose another file with --output FILE") from None
    return Imported(text, None if dest is None else os.fspath(dest), len(stages), os.fspath(dvc_path.parent),
                    dest is not None and not output)


def _written(stage: DvcStage, dvc: DvcFile, native: dict, registry, params, package: str) -> dict:
    """The fields to write for stage: its command keeps the `${}` that read params files (so `--param` and
    `--sweep` vary it in the BUILD.yaml too) when BUILD.yaml resolves them to the very command dvc.yaml gives;
    else the resolved command."""
    raw = {k: v for k, v in stage.raw.items() if k != "kind"}
    if stage.template is None:
        return raw
    templated = {**raw, "command": stage.template}
    target = load_target(StageDocument(dvc.doc, stage.path), package, stage.name, templated, registry, params,
                         stage.path)
    return templated if target.attrs["command"] == native[Label(package, stage.name)].attrs["command"] else raw


def render(data: dict, stages: list[DvcStage], package: str, written: dict) -> str:
    """The BUILD.yaml text: a header, then each target with comments where it differs from dvc.yaml."""
    where = f"{package}/{DVC_FILE}" if package else DVC_FILE
    lines = [
        f"# Generated by `buildml import` from {where}. buildml reads this file now: a {BUILD_FILE} shadows the",
        f"# {DVC_FILE} in the same directory (delete {BUILD_FILE} to build from {DVC_FILE} again; dvc itself still reads",
        f"# {DVC_FILE}). foreach/matrix stages are one target per stage@key with their items written in; a ${{}} of",
        "# a command that reads a params file stays (BUILD.yaml replaces it with the selected param's value, so",
        "# --param and --sweep vary it); every other ${} is written resolved. Paths are relative to this directory,",
        f"# not to a stage's wdir. This file builds to the same action keys as {DVC_FILE}: nothing re-runs.",
    ]
    if data.get("vars") is not None:
        lines.append(f"# dvc.yaml vars: {_flow(data['vars'])} (substituted below)")
    for key in ("plots", "params", "metrics", "artifacts", "datasets"):
        if data.get(key) is not None:
            note = {"plots": "plot definitions for `dvc plots` and buildml's report; not carried over here"}.get(
                key, "read by dvc's own commands only; not carried over")
            lines.append(f"# dvc.yaml {key}: {_flow(data[key])} ({note})")
    lines.append("targets:" if stages else "targets: {}")
    for stage in stages:
        lines.extend(_target_lines(stage, written[stage.name]))
    return "\n".join(lines) + "\n"


def _target_lines(stage: DvcStage, raw: dict) -> list[str]:
    body = stage.body
    lines = []
    key = stage.name.partition("@")[2]
    if stage.via == "foreach":
        lines.append(f"  # foreach item of stage {stage.stage!r} (key {key}): item = {_flow(stage.item)}")
    elif stage.via == "matrix":
        lines.append(f"  # matrix entry of stage {stage.stage!r} (key {key}): item = {_flow(stage.item)}")
    if body.get("vars") is not None:
        lines.append(f"  # dvc.yaml: vars: {_flow(body['vars'])} (substituted below)")
    if body.get("meta") is not None:
        lines.append(f"  # dvc.yaml: meta: {_flow(body['meta'])} (descriptive only; not carried over)")
    lines.append(f"  {_scalar(stage.name)}:")
    for field in [f for f in _SOURCE if f in raw] + [f for f in raw if f not in _SOURCE and f != "kind"]:
        source = _SOURCE.get(field, field)
        lines.extend("    # " + note for note in _notes(field, source, body, raw))
        dumped = yaml.dump({field: raw[field]}, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                           width=10**6, allow_unicode=True)
        lines.extend("    " + line for line in dumped.splitlines())
    return lines


def _notes(field: str, source: str, body: dict, raw: dict) -> list[str]:
    """Comments for one field: where its written form differs from the dvc.yaml field it comes from."""
    written = body.get(source)
    value = raw[field]
    notes = []
    if field == "command":
        if isinstance(written, list):
            notes.append(f"dvc.yaml: cmd: {_flow(written)} (run one after another, each in its own shell)")
        elif written != value:
            notes.append(f"dvc.yaml: cmd: {_flow(written)}")
    elif field == "doc":
        notes.append("dvc.yaml: desc")
    elif field == "wdir":
        notes.append(f"dvc.yaml: wdir: {_flow(written)} (the command runs there; the paths of this target are "
                     "relative to this file's directory)")
    elif field == "params":
        if written is None:
            notes.append("params read by ${} in this stage (DVC tracks them too)")
        elif _as_list(written) != value:
            notes.append(f"dvc.yaml: params: {_flow(written)}"
                         + (" (and params read by ${}, which DVC tracks too)" if len(value) > len(_as_list(written))
                            else ""))
    elif field in ("deps", *_OUT_FIELDS) and _as_list(written) != value:
        notes.append(f"dvc.yaml: {source}: {_flow(written)}")
    if field in _OUT_FIELDS:
        for entry in value:
            if isinstance(entry, dict):
                (path, opts), = entry.items()
                for (option, flag), note in _OPTION_NOTES.items():
                    if (opts or {}).get(option) is flag:
                        notes.append(f"dvc.yaml: {option}: {_flow(flag)} ({path}) — {note}")
    return notes


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a `cmd: |` script) as literal blocks, the way they are written by hand."""


def _str(dumper, text: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text.rstrip("\n") else None)


_Dumper.add_representer(str, _str)


def _as_list(value):
    return [value] if isinstance(value, str) else value


def _flow(value) -> str:
    """value as one line of YAML flow style (how it reads in a comment)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip().replace("\n", " ")


def _scalar(text: str) -> str:
    """A mapping key as YAML writes it (quoted only when it must be)."""
    return yaml.safe_dump({text: None}, width=10**6, allow_unicode=True).rstrip().removesuffix(": null")


def _check_round_trip(text: str, written: dict, native: dict, registry, params, package: str) -> None:
    """The text reads back as exactly the targets it was made from, and loads to the attributes the dvc.yaml
    targets have (but the top-level plot definitions, which are not keyed): a difference is a bug here."""
    doc = load_yaml(text, BUILD_FILE)
    if doc.data != {"targets": written}:
        raise AssertionError("buildml import wrote a BUILD.yaml that does not read back as the dvc.yaml targets")
    for name, raw in written.items():
        attrs = dict(load_target(doc, package, name, raw, registry, params).attrs)
        want = {k: v for k, v in native[Label(package, name)].attrs.items() if k != "plot_defs"}
        if attrs != want:
            raise AssertionError(f"buildml import: target {name!r} of the BUILD.yaml differs from its dvc.yaml stage")
