"""`buildml lock`: re-pin the external data and the base images the matched targets use, in buildml.lock."""

from __future__ import annotations

from buildml.action import IMAGE_EXECUTOR
from buildml.engine.external import ExternalData, external_deps
from buildml.executors.docker.base_images import BaseImages, dockerfile_pins
from buildml.load.lockfile import LOCK_FILE


def lock(session, patterns) -> list[tuple[str, str]]:
    """(dep or "image REF", pinned/unchanged/updated/removed) rows; with no patterns, unused pins are dropped."""
    labels = session.select(patterns)
    return _lock_data(session, labels, everything=not patterns) + _lock_images(session, labels, everything=not patterns)


def _lock_data(session, labels, everything: bool) -> list[tuple[str, str]]:
    data = ExternalData(session.ws.root / LOCK_FILE, session.store, check=True, update=True)
    rows = []
    for dep in external_deps(session.graph, labels):
        before = data.pins.get(dep)
        after = data.resolve(dep)
        rows.append((dep, "pinned" if before is None else "unchanged" if before == after else "updated"))
    if everything:
        rows += [(dep, "removed") for dep in data.prune([d for d, _ in rows])]
    return rows


def _lock_images(session, labels, everything: bool) -> list[tuple[str, str]]:
    resolver = BaseImages(session.ws.root / LOCK_FILE, lambda: session.containers.engine, update=True)
    before = dict(resolver.pins)
    rows, seen = [], []
    for label in session.graph.closure(labels):
        spec = session.graph.specs[label]
        if spec.executor != IMAGE_EXECUTOR:
            continue
        for ref, digest in dockerfile_pins(resolver, session.ws.root, spec):
            if ref not in seen:
                seen.append(ref)
                what = "pinned" if ref not in before else "unchanged" if before[ref] == digest else "updated"
                rows.append((f"image {ref}", what))
    if everything:
        rows += [(f"image {ref}", "removed") for ref in resolver.prune(seen)]
    return rows
