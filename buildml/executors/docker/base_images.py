"""Base images of image targets: their FROM references, pinned by registry digest in buildml.lock.

A Dockerfile's `FROM python:3.11` names a tag, and a tag moves. Where the engine reports a
registry digest for a reference (the image's RepoDigests, or the registry's manifest digest
when the image is not in the engine yet), the digest is pinned in the `images:` section of
buildml.lock, it enters the image target's key, and the image is built `FROM ref@digest`, so an
old commit (`--at`) builds from the base it locked. An image that exists only in this engine
(made with `docker import` or built here) has no registry digest: nothing is pinned for it,
and the Dockerfile's text alone keys it.

On the current tree each build compares the engine's digest with the pin: a difference stops the
build naming the reference, unless `--update-lock` (or `buildml lock`) re-pins. `--at` builds use
the old lock as it is.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from buildml.errors import UserError
from buildml.load.lockfile import LOCK_FILE, read_images, write_lock

_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(?P<ref>\S+)(?:\s+AS\s+(?P<alias>\S+))?\s*$", re.IGNORECASE)
_ARG = re.compile(r"^\s*ARG\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<value>\S*))?", re.IGNORECASE)
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class BaseImageDrift(UserError):
    """A pinned base image no longer matches what the engine or registry reports."""


def logical_lines(text: str) -> list[str]:
    """Dockerfile lines with backslash continuations joined and comments dropped."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if not pending and raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _substitute(ref: str, args: dict) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), ref)


def _pinnable(ref: str, stages: set) -> bool:
    return ref.lower() not in stages and ref.lower() != "scratch" and "$" not in ref and "@" not in ref


def from_refs(text: str, build_args: dict | None = None) -> list[str]:
    """The external base images a Dockerfile builds FROM (not its own stages, not scratch, not digests)."""
    args, stages, refs = {}, set(), []
    for line in logical_lines(text):
        arg = _ARG.match(line)
        if arg and not refs and not stages:  # ARGs before the first FROM may parameterize it
            args[arg["name"]] = (build_args or {}).get(arg["name"], arg["value"] or "")
            continue
        found = _FROM.match(line)
        if not found:
            continue
        ref = _substitute(found["ref"], {**args, **(build_args or {})})
        if _pinnable(ref, stages) and ref not in refs:
            refs.append(ref)
        if found["alias"]:
            stages.add(found["alias"].lower())
    return refs


def pin_dockerfile(text: str, pins: dict, build_args: dict | None = None) -> str:
    """The Dockerfile with each pinned FROM reference replaced by ref@digest."""
    if not pins:
        return text
    args = {}
    out = []
    for line in text.splitlines(keepends=True):
        arg = _ARG.match(line)
        if arg:
            args.setdefault(arg["name"], (build_args or {}).get(arg["name"], arg["value"] or ""))
        found = _FROM.match(line.rstrip("\n"))
        if found:
            ref = _substitute(found["ref"], {**args, **(build_args or {})})
            if ref in pins:
                start, end = found.span("ref")
                line = line[:start] + f"{ref}@{pins[ref]}" + line[end:]
        out.append(line)
    return "".join(out)


def repository_of(ref: str) -> str:
    """`host:5000/team/img:tag` -> `host:5000/team/img` (a tag is after the last colon past the last slash)."""
    name, _, last = ref.rpartition("/")
    repo = last.split(":", 1)[0]
    return f"{name}/{repo}" if name else repo


class BaseImages:
    """Resolves and checks the base-image pins of one build; thread-safe; writes buildml.lock on change."""

    def __init__(self, lock_path: Path, engine, check: bool = True, update: bool = False, dry_run: bool = False):
        self.lock_path, self.engine = Path(lock_path), engine  # engine: () -> docker_engine.Engine
        self.check, self.update, self.dry_run = check, update, dry_run
        self._pins: dict | None = None
        self._lock = threading.Lock()

    @property
    def pins(self) -> dict:
        if self._pins is None:
            self._pins = read_images(self.lock_path)
        return self._pins

    def for_dockerfile(self, label, dockerfile: str, build_args: dict) -> tuple[tuple[str, str], ...]:
        """((ref, digest), ...) for the FROM references of label's Dockerfile that have a registry digest."""
        try:
            text = Path(dockerfile).read_text(errors="replace")
        except OSError:
            return ()  # the missing Dockerfile is reported by the build itself
        with self._lock:
            pairs = [(ref, self._resolve(label, ref)) for ref in from_refs(text, build_args)]
        return tuple((ref, digest) for ref, digest in pairs if digest)

    def _resolve(self, label, ref: str) -> str | None:
        pinned = self.pins.get(ref)
        if not self.check:  # --at: the old lock is the truth
            return pinned or self.current(ref)
        current = self.current(ref, ask_registry=self.update)
        if current is None or current == pinned:
            return pinned
        if pinned is not None and not self.update:
            raise BaseImageDrift(
                f"base image {ref} of {label} drifted from {LOCK_FILE}: pinned {pinned[:19]}..., "
                f"the engine now reports {current[:19]}...",
                hint="re-pin with `buildml lock` (or build with --update-lock) if the new base is intended")
        self._save(ref, current)
        return current

    def current(self, ref: str, ask_registry: bool = False) -> str | None:
        """The registry digest of ref: the engine's copy first, then (if absent or asked) the registry."""
        if not ask_registry:
            local = self._local_digest(ref)
            if local != "":
                return local
        return self._registry_digest(ref) or (self._local_digest(ref) or None)

    def _local_digest(self, ref: str) -> str | None:
        """The digest among the engine's RepoDigests for ref's repository; None for a local-only image, '' if absent."""
        import docker

        try:
            attrs = self.engine().client().images.get(ref).attrs
        except docker.errors.ImageNotFound:
            return ""
        except docker.errors.APIError:
            return ""
        repo = repository_of(ref)
        for entry in attrs.get("RepoDigests") or ():
            name, _, digest = entry.partition("@")
            if name == repo or name.endswith("/" + repo) or repo.endswith("/" + name):
                return digest
        return None

    def _registry_digest(self, ref: str) -> str | None:
        import docker

        try:
            return self.engine().client().api.inspect_distribution(ref)["Descriptor"]["digest"]
        except (docker.errors.DockerException, KeyError, TypeError):
            return None

    def _save(self, ref: str, digest: str) -> None:
        self.pins[ref] = digest
        if not self.dry_run:
            write_lock(self.lock_path, images=self.pins)

    def prune(self, keep) -> list[str]:
        """Drop pins of references no image target uses any more; the dropped references."""
        with self._lock:
            gone = sorted(set(self.pins) - set(keep))
            for ref in gone:
                del self.pins[ref]
            if gone:
                write_lock(self.lock_path, images=self.pins)
        return gone


def dockerfile_pins(resolver: BaseImages, root, spec) -> tuple[tuple[str, str], ...]:
    """The pins of an image target's spec (its Dockerfile is argv[3], its build args in extra)."""
    build_args = dict(dict(spec.extra).get("build_args") or [])
    return resolver.for_dockerfile(spec.label, str(Path(root) / spec.argv[3]), build_args)
