"""`image`: a Docker image built from a Dockerfile and its context, keyed by content, tagged by key."""

import posixpath

from buildml.rule import COMMON_ATTRS, IMAGE_EXECUTOR, Attr, Rule, normalize_relpath

_KEEP_COMMON = ("kind", "doc", "deps", "exclude")


class ImageRule(Rule):
    kind = "image"
    version = "1"
    attrs = {
        "dockerfile": Attr("string", "the Dockerfile, relative to the package (default Dockerfile)", default="Dockerfile"),
        "context": Attr("string", "the build context directory, relative to the package (default: the package)", default="."),
        "build_args": Attr("env", "ARG values for the build; part of the image key"),
        "target": Attr("string", "the Dockerfile stage to build"),
        "repository": Attr("string", "repository to tag the image in (default buildml/<package>/<name>)"),
        "tags": Attr("strings", "extra tags given to the built image (it is always tagged <repository>:<key>)"),
        "push": Attr("bool", "push to the docker.registry of buildml.yaml after a build", default=False),
    }

    def schema(self) -> dict:
        return {**{k: COMMON_ATTRS[k] for k in _KEEP_COMMON}, **self.attrs}

    def analyse(self, target):
        a, pkg = target.attrs, target.label.package
        dockerfile = normalize_relpath(pkg, a["dockerfile"], target.where("dockerfile"), "dockerfile")
        context = _context(pkg, a["context"], target)
        argv = ("docker", "build", "-f", dockerfile) + (("--target", a["target"]) if a.get("target") else ()) + (context,)
        ignore = posixpath.join(context, ".dockerignore")
        deps = tuple(a.get("deps", ())) + (_rel(pkg, dockerfile), _rel(pkg, context))
        # The Dockerfile's text (so its FROM references) and the .dockerignore'd context are inputs.
        extra = (("build_args", sorted(map(list, a.get("build_args", {}).items()))), ("target", a.get("target")))
        return self.base_spec(target, argv, deps=deps, outs=(), metrics=(), params=(), env=(), secrets=(),
                              image=None, network=True, resources=(), timeout=None, executor=IMAGE_EXECUTOR,
                              extra=extra, context_filter=(context, ignore))


def _context(pkg, text, target) -> str:
    """The context directory, workspace-relative (never the whole workspace root)."""
    return normalize_relpath(pkg, text, target.where("context"), "context")


def _rel(pkg: str, path: str) -> str:
    """A workspace-relative path written relative to the package (as deps are)."""
    return posixpath.relpath(path, pkg or ".")
