"""Put outputs where users find them: in place in the workspace (or under an --out root).

A path buildml did not write itself is never overwritten: it is moved aside to
.buildml/displaced/ with a warning, so nothing is lost.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import time
from pathlib import Path

from .errors import CacheCorruption


def check_manifest_paths(outputs: dict, outs) -> None:
    """Refuse a manifest whose paths escape the target's declared outs (a poisoned cache)."""
    declared = set(outs)
    for path in outputs:
        norm = posixpath.normpath(path)
        if norm != path or path.startswith(("/", "../")) or path == "..":
            raise CacheCorruption(f"cached manifest names an unsafe path {path!r}", hint="the cache entry was rejected")
        if path not in declared and not any(path.startswith(d + "/") for d in declared):
            raise CacheCorruption(f"cached manifest names {path!r}, which is not a declared out", hint="the cache entry was rejected")


class Materializer:
    """Restores outputs from the store into out_root, skipping files already in place."""

    def __init__(self, out_root, state, hasher, store, warn, displaced_dir):
        self.out_root = str(out_root)
        self.state, self.hasher, self.store, self.warn = state, hasher, store, warn
        self.displaced_dir = Path(displaced_dir)

    def intact(self, outputs: dict) -> bool:
        """True when every output file is in place with the recorded digest."""
        for path, meta in outputs.items():
            full = os.path.join(self.out_root, path)
            try:
                st = os.stat(full)
            except OSError:
                return False
            if st.st_size != meta["size"] or self.hasher.file(full, st).digest != meta["digest"]:
                return False
        return True

    def restore(self, outputs: dict, outs, out_dirs=()) -> None:
        """Write every output into place; clear stale files from directory outs."""
        check_manifest_paths(outputs, outs)
        for out in out_dirs:
            self._prune_dir(out, outputs)
        for path, meta in sorted(outputs.items()):
            self._place(path, meta)
        for out in out_dirs:
            os.makedirs(os.path.join(self.out_root, out), exist_ok=True)

    def _place(self, path: str, meta: dict) -> None:
        full = os.path.join(self.out_root, path)
        self._clear_parents(path)
        if os.path.isdir(full) and not os.path.islink(full):
            self._displace(path)
        elif os.path.lexists(full):
            st = os.lstat(full)
            current = self.hasher.file(full, st).digest if os.path.isfile(full) and not os.path.islink(full) else None
            if current == meta["digest"]:
                self._set_mode(full, meta)
                self.state.record_output(path, current)
                return
            if current is None or self.state.output_digest(path) != current:
                self._displace(path)
        os.makedirs(os.path.dirname(full) or ".", exist_ok=True)
        self.store.fetch_to(meta["digest"], full)
        self._set_mode(full, meta)
        self.state.record_output(path, meta["digest"])

    def _clear_parents(self, path: str) -> None:
        """A file standing where a parent directory must go is moved aside."""
        parent = os.path.dirname(path)
        chain = []
        while parent:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for p in reversed(chain):
            full = os.path.join(self.out_root, p)
            if os.path.lexists(full) and not os.path.isdir(full):
                self._displace(p)

    def _prune_dir(self, out: str, outputs: dict) -> None:
        top = os.path.join(self.out_root, out)
        if not os.path.isdir(top) or os.path.islink(top):
            return
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.out_root).replace(os.sep, "/")
                if rel in outputs:
                    continue
                if self.state.output_digest(rel) is not None:
                    os.unlink(full)
                    self.state.record_output(rel, None)
                else:
                    self._displace(rel)

    def _displace(self, path: str) -> None:
        dest = self.displaced_dir / time.strftime("%Y%m%d-%H%M%S") / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.path.join(self.out_root, path), dest)
        self.state.record_output(path, None)
        self.warn(f"moved {path} (not written by buildml) aside to {dest}")

    @staticmethod
    def _set_mode(full: str, meta: dict) -> None:
        want = 0o755 if meta.get("exec") else 0o644
        if os.stat(full).st_mode & 0o777 != want:
            os.chmod(full, want)
