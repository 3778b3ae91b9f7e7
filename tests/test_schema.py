"""`buildml schema`: the JSON Schemas accept every example and reject what the loader rejects."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from buildml.api import default_registry
from buildml.cli import cli
from buildml.errors import LoadError
from buildml.features.scaffold import init_workspace
from buildml.load.json_schema import build_schema, workspace_schema
from buildml.load.loader import load_package
from buildml.load.workspace import load_workspace, read_settings
from buildml.load.yamlsrc import load_yaml_file

from conftest import EXAMPLES, REPO

BUILTIN = Draft202012Validator(build_schema(default_registry()))
WORKSPACE = Draft202012Validator(workspace_schema())


def test_schemas_are_valid_draft_2020_12():
    Draft202012Validator.check_schema(BUILTIN.schema)
    Draft202012Validator.check_schema(WORKSPACE.schema)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("**/BUILD.yaml")) + [REPO / "BUILD.example.yaml"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_build_file_is_valid(path):
    root = next(d for d in path.parents if (d / "buildml.yaml").is_file()) if path.parent != REPO else None
    registry = default_registry(load_workspace(root)) if root else default_registry()
    validator = Draft202012Validator(build_schema(registry))
    errors = [e.message for e in validator.iter_errors(load_yaml_file(path, path.name).data)]
    assert not errors


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("**/buildml.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_workspace_file_is_valid(path):
    assert not [e.message for e in WORKSPACE.iter_errors(load_yaml_file(path, path.name).data)]


BAD_BUILD = [
    "target: {}\n",
    "targets: [a]\n",
    "targets: {a: {command: x, outz: [a]}}\n",
    "targets: {a: {kind: nope, command: x}}\n",
    "targets: {a: {kind: model, outs: [m]}}\n",
    "targets: {a: {kind: image, command: x}}\n",
    "targets: {a: {command: x, timeout: -1}}\n",
    "targets: {a: {command: x, network: 'yes'}}\n",
    "targets: {'bad name!': {command: x}}\n",
    "targets: {a: {command: x, env: {'A=B': 1}}}\n",
    "targets: {a: {command: x, env: {A: [1]}}}\n",
    "targets: {a: {command: x, deps: ['']}}\n",
    "targets: {a: {command: []}}\n",
    "targets: {a: {command: x, params: [{a.yaml: k}]}}\n",
    "targets: {a: {command: x, resources: {cpus: -1}}}\n",
    "targets: {a: {foreach: [x], command: x}}\n",
    "targets: {a: {foreach: [x], do: {command: x, outz: [a]}}}\n",
    "targets: {a: {command: x, outs: [{a: 1}]}}\n",
    "targets: {a: {command: x, image: 3}}\n",
    "targets: {a: 3}\n",
]


@pytest.mark.parametrize("text", BAD_BUILD)
def test_rejects_what_the_loader_rejects(ws, text):
    ws.write("BUILD.yaml", text)
    workspace = load_workspace(ws.root)
    with pytest.raises(LoadError):
        load_package(workspace, "", default_registry(workspace))
    assert not BUILTIN.is_valid(load_yaml_file(ws.root / "BUILD.yaml", "BUILD.yaml").data)


BAD_WORKSPACE = ["unknown: 1\n", "jobs: 0\n", "jobs: true\n", "cache: {dri: x}\n", "cache: {upload: maybe}\n",
                 "cache: [x]\n", "- a\n"]


@pytest.mark.parametrize("text", BAD_WORKSPACE)
def test_rejects_what_the_settings_reader_rejects(tmp_path, text):
    (tmp_path / "buildml.yaml").write_text(text)
    with pytest.raises(LoadError):
        read_settings(tmp_path / "buildml.yaml")
    assert not WORKSPACE.is_valid(load_yaml_file(tmp_path / "buildml.yaml", "buildml.yaml").data)


def test_docker_settings_schema_matches_what_the_engine_accepts():
    """The schema's docker: keys are the engine's; a transfer other than mount/copy is refused by both."""
    from buildml.executors.docker.engine import SETTINGS, docker_settings
    from buildml.load.json_schema import DOCKER_SETTINGS

    assert set(DOCKER_SETTINGS) == set(SETTINGS)
    assert WORKSPACE.is_valid({"docker": {"host": "ssh://me@gpu-box", "transfer": "copy", "context_warn_mb": 50}})
    assert not WORKSPACE.is_valid({"docker": {"transfer": "rsync"}})
    with pytest.raises(LoadError, match="mount or copy"):
        docker_settings({"transfer": "rsync"})


def test_cli_prints_the_workspace_kinds(ws, monkeypatch):
    """Inside a workspace, `buildml schema build` includes its own kinds; `workspace` prints buildml.yaml's."""
    ws.write("buildml.yaml", "templates: {gpu_model: {kind: model, resources: {gpus: 1}}}\n")
    monkeypatch.chdir(ws.root)
    result = CliRunner().invoke(cli, ["schema", "build"])
    assert result.exit_code == 0, result.output
    assert "gpu_model" in json.loads(result.output)["properties"]["targets"]["additionalProperties"]["else"]["properties"]["kind"]["enum"]
    result = CliRunner().invoke(cli, ["schema", "workspace"])
    assert result.exit_code == 0 and json.loads(result.output)["title"] == "buildml buildml.yaml"


def test_init_writes_modelines_and_their_schemas(tmp_path):
    init_workspace(tmp_path)
    for name, schema in (("BUILD.yaml", "build.json"), ("buildml.yaml", "workspace.json")):
        first = (tmp_path / name).read_text().splitlines()[0]
        assert first == f"# yaml-language-server: $schema=.buildml/schema/{schema}"
        validator = Draft202012Validator(json.loads(Path(tmp_path / ".buildml/schema" / schema).read_text()))
        assert validator.is_valid(load_yaml_file(tmp_path / name, name).data)
