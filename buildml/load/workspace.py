"""The workspace: its root (where `buildml.yaml` is), its settings, and safe path handling."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from buildml.errors import LoadError, Location, UserError, did_you_mean
from buildml.load.yamlsrc import load_yaml_file

ROOT_FILE = "buildml.yaml"
DVC_DIR = ".dvc"  # a DVC repo's root: a workspace root too when it has no buildml.yaml (defaults as for an empty one)
BUILD_FILE = "BUILD.yaml"
STATE_DIR = ".buildml"
OUT_DIR = "buildml-out"
SWEEP_DIR = "sweep"  # sweep variants: buildml-out/sweep/<id>/ (outputs) and .buildml/sweep/<id>/ (state)
SKIP_DIRS = frozenset({".git", ".hg", ".svn", STATE_DIR, OUT_DIR, "__pycache__", ".venv", "node_modules"})

MAX_FILES_PER_FOLDER = 10_000  # the default of max_files_per_folder

_SETTINGS = {
    "cache": "local and remote cache settings",
    "jobs": "default parallelism (-j)",
    "rules": "your own target kinds: {kind: path/to/rule.py}",
    "templates": "presets of an existing kind",
    "executors": "named executors",
    "executor": "default executor",
    "docker": "Docker engine settings",
    "env": "env passed to every action",
    "python_deps": "auto: every target's declared .py deps add the workspace modules they import (a target's own "
                   "python_deps overrides it); declared (default): only what deps name",
    "max_files_per_folder": "a directory out holding more files than this in one folder warns once per build "
                            f"(default {MAX_FILES_PER_FOLDER:,}): file systems and tools slow down past it",
}
_CACHE_SETTINGS = ("dir", "remote", "upload", "storage_options", "prefer")
PREFER = ("auto", "fetch", "rebuild")  # cache.prefer: take a remote hit, or rebuild here (engine/fetch_or_rebuild.py)


@dataclass(frozen=True)
class Settings:
    """Validated contents of buildml.yaml."""

    cache_dir: str | None = None
    remote_cache: str | None = None
    remote_upload: bool = True
    storage_options: dict = field(default_factory=dict)
    jobs: int | None = None
    prefer: str = "auto"  # remote hits: fetch, rebuild, or auto (by the recorded cost); a target's cache.prefer wins
    python_deps: str = "declared"  # or "auto": targets' imported workspace modules are deps (analyse/python_deps.py)
    max_files_per_folder: int = MAX_FILES_PER_FOLDER  # more in one folder of a directory out warns (engine/runner.py)
    raw: dict = field(default_factory=dict)
    executors: object = None  # executor_config.ExecutorSettings (`executor:` and `executors:`)
    doc: object = field(default=None, compare=False, repr=False)  # the parsed buildml.yaml, for locations


@dataclass(frozen=True)
class Workspace:
    """A workspace root and its settings."""

    root: Path
    settings: Settings

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def abspath(self, relpath: str) -> str:
        return os.path.join(self.root, relpath) if relpath else str(self.root)


def find_root(start: Path) -> Path:
    """The nearest directory at or above `start` holding buildml.yaml, or a DVC repo's .dvc/ directory."""
    start = Path(start).resolve()
    for candidate in (start, *start.parents):
        if (candidate / ROOT_FILE).is_file() or (candidate / DVC_DIR).is_dir():
            return candidate
    raise UserError(f"no {ROOT_FILE} found in {start} or any parent directory",
                    hint="run `buildml init` to create a workspace here, or cd into one (a DVC repo, with its "
                         ".dvc/ directory, is a workspace too)")


def load_workspace(start: Path) -> Workspace:
    """Find the root and read its settings (a DVC repo without buildml.yaml has the defaults)."""
    root = find_root(start)
    if not (root / ROOT_FILE).is_file():
        from buildml.load.executor_settings import parse_executor_settings

        return Workspace(root, Settings(executors=parse_executor_settings({}, None)))
    return Workspace(root, read_settings(root / ROOT_FILE))


def read_settings(path: Path) -> Settings:
    doc = load_yaml_file(path, ROOT_FILE)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise LoadError("buildml.yaml must be a mapping of settings", location=doc.where(()),
                        hint="an empty file is valid; see README for the settings")
    for key in data:
        if key not in _SETTINGS:
            raise LoadError(f"unknown setting {key!r}", location=doc.where((key,)),
                            hint=did_you_mean(str(key), _SETTINGS) or "known: " + ", ".join(_SETTINGS))
    cache = data.get("cache") or {}
    if not isinstance(cache, dict):
        raise LoadError("cache must be a mapping", location=doc.where(("cache",)), hint="e.g. cache: {dir: /data/buildml-cache}")
    for key in cache:
        if key not in _CACHE_SETTINGS:
            raise LoadError(f"unknown cache setting {key!r}", location=doc.where(("cache", key)),
                            hint=did_you_mean(str(key), _CACHE_SETTINGS) or "known: " + ", ".join(_CACHE_SETTINGS))
    jobs = data.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise LoadError("jobs must be a positive integer", location=doc.where(("jobs",)))
    opts = cache.get("storage_options") or {}
    if not isinstance(opts, dict):
        raise LoadError("storage_options must be a mapping", location=doc.where(("cache", "storage_options")))
    upload = cache.get("upload", True)
    if not isinstance(upload, bool):
        raise LoadError("upload must be true or false", location=doc.where(("cache", "upload")))
    prefer = cache.get("prefer", "auto")
    if prefer not in PREFER:
        raise LoadError(f"prefer must be one of {', '.join(PREFER)}, got {prefer!r:.60}",
                        location=doc.where(("cache", "prefer")), hint="auto fetches a remote hit unless rebuilding "
                        "here is clearly cheaper (by its recorded cost and the measured bandwidth)")
    python_deps = data.get("python_deps", "declared")
    if python_deps not in ("declared", "auto"):
        raise LoadError(f"python_deps must be auto or declared, got {python_deps!r:.60}",
                        location=doc.where(("python_deps",)), hint="python_deps: auto adds the workspace modules "
                        "that declared .py deps import")
    per_folder = data.get("max_files_per_folder", MAX_FILES_PER_FOLDER)
    if not isinstance(per_folder, int) or isinstance(per_folder, bool) or per_folder < 1:
        raise LoadError(f"max_files_per_folder must be a positive integer, got {per_folder!r:.60}",
                        location=doc.where(("max_files_per_folder",)),
                        hint=f"the most files one folder of a directory out may hold before a warning, e.g. "
                             f"max_files_per_folder: {MAX_FILES_PER_FOLDER}")
    from buildml.load.executor_settings import parse_executor_settings

    return Settings(cache_dir=cache.get("dir"), remote_cache=cache.get("remote"), remote_upload=upload,
                    storage_options=opts, jobs=jobs, prefer=prefer, python_deps=python_deps,
                    max_files_per_folder=per_folder, raw=data, executors=parse_executor_settings(data, doc), doc=doc)


def default_cache_dir(settings: Settings, root: Path) -> Path:
    """$BUILDML_CACHE_DIR, else the buildml.yaml setting, else $XDG_CACHE_HOME/buildml, else ~/.cache/buildml."""
    if os.environ.get("BUILDML_CACHE_DIR"):
        return Path(os.environ["BUILDML_CACHE_DIR"]).expanduser()
    if settings.cache_dir:
        return (root / Path(settings.cache_dir).expanduser()).resolve()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "buildml"
    return Path.home() / ".cache" / "buildml"


def normalize_relpath(package: str, path: str, where: Location, field: str) -> str:
    """Workspace-relative form of a path written in package `package`; refuses escapes."""
    if not isinstance(path, str) or not path.strip():
        raise LoadError("expected a non-empty path", location=where, field=field)
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise LoadError(f"absolute path {path!r} is not allowed", location=where, field=field,
                        hint="write paths relative to the package directory")
    joined = posixpath.normpath(posixpath.join(package, path.rstrip("/")))
    if joined == ".." or joined.startswith("../"):
        raise LoadError(f"path {path!r} escapes the workspace", location=where, field=field,
                        hint="every declared path must stay inside the workspace root")
    if joined == ".":
        raise LoadError("a path may not be the whole workspace root", location=where, field=field,
                        hint="name the files or directories the target reads")
    return joined


def inside(root: Path, path: str) -> bool:
    """True when the real path of `path` is under the real `root`."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)
