"""`buildml watch [TARGETS]`: stay resident, rebuild what changed on every save.

File events come from the `watchfiles` package (inotify on Linux, the platform's own elsewhere), debounced so a
burst of saves is one rebuild. The loaded and analysed graph stays in memory between builds, with the workspace
state's stat cache: an edit of a declared source file rebuilds with no loading or analysis, re-hashing only what
changed, and only the targets that read a changed file and what depends on them are examined again (the others'
results from the last build stand: nothing they read changed). Anything that can change the graph (a BUILD.yaml, dvc.yaml, buildml.yaml or lock file, a params file, a
file added or removed, a .py file where `python_deps: auto` reads imports, anything that is not a declared source)
loads the workspace again first. Outputs buildml writes, and .buildml/, .git/ and buildml-out/, are not watched, so
a build never triggers the next one. Ctrl-C stops a running build as in `buildml build` (the cache stays
consistent) and ends the watch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from buildml.errors import EnvironmentProblem

DEBOUNCE_MS = 50
IGNORED_DIRS = (".buildml", ".git", "buildml-out", "__pycache__", ".dvc")
GRAPH_FILES = ("BUILD.yaml", "BUILD.yml", "dvc.yaml", "dvc.lock", "buildml.yaml", "buildml.lock", ".dockerignore")


@dataclass
class Change:
    """One debounced batch of file events: workspace-relative paths, and whether the graph must be loaded again."""

    paths: list
    reload: bool


def _watchfiles():
    try:
        import watchfiles
    except ImportError:
        raise EnvironmentProblem("buildml watch needs the watchfiles package",
                                 hint="pip install 'buildml-cli[watch]' (or pip install watchfiles)") from None
    return watchfiles


class Watcher:
    """Which events matter for a loaded graph, and whether they need it loaded again."""

    def __init__(self, session):
        self.root = str(session.ws.root)
        graph = session.graph
        self.outs = set(graph.out_owner)
        self.sources = {s for inp in graph.inputs.values() for s in inp.sources}
        self.params = {f for spec in graph.specs.values() for f, _ in spec.params}
        auto = session.ws.settings.python_deps == "auto" or any(
            t.get("python_deps") == "auto" for t in graph.targets.values())
        self.python_deps = auto

    def relevant(self, path: str) -> bool:
        """False for paths a build writes or buildml keeps to itself."""
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        if rel.startswith("../"):
            return False
        parts = rel.split("/")
        if any(p in IGNORED_DIRS for p in parts) or ".buildml-" in parts[-1]:  # buildml's own temps
            return False
        return not self._under(rel, self.outs)

    @staticmethod
    def _under(rel: str, paths) -> bool:
        while rel:
            if rel in paths:
                return True
            rel = rel.rpartition("/")[0]
        return False

    def unchanged(self, session, paths, finished) -> dict:
        """The results of finished that paths cannot have changed: every target but those reading one of the
        paths and what depends on them (`Session.build(known=...)` takes them as up to date)."""
        dag = session.graph.dag
        touched = {label for label, inp in session.graph.inputs.items()
                   if any(self._under(p, set(inp.sources)) for p in paths)}
        for label in list(touched):
            touched |= dag.descendants(label)
        return {r.label: r for r in finished.results if r.ok and r.label not in touched}

    def change(self, events) -> Change | None:
        """The batch as a Change, or None when nothing in it matters."""
        added = _watchfiles().Change.added
        deleted = _watchfiles().Change.deleted
        kept = [(kind, path) for kind, path in events if self.relevant(path)]
        if not kept:
            return None
        rels = sorted({os.path.relpath(p, self.root).replace(os.sep, "/") for _, p in kept})
        reload = any(kind in (added, deleted) for kind, _ in kept) or any(
            os.path.basename(r) in GRAPH_FILES or r.endswith(".dvc") or r in self.params
            or (self.python_deps and r.endswith(".py")) or not self._under(r, self.sources) for r in rels)
        return Change(rels, reload)


def watch(new_session, build, say, stop_event=None) -> None:
    """Build once, then after every relevant change; new_session() loads the workspace, build(session, known)
    builds (known: the results an edit of sources only cannot have changed) and returns its BuildFinished (None
    when it failed to start).

    A load or analysis error is shown and waited out (the next save tries again); Ctrl-C ends it."""
    watchfiles = _watchfiles()
    session = _load(new_session, say)
    finished = build(session, None) if session is not None else None
    root = str(session.ws.root) if session is not None else str(Path(".").resolve())
    watcher = Watcher(session) if session is not None else None
    say(f"watching {root} for changes (Ctrl-C stops)")
    for events in watchfiles.watch(root, debounce=DEBOUNCE_MS, step=DEBOUNCE_MS, stop_event=stop_event,
                                   raise_interrupt=True, rust_timeout=0, yield_on_timeout=False):
        change = watcher.change(events) if watcher is not None else Change([], True)
        if change is None:
            continue
        shown = ", ".join(change.paths[:3]) + (f" and {len(change.paths) - 3} more" if len(change.paths) > 3 else "")
        say(f"changed: {shown}" + ("; loading the workspace again" if change.reload else ""))
        known = None
        if change.reload or session is None or finished is None:
            session = _load(new_session, say)
            if session is None:
                continue
            watcher = Watcher(session)
        else:  # only declared sources changed: what does not read them stands as it was
            known = watcher.unchanged(session, change.paths, finished)
        finished = build(session, known)


def _load(new_session, say):
    """A Session with its graph analysed, or None after showing why the workspace does not load."""
    from buildml.errors import UserError

    try:
        session = new_session()
        session.graph  # noqa: B018 - load and analyse now, so an error shows here
        return session
    except UserError as exc:
        say(exc.render())
        say("fix it and save: the watch goes on")
        return None


__all__ = ["Change", "Watcher", "watch"]
