"""buildml.lock: the committed, diff-friendly record of what every external data dep resolved to.

One entry per dep as written in BUILD files (a URL or a URL glob), listing each file it matched
with its size, its content digest (the key of its bytes in the content-addressed store) and
the backend's own identity (ETag, checksum, generation, version id) where the backend has one:

    version: 1
    deps:
      s3://bucket/raw/*.parquet:
      - url: s3://bucket/raw/2024-01.parquet
        size: 1048576
        digest: 7f0c...
        etag: 9b2cf535f27731c974343645a3985328
    images:
      registry.example.com/ml/python:3.11: sha256:4a1c...

`images:` pins the base images (FROM references) of image targets to the registry digest the
engine reported (buildml/base_images.py); each part of the file is written by its own module
and the other part is kept as it is.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import LoadError, Location

LOCK_FILE = "buildml.lock"
VERSION = 1
HEADER = "# Pinned external data: written by `buildml lock` and `buildml build --update-lock`. Commit this file.\n"


@dataclass(frozen=True)
class Pin:
    """One external file as it was locked."""

    url: str
    size: int
    digest: str
    identity: tuple[tuple[str, str], ...] = ()  # the backend's (name, value) pairs, sorted

    def as_dict(self) -> dict:
        return {"url": self.url, "size": self.size, "digest": self.digest, **dict(self.identity)}


def _pin(raw, where: Location) -> Pin:
    if not isinstance(raw, dict) or not {"url", "size", "digest"} <= set(raw):
        raise LoadError("every pin needs url, size and digest", location=where,
                        hint="regenerate the file with `buildml lock`")
    identity = tuple(sorted((str(k), str(v)) for k, v in raw.items() if k not in ("url", "size", "digest")))
    return Pin(str(raw["url"]), int(raw["size"]), str(raw["digest"]), identity)


def read_lock(path: Path) -> dict[str, tuple[Pin, ...]]:
    """{dep: pins} from the lock file; an absent file is an empty lock."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    where = Location(str(path))
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise LoadError(f"{LOCK_FILE} is not valid YAML: {exc}", location=where,
                        hint="resolve merge conflicts, or regenerate it with `buildml lock`") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("deps", {}), dict):
        raise LoadError(f"{LOCK_FILE} has an unknown format (expected version: {VERSION} and deps:)", location=where,
                        hint="regenerate it with `buildml lock`")
    return {str(dep): tuple(_pin(p, where) for p in pins or ()) for dep, pins in (data.get("deps") or {}).items()}


def read_images(path: Path) -> dict[str, str]:
    """{FROM reference: registry digest} from the lock file's images: section."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise LoadError(f"{LOCK_FILE} is not valid YAML: {exc}", location=Location(str(path)),
                        hint="resolve merge conflicts, or regenerate it with `buildml lock`") from None
    images = data.get("images") or {} if isinstance(data, dict) else None
    if not isinstance(images, dict) or not all(isinstance(v, str) and v.startswith("sha256:") for v in images.values()):
        raise LoadError(f"{LOCK_FILE}: images must map each FROM reference to a sha256: digest",
                        location=Location(str(path)), hint="regenerate it with `buildml lock`")
    return {str(ref): digest for ref, digest in images.items()}


def render_lock(pins: dict[str, tuple[Pin, ...]], images: dict[str, str] | None = None) -> str:
    """The lock file's text: sorted, one field per line, so a change is a small diff."""
    body = {"version": VERSION, "deps": {dep: [p.as_dict() for p in sorted(ps, key=lambda p: p.url)]
                                         for dep, ps in sorted(pins.items())}}
    if images:
        body["images"] = dict(sorted(images.items()))
    return HEADER + yaml.safe_dump(body, sort_keys=False, default_flow_style=False, width=1000)


def write_lock(path: Path, pins: dict[str, tuple[Pin, ...]] | None = None, images: dict[str, str] | None = None) -> None:
    """Replace the lock file atomically; a part given as None is kept as the file has it."""
    path = Path(path)
    pins = read_lock(path) if pins is None else pins
    images = read_images(path) if images is None else images
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".buildml.lock.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render_lock(pins, images))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
