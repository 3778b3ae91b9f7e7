"""The house's contracts, checked in every test run: import layers (import-linter) and lint (ruff)."""

from __future__ import annotations

import subprocess

from conftest import BIN, REPO


def test_import_contracts_are_kept():
    """lint-imports keeps every contract in pyproject.toml (values below everything; click, docker, ray, fsspec
    each only in its own layer)."""
    proc = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_ruff_is_clean():
    """ruff check passes with the rules configured in pyproject.toml."""
    proc = subprocess.run([str(BIN / "ruff"), "check", "--output-format", "concise", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_top_level_holds_only_values_facade_and_plugin_api():
    """buildml/ itself holds only value modules, the facade, the plugin API and the test gate; everything else
    lives in a layer folder."""
    top = sorted(p.stem for p in (REPO / "buildml").glob("*.py"))
    assert top == ["__init__", "action", "api", "dag", "errors", "events", "fsutil", "gate", "hashing", "labels",
                   "rule", "trust", "units"]


def test_no_session_below_the_facade():
    """Nothing below api.py takes the facade: load, analyse, engine, store, executors and report get the pieces
    they need (a store, a warn callback, an executor context), so the Session is no service locator. Only the
    verbs in features/ and the CLI take a session."""
    import ast

    takers = []
    for layer in ("load", "analyse", "engine", "store", "executors", "report"):
        for path in sorted((REPO / "buildml" / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                    if "session" in names:
                        takers.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert takers == []
