"""What killed buildml processes leave behind (kill -9, a crash, a power cut), and the sweep that removes it.

A process takes an owner lock before it makes its first temp under a cache: tmp/owner-<id>.lock, flocked
for the life of the process and removed when it exits. Its temps carry the id: tmp/<prefix><id>-<random>
(sandboxes, downloads) and <dir>/.<name>.buildml-tmp-<id>-<n> (outputs being restored; each such <dir>
is appended to the lock file before the first temp goes there). An owner lock that is free, or gone, proves
its owner dead: `sweep` (run by every build, under the shared cache lock) then removes that owner's temps.
An untagged entry of tmp/ (tmp/w-*, or one from an older buildml) goes only when it is older than the start
of every live owner, and only while no other build holds the cache lock (a build of an older buildml tags
nothing). Temps of live processes are never touched, whatever their age.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import re
import secrets
import stat
import threading
import time

from buildml.errors import EnvironmentProblem
from buildml.fsutil import remove_tree

TEMP_MARKS = (".buildml-tmp-", ".buildml-remote-")  # in the names of temp files buildml puts next to outputs
_ID = r"[0-9a-f]{16}"
_OWNER = re.compile(rf"owner-({_ID})\.lock")
_TAGGED = re.compile(rf"(?:[A-Za-z_]+-)+({_ID})-.+")  # tmp/<prefix><id>-<random>
_TAGGED_FILE = re.compile(rf"\..*\.buildml-tmp-({_ID})-[0-9]+")
SLACK_NS = 100_000_000  # file times come from a coarse kernel clock
_owners: dict = {}
_owners_lock = threading.Lock()


def is_temp_name(name: str) -> bool:
    """True for the name of a temp file buildml writes next to an output (its own or another process's)."""
    return name.startswith(".") and any(mark in name for mark in TEMP_MARKS)


def owner(tmp_dir) -> Owner:
    """This process's owner lock under a cache's tmp/ directory (taken on first use)."""
    key = (os.getpid(), os.path.abspath(tmp_dir))
    with _owners_lock:
        if key not in _owners:
            _owners[key] = Owner(key[1])
        return _owners[key]


class Owner:
    """One process's owner lock in one tmp/ directory: the id its temps carry."""

    def __init__(self, tmp_dir: str):
        self.tmp_dir, self.pid = tmp_dir, os.getpid()
        self._lock = threading.Lock()
        self._dirs: set = set()
        self._count = itertools.count()
        self.id, self.fd, self.path, self.start_ns = _take(tmp_dir)
        atexit.register(self.release)

    def temp_name(self, dest) -> str:
        """A fresh temp path beside dest, tagged with this owner; its directory is noted first for the sweep."""
        directory, name = os.path.split(os.path.abspath(dest))
        self._note(directory)
        return os.path.join(directory, f".{name[:100]}.buildml-tmp-{self.id}-{next(self._count)}")

    def _note(self, directory: str) -> None:
        if directory in self._dirs or directory.startswith(self.tmp_dir + os.sep):
            return  # temps inside tmp/ go with their sandbox
        with self._lock:
            if directory not in self._dirs and self.fd is not None:
                os.write(self.fd, os.fsencode(directory) + b"\0")
                self._dirs.add(directory)

    def release(self) -> None:
        """Remove the lock file and let go of it (at exit; never in a forked child)."""
        with self._lock:
            if self.fd is None or os.getpid() != self.pid:
                return
            _silent_unlink(self.path)
            os.close(self.fd)
            self.fd = None


def _take(tmp_dir: str) -> tuple:
    """Create and flock a fresh owner lock; retry if a sweep removed it before the flock landed."""
    while True:
        ident = secrets.token_hex(8)
        path = os.path.join(tmp_dir, f"owner-{ident}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(path, fd):
            start = os.fstat(fd).st_ctime_ns
            os.write(fd, b"%d\0" % start)
            return ident, fd, path, start
        os.close(fd)


def sweep(tmp_dir, alone=None) -> int:
    """Remove what dead owners left in tmp_dir and beside outputs, and old untagged entries; how many went.

    alone() is a context manager that holds the cache lock exclusively (EnvironmentProblem when another build
    runs); untagged entries are removed only inside it. Costs one listdir when tmp/ is empty (the usual case)."""
    tmp_dir = os.path.abspath(tmp_dir)
    listed_ns = time.time_ns()  # an owner missing from the listing started after this
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0
    if not names:
        return 0
    return _Sweep(tmp_dir, listed_ns).run(names, alone)


class _Sweep:
    """One pass over tmp/: owners are probed once each; the dead ones' temps are removed, then their locks."""

    def __init__(self, tmp_dir: str, listed_ns: int):
        self.tmp_dir = tmp_dir
        mine = _owners.get((os.getpid(), tmp_dir))
        self.live = {mine.id: mine.start_ns} if mine and mine.fd is not None else {}
        self.dead: dict = {}  # id -> fd holding its (free) lock
        self.oldest_ns = min([listed_ns, *self.live.values()])
        self.removed = 0

    def run(self, names, alone) -> int:
        for name in names:
            m = _OWNER.fullmatch(name)
            if m:
                self._alive(m[1])
        untagged = []
        for name in names:
            if _OWNER.fullmatch(name):
                continue
            m = _TAGGED.fullmatch(name)
            if m is None:
                untagged.append(name)
            elif not self._alive(m[1]):
                self._remove(os.path.join(self.tmp_dir, name))
        if untagged and alone is not None:
            try:
                with alone():
                    for name in untagged:
                        self._remove_if_old(os.path.join(self.tmp_dir, name))
            except EnvironmentProblem:
                pass  # another build runs: an untagged entry may be its own
        for ident, fd in self.dead.items():
            self._bury(ident, fd)
        return self.removed

    def _alive(self, ident: str) -> bool:
        if ident in self.live:
            return True
        if ident in self.dead:
            return False
        path = os.path.join(self.tmp_dir, f"owner-{ident}.lock")
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            self.dead[ident] = None  # released at exit, or already swept: its temps are orphans
            return False
        except OSError:
            self.live[ident] = 0  # cannot tell: keep everything of it
            self.oldest_ns = 0
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            start = _start_of(fd)
            os.close(fd)
            self.live[ident] = start
            self.oldest_ns = min(self.oldest_ns, start)
            return True
        self.dead[ident] = fd
        return False

    def _bury(self, ident: str, fd) -> None:
        """A dead owner's temps beside outputs, then its lock file."""
        if fd is None:
            return
        try:
            for directory in _noted_dirs(fd):
                self._remove_tagged_files(directory, ident)
            path = os.path.join(self.tmp_dir, f"owner-{ident}.lock")
            if _same_file(path, fd):
                _silent_unlink(path)
        finally:
            os.close(fd)

    def _remove_tagged_files(self, directory: str, ident: str) -> None:
        try:
            if os.path.islink(directory):
                return
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            m = _TAGGED_FILE.fullmatch(entry.name)
            if m and m[1] == ident and not entry.is_dir(follow_symlinks=False):
                self._remove(entry.path)

    def _remove_if_old(self, path: str) -> None:
        try:
            ctime = os.lstat(path).st_ctime_ns
        except OSError:
            return
        if ctime < self.oldest_ns - SLACK_NS:
            self._remove(path)

    def _remove(self, path: str) -> None:
        try:
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
        except OSError:
            return
        if is_dir:
            remove_tree(path)
        else:
            _silent_unlink(path)
        self.removed += 1


def _start_of(fd: int) -> int:
    """When a live owner started (the first record of its lock file); now if it has not written it yet."""
    try:
        head = os.pread(fd, 32, 0).split(b"\0", 1)[0]
        return int(head) if head else time.time_ns()
    except (OSError, ValueError):
        return 0


def _noted_dirs(fd: int) -> list:
    """The directories a dead owner noted before putting temps there (the records after its start)."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    records = b"".join(chunks).split(b"\0")[1:]
    return [os.fsdecode(r) for r in records if r.startswith(b"/")]


def _same_file(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _silent_unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
