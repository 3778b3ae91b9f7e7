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
