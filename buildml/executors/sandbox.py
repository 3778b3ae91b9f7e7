"""A fresh directory laid out like the workspace, holding only an action's declared inputs."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple

from buildml.errors import BuildmlError, CacheCorruption, ExecutionError
from buildml.fsutil import silent_unlink
from buildml.hashing import copy_and_digest, digest_file, is_executable
from buildml.load.params import write_subset
from buildml.store.local import BlobMissing, ChangedWhileStored, remove_tree
from buildml.trust import open_dir_under, open_under, symlinked_part


class Staged(NamedTuple):
    """Where one input comes from: a workspace file (abspath) or a store blob (digest)."""

    path: str
    digest: str
    executable: bool
    source: str | None = None  # absolute workspace path; None means "from the store"
    fallback: str | None = None  # a materialized copy to use if the store lost the blob
    writable: bool = False  # the command may change it (a persist: true out): a copy, never a link
    size: int | None = None  # its bytes where known (progress of staging a large directory)


class Sandbox:
    """root/ws is the workspace view; root/home and root/tmp are private to the action."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.ws = self.root / "ws"
        self.home = self.root / "home"
        self.tmp = self.root / "tmp"
        for d in (self.ws, self.home, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._linked: dict = {}  # digest -> (blob path, its stat signature once staged, the inputs linked to it)
        self._inodes: set = set()  # (device, inode) of every linked blob: an output may be one (a moved input)
        self.copied = 0  # inputs staged by copy, not by link

    def workdir(self, package: str) -> Path:
        return self.ws / package if package else self.ws

    def stage(self, store, inputs, params: dict, package: str, outs, link: bool = True, progress=None) -> None:
        """Lay the inputs out (each verified against the digest the key used), write params, make dirs.

        With link (and a store that can), every input that is not executable is a hard link of its read-only
        cache blob: a workspace source enters the cache first (once per content), so a dataset of many files
        costs a link per file, and an unchanged file is the very same blob build after build. Anything else
        (an executable, another file system, a store without files) is copied, and said at -v. Whether a
        command wrote into a linked input is checked after it ran (check_inputs). progress: a store/progress.Progress
        counting each input staged (and its bytes, where known)."""
        self.workdir(package).mkdir(parents=True, exist_ok=True)
        link = link and store.can_link
        copied = 0
        made = set()
        ws = str(self.ws)
        for item in inputs:
            dest = f"{ws}/{item.path}"
            parent = os.path.dirname(dest)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            if not (link and not item.executable and not item.writable and self._link(store, item, dest)):
                copied += 1
                self._copy(store, item, dest)
            if progress is not None:
                progress.add(item.size or 0, 1)
        self.copied = copied
        if progress is not None:
            progress.finish()
        for digest, (blob, _, items) in self._linked.items():  # after every link: linking changes the ctime
            self._linked[digest] = (blob, _signature(os.stat(blob)), items)
        for relpath, selected in params.items():
            dest = self.ws / relpath
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                write_subset(str(dest), selected)
        for out in outs:
            (self.ws / out).parent.mkdir(parents=True, exist_ok=True)

    def _copy(self, store, item: Staged, dest: str) -> None:
        """Copy item to dest (a blob fetched from the store, or a file verified against its digest)."""
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

    def _link(self, store, item: Staged, dest: str) -> bool:
        """Hard-link item's blob at dest; False when this store or file system cannot (then it is copied)."""
        if item.digest in self._linked:
            blob = self._linked[item.digest][0]
            try:
                os.link(blob, dest)
            except OSError:
                return False
            self._linked[item.digest][2].append(item)
            return True
        try:  # a workspace file's blob is only ever local: no remote lookup per source file
            blob = (store if item.source is None else store.local).link_to(item.digest, dest)
        except BlobMissing:
            if item.source is None:
                if item.fallback is None:
                    raise
                return False  # copied (and verified) from the materialized file instead
            self._put_source(store.local, item)  # a workspace file enters the cache once per content
            blob = store.local.link_to(item.digest, dest)
        except CacheCorruption:
            if item.fallback is None and item.source is None:
                raise
            return False
        if blob is None:
            return False
        st = os.stat(blob)
        self._inodes.add((st.st_dev, st.st_ino))
        self._linked[item.digest] = (blob, None, [item])
        return True

    @staticmethod
    def _put_source(store, item: Staged) -> None:
        try:
            store.put_file(item.source, item.digest)
        except FileNotFoundError:
            raise ExecutionError(f"input {item.path} disappeared during the build", hint="run the build again") from None
        except ChangedWhileStored:
            raise ExecutionError(f"input {item.path} changed during the build", hint="run the build again") from None

    def check_inputs(self, store) -> None:
        """After the command: every linked blob is as it was. A blob whose bytes changed (a command made its input
        writable and wrote into it) is removed from the cache and put back from the file it came from, and the
        action fails; a blob only made writable gets its read-only mode back."""
        written = []
        for digest, (blob, before, items) in self._linked.items():
            try:
                st = os.stat(blob)
            except FileNotFoundError:
                continue  # removed meanwhile (cache gc, a concurrent repair): nothing of it is served any more
            if _signature(st) == before:
                continue
            if digest_file(blob) == digest:
                if st.st_mode & 0o777 != 0o444:
                    os.chmod(blob, 0o444)
                continue
            silent_unlink(blob)
            written.append(items[0].path)
            for origin in [o for item in items for o in (item.source, item.fallback) if o]:
                try:  # the bytes come back from a verified copy where there is one
                    store.put_file(origin, digest)
                    break
                except (OSError, BuildmlError):
                    continue
        if written:
            raise ExecutionError(
                f"the command wrote into its input{'s' if len(written) > 1 else ''} {', '.join(sorted(written))}: "
                "inputs are read-only links to cache blobs, and what it changed was removed from the cache "
                "(the workspace files are untouched)",
                hint="inputs are read-only: write a new file (copy the input first if it must change)")

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
            _check_file(path, os.fstat(fd), path, self._inodes)
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
            return {out: _check_file(out, st, out, self._inodes)}
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
                                files[child] = _check_file(child, st, out, self._inodes)
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


def _signature(st: os.stat_result) -> tuple:
    """What a write or a chmod of a file changes: its ctime always moves (a command cannot set it back)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def _check_file(path: str, st: os.stat_result, out: str, linked=frozenset()) -> bool:
    """Whether the file is executable, for a regular file with one link (or one of the cache blobs the sandbox
    linked in: an input the command moved into its outputs); ExecutionError for anything else."""
    where = f"out {out!r}" if path == out else f"{path} in out {out!r}"
    for test, what in _SPECIAL:
        if test(st.st_mode):
            raise ExecutionError(f"{where} is {what}", hint="outputs must be regular files or directories; "
                                                            "remove anything else before the command ends")
    if not stat.S_ISREG(st.st_mode):
        raise ExecutionError(f"{where} is not a regular file", hint="outputs must be regular files or directories")
    if st.st_nlink > 1 and (st.st_dev, st.st_ino) not in linked:
        raise ExecutionError(f"{where} is a hard link ({st.st_nlink} names for one file)",
                             hint="write a new file (cp, not ln): a hard link may be a file outside the sandbox")
    return is_executable(st.st_mode)


def _changed(path: str, exc: OSError) -> ExecutionError:
    return ExecutionError(f"output {path!r} cannot be collected: {exc.strerror}",
                          hint="outputs must be regular files or directories nothing changes after the command ends")
