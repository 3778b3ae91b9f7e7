"""A fresh directory laid out like the workspace, holding only an action's declared inputs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ExecutionError
from .hashing import copy_and_digest, is_executable
from .params import write_subset
from .store import BlobMissing, remove_tree


@dataclass(frozen=True)
class Staged:
    """Where one input comes from: a workspace file (abspath) or a store blob (digest)."""

    path: str
    digest: str
    executable: bool
    source: str | None = None  # absolute workspace path; None means "from the store"
    fallback: str | None = None  # a materialized copy to use if the store lost the blob


class Sandbox:
    """root/ws is the workspace view; root/home and root/tmp are private to the action."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.ws = self.root / "ws"
        self.home = self.root / "home"
        self.tmp = self.root / "tmp"
        for d in (self.ws, self.home, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def workdir(self, package: str) -> Path:
        return self.ws / package if package else self.ws

    def stage(self, store, inputs, params: dict, package: str, outs) -> None:
        """Copy inputs in (verifying each against the digest the key used), write params, make dirs."""
        self.workdir(package).mkdir(parents=True, exist_ok=True)
        for item in inputs:
            dest = self.ws / item.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if item.source is None:
                try:
                    store.fetch_to(item.digest, dest)
                except BlobMissing:
                    if item.fallback is None:
                        raise
                    self._copy_verified(item.fallback, dest, item)
            else:
                self._copy_verified(item.source, dest, item)
            os.chmod(dest, 0o755 if item.executable else 0o644)
        for relpath, selected in params.items():
            dest = self.ws / relpath
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                write_subset(str(dest), selected)
        for out in outs:
            (self.ws / out).parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _copy_verified(src, dest, item: Staged) -> None:
        try:
            got = copy_and_digest(src, dest)
        except FileNotFoundError:
            raise ExecutionError(f"input {item.path} disappeared during the build", hint="run the build again") from None
        if got != item.digest:
            raise ExecutionError(f"input {item.path} changed during the build", hint="run the build again")

    def collect(self, outs) -> dict:
        """{path: (absolute file, executable)} for every file of every declared out; a missing out raises."""
        files = {}
        missing = []
        for out in outs:
            full = self.ws / out
            if full.is_symlink():
                raise ExecutionError(f"out {out!r} is a symlink", hint="outputs must be regular files or directories")
            if full.is_file():
                files[out] = (str(full), is_executable(full.stat().st_mode))
            elif full.is_dir():
                files.update(self._walk(out, full))
            else:
                missing.append(out)
        if missing:
            raise ExecutionError("declared out" + ("s " if len(missing) > 1 else " ") + ", ".join(repr(m) for m in missing)
                                 + " not produced", hint="make the command write it, or remove it from outs")
        return files

    def _walk(self, out: str, full: Path) -> dict:
        files = {}
        for dirpath, dirnames, filenames in os.walk(full):
            rel_dir = os.path.relpath(dirpath, self.ws).replace(os.sep, "/")
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    raise ExecutionError(f"{rel_dir}/{name} in out {out!r} is a symlink",
                                         hint="outputs must be regular files or directories")
                files[f"{rel_dir}/{name}"] = (p, is_executable(os.stat(p).st_mode))
        return files

    def remove(self) -> None:
        remove_tree(self.root)
