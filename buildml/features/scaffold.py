"""`buildml init`: write a starter workspace (buildml.yaml, BUILD.yaml, .gitignore entries), never overwriting."""

from __future__ import annotations

from pathlib import Path

from buildml.errors import UserError
from buildml.load.workspace import BUILD_FILE, ROOT_FILE, STATE_DIR

SCHEMA_DIR = f"{STATE_DIR}/schema"  # `buildml schema build|workspace` prints them again, e.g. after adding rules
ROOT_TEXT = f"""\
# yaml-language-server: $schema={SCHEMA_DIR}/workspace.json
# buildml workspace settings. An empty file is valid; every setting is optional.
# See README.md and BUILD.example.yaml.

# jobs: 4                      # actions run at once (default: number of cores); -j overrides

# cache:
#   dir: ~/.cache/buildml      # local cache (default: $BUILDML_CACHE_DIR, else ~/.cache/buildml)
#   remote: s3://bucket/buildml-cache   # a shared cache for teammates and CI
#   upload: true               # false: read-only remote (e.g. on laptops)

# env:                         # env vars given to every action (part of every key)
#   OMP_NUM_THREADS: "1"
"""

BUILD_TEXT = f"""\
# yaml-language-server: $schema={SCHEMA_DIR}/build.json
# Targets of this package. Build them all with `buildml build //...`, one with `buildml build //:hello`.
# Every field of every kind is documented in BUILD.example.yaml in the buildml repository.
targets:
  hello:
    doc: an example target; replace it with the first step of your pipeline
    # Runs under `sh -c` in a sandbox laid out like the workspace, holding only the declared deps.
    command: mkdir -p out && echo "hello from buildml" > out/hello.txt
    # deps: [src/prepare.py, data/raw/]    # files, directories, globs, or other targets' labels
    # params: [prepare.seed]               # keys of params.yaml that enter the key
    outs: [out/hello.txt]                  # what the command writes; cached by content
"""

IGNORES = (f"{STATE_DIR}/", "/out/")


def init_workspace(directory) -> list[str]:
    """Create the starter files in directory; return what was written. Refuses to overwrite."""
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory", hint="create it first, or run `buildml init` inside it")
    existing = [name for name in (ROOT_FILE, BUILD_FILE) if (root / name).exists()]
    if existing:
        raise UserError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in {root.resolve()}",
                        hint="buildml init never overwrites files; remove or rename them, or edit them by hand")
    (root / ROOT_FILE).write_text(ROOT_TEXT)
    (root / BUILD_FILE).write_text(BUILD_TEXT)
    _write_schemas(root / SCHEMA_DIR)
    written = [ROOT_FILE, BUILD_FILE]
    if _add_ignores(root / ".gitignore"):
        written.append(".gitignore")
    return written


def _write_schemas(directory: Path) -> None:
    """The JSON Schemas the modelines of the starter files name (editor completion and checks)."""
    import json

    from buildml.load.json_schema import build_schema, workspace_schema
    from buildml.load.schema import RuleRegistry
    from buildml.rules import builtin_rules

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "build.json").write_text(json.dumps(build_schema(RuleRegistry(builtin_rules())), indent=2) + "\n")
    (directory / "workspace.json").write_text(json.dumps(workspace_schema(), indent=2) + "\n")


def _add_ignores(path: Path) -> bool:
    """Append the entries .gitignore lacks; True if it changed."""
    text = path.read_text() if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [entry for entry in IGNORES if entry not in present]
    if not missing:
        return False
    lead = "" if not text or text.endswith("\n") else "\n"
    path.write_text(text + lead + "# buildml: workspace state and the example target's outputs\n" + "\n".join(missing) + "\n")
    return True
