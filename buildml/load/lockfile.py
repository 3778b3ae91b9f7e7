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
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from buildml.errors import LoadError, Location
from buildml.trust import is_digest

LOCK_FILE = "buildml.lock"
VERSION = 1
HEADER = "# Pinned external data: written by `buildml lock` and `buildml build --update-lock`. Commit this file.\n"
IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REGENERATE = "regenerate it with `buildml lock` (a lock file from a branch or a PR is untrusted input)"


@dataclass(frozen=True)
class Pin:
    """One external file as it was locked."""

    url: str
    size: int
    digest: str
    identity: tuple[tuple[str, str], ...] = ()  # the backend's (name, value) pairs, sorted

    def as_dict(self) -> dict:
        return {"url": self.url, "size": self.size, "digest": self.digest, **dict(self.identity)}


def _pin(raw, where) -> Pin:
    """One pin, every field checked; where(*fields) is the Location of that part of the pin."""
    if not isinstance(raw, dict) or not {"url", "size", "digest"} <= set(raw):
        raise LoadError("every pin needs url, size and digest", location=where(), hint=REGENERATE)
    if not isinstance(raw["url"], str) or "\0" in raw["url"]:
        raise LoadError(f"{_show(raw['url'])} is not a URL", location=where("url"), field="url",
                        hint=REGENERATE)
    if type(raw["size"]) is not int or raw["size"] < 0:
        raise LoadError(f"the pin of {_show(raw['url'])} has size {_show(raw['size'])}, which is not an integer >= 0",
                        location=where("size"), field="size", hint=REGENERATE)
    if not is_digest(raw["digest"]):
        raise LoadError(f"the pin of {_show(raw['url'])} has digest {_show(raw['digest'])}, which is not a "
                        "content digest (32 hex characters)", location=where("digest"), field="digest", hint=REGENERATE)
    identity = tuple(sorted((str(k), str(v)) for k, v in raw.items() if k not in ("url", "size", "digest")))
    return Pin(raw["url"], raw["size"], raw["digest"], identity)


def _load(path: Path):
    """The lock file as a yamlsrc Document (values with their locations), or None when there is no file."""
    from buildml.load.yamlsrc import load_yaml

    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LoadError(f"cannot read {LOCK_FILE}: {exc.strerror}", location=Location(str(path))) from None
    try:
        return load_yaml(text, str(path))
    except LoadError as exc:
        raise LoadError(f"{LOCK_FILE} is not valid YAML: {exc.message}", location=exc.location,
                        hint="resolve merge conflicts, or regenerate it with `buildml lock`") from None


def read_lock(path: Path) -> dict[str, tuple[Pin, ...]]:
    """{dep: pins} from the lock file; an absent file is an empty lock."""
    doc = _load(path)
    if doc is None:
        return {}
    data = doc.data or {}
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("deps") or {}, dict):
        raise LoadError(f"{LOCK_FILE} has an unknown format (expected version: {VERSION} and deps:)",
                        location=doc.where(()), hint="regenerate it with `buildml lock`")
    lock = {}
    for dep, pins in (data.get("deps") or {}).items():
        if not isinstance(pins, list):
            raise LoadError(f"the pins of {dep} are not a list", location=doc.where(("deps", dep)), hint=REGENERATE)
        lock[str(dep)] = tuple(_pin(p, lambda *f, i=i, dep=dep: doc.where(("deps", dep, i, *f))) for i, p in enumerate(pins))
    return lock


def read_images(path: Path) -> dict[str, str]:
    """{FROM reference: registry digest} from the lock file's images: section."""
    doc = _load(path)
    if doc is None:
        return {}
    data = doc.data or {}
    images = (data.get("images") or {}) if isinstance(data, dict) else None
    if not isinstance(images, dict):
        raise LoadError(f"{LOCK_FILE}: images must map each FROM reference to a sha256: digest",
                        location=doc.where(("images",)), hint="regenerate it with `buildml lock`")
    for ref, digest in images.items():
        if not isinstance(digest, str) or not IMAGE_DIGEST.fullmatch(digest):
            raise LoadError(f"{LOCK_FILE}: the digest of {ref} ({_show(digest)}) is not a sha256: digest",
                            location=doc.where(("images", ref)), field=f"images.{ref}",
                            hint="regenerate it with `buildml lock`")
    return {str(ref): digest for ref, digest in images.items()}


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
