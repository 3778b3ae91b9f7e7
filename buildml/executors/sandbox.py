"""A fresh directory laid out like the workspace, holding only an action's declared inputs."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from buildml.errors import ExecutionError
from buildml.hashing import copy_and_digest, is_executable
from buildml.load.params import write_subset
from buildml.store.local import BlobMissing, remove_tree
from buildml.trust import open_dir_under, open_under, symlinked_part


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
        """{path: (absolute file, executable)} for every file of every declared out, found without following links.

        A missing out raises; so does an out that is or lies under a symlink, and any symlink, hard link (it may
        be a file outside the sandbox), FIFO, socket or device among the outputs: nothing of them is ever read.
        """
        files = {}
        missing = []
        for out in outs:
            found = self._collect_out(out)
            if found is None:
                missing.append(out)
            else:
                files.update((path, (str(self.ws / path), executable)) for path, executable in found.items())
        if missing:
            raise ExecutionError("declared out" + ("s " if len(missing) > 1 else " ") + ", ".join(repr(m) for m in missing)
                                 + " not produced", hint="make the command write it, or remove it from outs")
        return files

    def open_output(self, path: str) -> int:
        """A read-only fd of a collected output, opened without following links (never blocks on a FIFO);
        it must still be a regular file with one link, else ExecutionError."""
        try:
            fd = open_under(self.ws, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            raise _changed(path, exc) from None
        try:
            _check_file(path, os.fstat(fd), path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _collect_out(self, out: str) -> dict | None:
        """{path: executable} of one out's files, or None when it does not exist."""
        parent, _, name = out.rpartition("/")
        try:
            dfd = open_dir_under(self.ws, parent)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP or ENOTDIR: a parent is a symlink, or a file
            link = symlinked_part(self.ws, parent)
            if link:
                raise ExecutionError(f"out {out!r} lies under {link!r}, which the command made a symlink",
                                     hint="outputs are collected only from real directories in the sandbox; "
                                          "write the files themselves, never a link to them") from None
            if exc.errno == errno.ENOTDIR:
                return None
            raise _changed(out, exc) from None
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if stat.S_ISDIR(st.st_mode):
                return self._walk(out, dfd, name)
            return {out: _check_file(out, st, out)}
        except OSError as exc:
            raise _changed(out, exc) from None
        finally:
            os.close(dfd)

    def _walk(self, out: str, parent_fd: int, name: str) -> dict:
        """{path: executable} of every file under the directory out, walked by fds (O_NOFOLLOW): no link is followed."""
        files = {}
        todo = [(out, os.open(name, _DIR_FLAGS, dir_fd=parent_fd))]
        try:
            while todo:
                rel, fd = todo.pop()
                try:
                    with os.scandir(fd) as entries:
                        for entry in entries:
                            child = f"{rel}/{entry.name}"
                            st = entry.stat(follow_symlinks=False)
                            if stat.S_ISDIR(st.st_mode):
                                todo.append((child, os.open(entry.name, _DIR_FLAGS, dir_fd=fd)))
                            else:
                                files[child] = _check_file(child, st, out)
                finally:
                    os.close(fd)
        finally:
            for _, fd in todo:
                os.close(fd)
        return files

    def remove(self) -> None:
        remove_tree(self.root)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK
_SPECIAL = ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device"))


def _check_file(path: str, st: os.stat_result, out: str) -> bool:
    """Whether the file is executable, for a regular file with one link; ExecutionError for anything else."""
    where = f"out {out!r}" if path == out else f"{path} in out {out!r}"
    for test, what in _SPECIAL:
        if test(st.st_mode):
            raise ExecutionError(f"{where} is {what}", hint="outputs must be regular files or directories; "
                                                            "remove anything else before the command ends")
    if not stat.S_ISREG(st.st_mode):
        raise ExecutionError(f"{where} is not a regular file", hint="outputs must be regular files or directories")
    if st.st_nlink > 1:
        raise ExecutionError(f"{where} is a hard link ({st.st_nlink} names for one file)",
                             hint="write a new file (cp, not ln): a hard link may be a file outside the sandbox")
    return is_executable(st.st_mode)


def _changed(path: str, exc: OSError) -> ExecutionError:
    return ExecutionError(f"output {path!r} cannot be collected: {exc.strerror}",
                          hint="outputs must be regular files or directories nothing changes after the command ends")
