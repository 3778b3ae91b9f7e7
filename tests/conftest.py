"""Shared fixtures: throwaway workspaces, the real CLI as a subprocess, an in-process engine with fakes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from servers import *  # noqa: F401,F403  (session-scoped storage servers: moto_server, seaweedfs_server, gcs_emulator)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent


class WS:
    """A workspace on disk with helpers to write files and run buildml in it."""

    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.cache = cache

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        env["BUILDML_CACHE_DIR"] = str(self.cache)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.pop("BUILDML_DEBUG", None)
        env.pop("FORCE_COLOR", None)  # tests assert plain piped output unless they ask for colour
        env.update(extra)
        return env

    def run(self, *args, cwd=None, check=None, env=None, timeout=300) -> subprocess.CompletedProcess:
        """Run the real `buildml` console script; check=N asserts the exit code."""
        proc = subprocess.run([str(BIN / "buildml"), *args], cwd=cwd or self.root, env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    def build_json(self, *args, check=0) -> tuple[dict, list]:
        """Build with --json; return (summary line, finished events)."""
        proc = self.run("build", "--json", *args, check=check)
        lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
        return lines[-1], [l for l in lines if l.get("event") == "finished"]


@pytest.fixture
def ws(tmp_path) -> WS:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "buildml.yaml").write_text("")
    return WS(root, tmp_path / "cache")


@pytest.fixture
def quickstart(tmp_path) -> WS:
    root = tmp_path / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", root, ignore=shutil.ignore_patterns(".buildml", "data", "models", "metrics.json"))
    return WS(root, tmp_path / "cache")


def executed(events) -> list[str]:
    """Labels that executed, in the order they finished."""
    return [e["target"] for e in events if e["status"] == "executed"]


def default_sigint() -> None:
    """In a child about to be sent SIGINT: handle it by default, even where pytest runs with SIGINT ignored (a shell
    starts a background job that way, and children inherit it)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
