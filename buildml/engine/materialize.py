"""Put outputs where users find them: in place in the workspace (or under an --out root).

A path buildml did not write itself is never overwritten: it is moved aside to
.buildml/displaced/ with a warning, so nothing is lost.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import time
from pathlib import Path

from buildml.errors import UserError
from buildml.store.leftovers import is_temp_name
from buildml.trust import check_manifest_paths, symlinked_part


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
        """Write every output into place; clear stale files from directory outs.

        Nothing is written, moved aside or deleted through a symlink: an out whose directory is a symlink, or
        lies under one (`gen -> /elsewhere`), is not restored and is an error naming it."""
        check_manifest_paths(outputs, outs, out_dirs)
        self._refuse_symlinked_dirs(outputs, out_dirs)
        for out in out_dirs:
            self._prune_dir(out, outputs)
        for path, meta in sorted(outputs.items()):
            self._place(path, meta)
        for out in out_dirs:
            self._clear_parents(f"{out}/.")  # a file standing where the directory out goes is moved aside
            os.makedirs(os.path.join(self.out_root, out), exist_ok=True)

    def _refuse_symlinked_dirs(self, outputs: dict, out_dirs) -> None:
        """Before anything is touched: every directory an output goes into is a real one (or does not exist yet)."""
        where = {posixpath.dirname(p): p for p in sorted(outputs, reverse=True)}
        where.update({d: d for d in out_dirs})
        for directory in sorted(set(where) - {""}):
            link = symlinked_part(self.out_root, directory)
            if link:
                raise UserError(f"out {where[directory]} was not restored: {link} is a symlink "
                                f"(to {_target(os.path.join(self.out_root, link))}) and buildml never writes, "
                                "moves or deletes through a symlink in the workspace",
                                hint=f"make {link} a real directory, or declare the out somewhere else")

    def _place(self, path: str, meta: dict) -> None:
        full = os.path.join(self.out_root, path)
        self._clear_parents(path)
        if os.path.isdir(full) and not os.path.islink(full):
            self._displace(path)
        elif os.path.lexists(full):
            current = self._digest(full)
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

    def _digest(self, full: str) -> str | None:
        """The digest of the regular file at full (a symlink is not followed), or None."""
        try:
            st = os.lstat(full)
            return self.hasher.file(full, st).digest if stat.S_ISREG(st.st_mode) else None
        except FileNotFoundError:  # a concurrent build moved it meanwhile
            return None

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
        """Files of a directory out the new result lacks go: deleted when buildml wrote them as they are,
        else moved aside. Temp files of builds restoring into it at the same time are left alone."""
        top = os.path.join(self.out_root, out)
        if not os.path.isdir(top) or os.path.islink(top):
            return
        for dirpath, _dirs, files in os.walk(top):  # symlinked directories are not followed
            for name in files:
                if is_temp_name(name):
                    continue  # another build's file in flight (a killed build's goes in the next build's sweep)
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.out_root).replace(os.sep, "/")
                if rel in outputs:
                    continue
                recorded = self.state.output_digest(rel)
                if recorded is not None and self._digest(full) == recorded:
                    _unlink_quietly(full)
                    self.state.record_output(rel, None)
                else:
                    self._displace(rel)

    def _displace(self, path: str) -> None:
        dest = self._displaced_path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.move(os.path.join(self.out_root, path), dest)
        except FileNotFoundError:  # a concurrent build moved or removed it meanwhile: nothing to keep
            return
        self.state.record_output(path, None)
        self.warn(f"moved {path} (not written by buildml) aside to {dest}")

    def _displaced_path(self, path: str) -> Path:
        """A place under displaced/ that holds nothing yet (one folder per second and process)."""
        folder = self.displaced_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        dest, n = folder / path, 1
        while os.path.lexists(dest):
            dest, n = folder / f"{path}.{n}", n + 1
        return dest

    @staticmethod
    def _set_mode(full: str, meta: dict) -> None:
        want = 0o755 if meta.get("exec") else 0o644
        if os.stat(full).st_mode & 0o777 != want:
            os.chmod(full, want)


def _target(link: str) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:  # a concurrent build removed it first
        pass
