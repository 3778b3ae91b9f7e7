"""The image builder: builds an image target's Dockerfile with the docker SDK and tags it <repository>:<key>."""

from __future__ import annotations

import os
import re
import tarfile
import time

from buildml.action import IMAGE_EXECUTOR
from buildml.errors import UserError
from buildml.executors import Executor, RunOutcome, RunRequest, mask
from buildml.executors.docker.engine import engine_error
from buildml.executors.docker.dockerignore import biggest

INLINE_DOCKERFILE = ".buildml.Dockerfile"  # where a Dockerfile outside the context goes in the tar
_PULL_FAILURES = ("dial tcp", "pull access denied", "manifest unknown", "repository does not exist", "not found")


class ImageBuilder(Executor):
    """Builds images; `missing` tells the scheduler when a remembered image left the engine."""

    name = IMAGE_EXECUTOR

    def __init__(self, engine, naming, warn=lambda message: None, transfer=lambda what, total, label=None: None):
        self.engine = engine
        self.naming = naming  # label -> (repository, extra tags, push)
        self.warn = warn
        self.transfer = transfer  # byte progress of the context upload

    def missing(self, action) -> str:
        """'' when the image tagged with the key is in the engine (or was fetched from the registry), else why not."""
        repository = self.naming(action.spec.label)[0]
        if self.engine.image_present(f"{repository}:{action.key}") or self.engine.pull_from_registry(repository, action.key):
            return ""
        return f"image {repository}:{action.key[:12]}... is not in the Docker engine"

    def run(self, request: RunRequest) -> RunOutcome:
        action = request.action
        repository, tags, push = self.naming(action.spec.label)
        ref = f"{repository}:{action.key}"
        start = time.monotonic()
        say = _logger(request)
        if self.engine.image_present(ref):
            say(f"image {ref} is already in the engine; build skipped")
        else:
            error = self._build(request, ref, say)
            if error and any(m in error for m in _PULL_FAILURES):
                say("hint: a base image (FROM) is missing and could not be pulled; make it locally "
                    "(e.g. tools/base-images.sh) or configure docker.registry")
            if error:
                return RunOutcome(1, time.monotonic() - start, self.name, self.engine.host, detail=f"image build failed: {error}")
        image = self.engine.client().images.get(ref)
        for tag in tags:
            image.tag(repository, tag)
        if push:
            self._push(repository, action.key, say)
        extra = {"image": ref, "image_id": image.id}
        if action.base_images:
            extra["base_images"] = dict(action.base_images)
        return RunOutcome(0, time.monotonic() - start, self.name, self.engine.host, extra=extra)

    # -- steps -------------------------------------------------------------------------
    def _build(self, request: RunRequest, ref: str, say) -> str:
        """Build from the staged context; return the engine's error message, or ''."""
        import docker

        spec = request.action.spec
        dockerfile, context = spec.argv[3], spec.argv[-1]
        refuse_buildkit_syntax(dockerfile, (request.sandbox.ws / dockerfile).read_text(errors="replace"))
        extra = dict(spec.extra)
        tar_path, dockerfile_in_tar = self._context_tar(request, context, dockerfile)
        say(f"building {ref} from {dockerfile} (context {context}/)")
        progress = self.transfer(f"image context {spec.label}", os.path.getsize(tar_path), spec.label)
        try:
            with open(tar_path, "rb") as raw:
                tar = _Counted(raw, progress)
                stream = self.engine.client().api.build(
                    fileobj=tar, custom_context=True, dockerfile=dockerfile_in_tar, tag=ref, rm=True, forcerm=True,
                    buildargs=dict(extra.get("build_args") or []), target=extra.get("target"), decode=True)
                if progress is not None:
                    progress.finish()
                return _follow(stream, say)
        except docker.errors.APIError as exc:
            raise engine_error(exc, f"building {spec.label}") from None
        finally:
            os.unlink(tar_path)

    def _context_tar(self, request: RunRequest, context: str, dockerfile: str) -> tuple[str, str]:
        """Tar exactly the context files the key covers (those that survived .dockerignore)."""
        ws, prefix = request.sandbox.ws, context + "/"
        files = sorted(p for p in request.action.inputs if p.startswith(prefix))
        self._warn_size(request, context, {p[len(prefix):]: os.path.getsize(ws / p) for p in files})
        inside = dockerfile.startswith(prefix)
        in_tar = dockerfile[len(prefix):] if inside else INLINE_DOCKERFILE
        source = self._pinned_dockerfile(request, ws / dockerfile)
        tar_path = str(request.sandbox.root / "context.tar")
        with tarfile.open(tar_path, "w") as tar:
            for path in files:
                if path != dockerfile:
                    tar.add(ws / path, arcname=path[len(prefix):], recursive=False, filter=_normalize)
            tar.add(source, arcname=in_tar, filter=_normalize)
        return tar_path, in_tar

    def _pinned_dockerfile(self, request: RunRequest, path):
        """The Dockerfile to send: as written, or with its pinned base images as ref@digest (buildml.lock)."""
        pins = dict(request.action.base_images)
        if not pins:
            return path
        from buildml.executors.docker.base_images import pin_dockerfile

        build_args = dict(dict(request.action.spec.extra).get("build_args") or [])
        pinned = request.sandbox.root / "Dockerfile.pinned"
        pinned.write_text(pin_dockerfile(path.read_text(), pins, build_args))
        return pinned

    def _warn_size(self, request: RunRequest, context: str, sizes: dict) -> None:
        total = sum(sizes.values())
        if total <= self.engine.settings.context_warn_bytes:
            return
        top = ", ".join(f"{p} ({_mb(n)})" for p, n in biggest(sizes))
        self.warn(f"the build context of {request.action.spec.label} is {_mb(total)}; biggest: {top}; "
                  f"list what the image does not need in {context}/.dockerignore")

    def _push(self, repository: str, key: str, say) -> None:
        if not self.engine.settings.registry:
            self.warn(f"push: true for {repository} but buildml.yaml sets no docker.registry; not pushed")
            return
        self.engine.push(repository, key, say)


# What only BuildKit understands: buildml builds through the Engine API's classic builder, which refuses these
# with a parse error that names neither the line nor a way out.
_BUILDKIT_ONLY = (
    (re.compile(r"^\s*#\s*syntax\s*=", re.IGNORECASE), "a `# syntax=` frontend directive", "delete the line"),
    (re.compile(r"^\s*RUN\s+(?:--\S+\s+)*--(mount|network|security)\b", re.IGNORECASE), "RUN --{0}",
     "drop the flag (e.g. RUN --mount=type=cache: use pip --no-cache-dir; a secret mount: declare `secrets:` "
     "on a command target instead of baking it into the image)"),
    (re.compile(r"^\s*(?:COPY|ADD)\s+(?:--\S+\s+)*--(link|parents|exclude|checksum|keep-git-dir)\b", re.IGNORECASE),
     "COPY/ADD --{0}", "drop the flag"),
    (re.compile(r"^\s*(?:RUN|COPY|ADD)\b.*<<-?\s*[\"']?\w+", re.IGNORECASE), "a heredoc (<<EOF)",
     "put the text in a file of the context and COPY it"),
)


def refuse_buildkit_syntax(dockerfile: str, text: str) -> None:
    """A UserError naming the Dockerfile line of the first BuildKit-only construct (before anything is sent)."""
    in_directives = True  # parser directives (# syntax=) count only above the first instruction
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what, fix in _BUILDKIT_ONLY:
            found = pattern.search(line)
            if found and (in_directives or not what.startswith("a `# syntax")):
                raise UserError(f"{dockerfile}:{number}: {what.format(*found.groups())} needs BuildKit, and buildml "
                                f"builds images with the Docker engine's classic builder: {line.strip()[:80]}", hint=fix)
        if line.strip() and not line.lstrip().startswith("#"):
            in_directives = False


class _Counted:
    """A file object that reports the bytes read from it (the engine client streams the context by read())."""

    def __init__(self, raw, progress):
        self.raw, self.progress = raw, progress

    def read(self, size=-1):
        data = self.raw.read(size)
        if self.progress is not None and data:
            self.progress.add(len(data))
        return data

    def __getattr__(self, name):  # fileno, seek, tell: so the client can size the upload
        return getattr(self.raw, name)


def _follow(stream, say) -> str:
    """Relay the build's JSON stream line by line; return its error, or ''."""
    pending = ""
    for chunk in stream:
        if "error" in chunk:
            say(chunk["error"].rstrip())
            return chunk["error"].strip().splitlines()[-1] if chunk["error"].strip() else "unknown error"
        pending += chunk.get("stream", "") or (chunk.get("status", "") + "\n" if chunk.get("status") else "")
        *lines, pending = pending.split("\n")
        for line in lines:
            say(line)
    if pending:
        say(pending)
    return ""


def _logger(request: RunRequest):
    def say(line: str) -> None:
        line = mask(line.rstrip("\r"), request.masks)
        with open(request.log_path, "a", encoding="utf-8", errors="replace") as log:
            log.write(line + "\n")
        request.on_line(line)
    return say


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB"
