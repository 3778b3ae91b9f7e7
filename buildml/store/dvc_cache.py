"""DVC-tracked data: bytes from a DVC cache directory or a DVC remote, md5-verified, placed in the workspace.

Nothing here needs `dvc`: the layouts are DVC's own (dvc_data's object databases):
- DVC 3 objects (pointers with `hash: md5`): `<cache or remote>/files/md5/ab/cdef...`, md5 of the file bytes;
- DVC 2 objects (pointers without `hash:`): `<cache or remote>/ab/cdef...`, md5 "dos2unix": each 1 MiB chunk whose
  first 512 bytes look like text (no NUL, at most 30% non-text bytes) is hashed with CRLF turned into LF;
- a directory is an object `<md5>.dir` holding a JSON list of `{"md5": ..., "relpath": ...}` entries (its md5 is
  that of the listing's bytes), each file an object of its own.
Every value read from a listing is checked (32-hex md5, a safe relative path) before it becomes a path.
Files are written to a temporary name beside their place, verified, then linked in: a file already there is never
overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from buildml.errors import CacheCorruption, EnvironmentProblem
from buildml.trust import relpath_problem, symlinked_part

CHUNK = 1 << 20  # dvc_data's fobj_md5 chunk size: the dos2unix test is made per chunk
TEXT_BLOCK = 512
_TEXT_CHARS = bytes(range(32, 127)) + b"\n\r\t\f\b"
_MD5 = re.compile(r"[0-9a-f]{32}")
FETCH_HINT = "check the DVC remote (`dvc push` from where the data was added), or remove the bad object and retry"


def is_md5(value) -> bool:
    return isinstance(value, str) and _MD5.fullmatch(value) is not None


def _is_text(block: bytes) -> bool:
    """dvc_data's istextblock."""
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, _TEXT_CHARS)) / len(block) <= 0.30


class _Md5:
    def __init__(self, dos2unix: bool):
        self.h, self.dos2unix = hashlib.md5(usedforsecurity=False), dos2unix

    def update(self, chunk: bytes) -> None:
        if self.dos2unix and chunk and _is_text(chunk[:TEXT_BLOCK]):
            chunk = chunk.replace(b"\r\n", b"\n")
        self.h.update(chunk)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def md5_file(path, dos2unix: bool = False) -> str:
    """The md5 DVC records for a file: of its bytes (DVC 3), or with DVC 2's per-chunk dos2unix."""
    h = _Md5(dos2unix)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DvcRemote:
    """A DVC remote: its name in .dvc/config, an fsspec URL and the options for its filesystem."""

    name: str
    url: str
    options: dict = field(default_factory=dict)


class DvcObjects:
    """DVC's objects in local cache directories and (failing those) one remote."""

    def __init__(self, cache_dirs, remote: DvcRemote | None = None):
        self.cache_dirs = [Path(d) for d in cache_dirs]
        self.remote = remote
        self._fs = None

    # -- one object -----------------------------------------------------------------------------------
    @staticmethod
    def _names(oid: str, legacy: bool) -> list[str]:
        first = [f"{oid[:2]}/{oid[2:]}", f"files/md5/{oid[:2]}/{oid[2:]}"]
        return first if legacy else first[::-1]

    def _open(self, oid: str, legacy: bool):
        """(readable binary file, where) of object oid: the cache first, then the remote; None when absent."""
        for cache in self.cache_dirs:
            for name in self._names(oid, legacy):
                path = cache / name
                if path.is_file():
                    return open(path, "rb"), str(path)
        if self.remote is None:
            return None
        fs, root = self._remote_fs()
        for name in self._names(oid, legacy):
            where = f"{root}/{name}"
            try:
                return fs.open(where, "rb"), f"{self.remote.url.rstrip('/')}/{name}"
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise EnvironmentProblem(f"DVC remote {self.remote.name!r} ({self.remote.url}): cannot read {name}: "
                                         f"{exc}", hint="check the remote's URL and credentials in .dvc/config "
                                         "(and .dvc/config.local)") from None
        return None

    def _remote_fs(self):
        if self._fs is None:
            from buildml.store.remote import open_fs

            self._fs = open_fs(self.remote.url, self.remote.options)
        return self._fs

    def _copy_verified(self, oid: str, md5: str, dos2unix: bool, legacy: bool, dst_fd: int, what: str) -> str:
        opened = self._open(oid, legacy)
        if opened is None:
            return ""
        src, where = opened
        h = _Md5(dos2unix)
        with src, os.fdopen(dst_fd, "wb", closefd=False) as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != md5:
            raise CacheCorruption(f"{what}: the DVC object {where} has md5 {h.hexdigest()}, not {md5} as its pointer "
                                  f"says", hint=FETCH_HINT)
        return where

    def _missing(self, md5: str, what: str) -> CacheCorruption:
        places = [str(c) for c in self.cache_dirs] + ([f"remote {self.remote.name!r} ({self.remote.url})"]
                                                        if self.remote else [])
        hint = ("push it from where it was added (`dvc push`)" if self.remote else
                "configure a DVC remote (`dvc remote add -d NAME URL`) and `dvc push` the data there")
        return CacheCorruption(f"{what}: DVC object {md5} is in none of: {', '.join(places) or 'no cache'}", hint=hint)

    # -- placing data -----------------------------------------------------------------------------------
    def place(self, root, relpath: str, md5: str, is_dir: bool, dos2unix: bool, what: str) -> str:
        """Put the data of md5 at root/relpath (absent there), verified; where it came from (a path or URL)."""
        if relpath_problem(relpath) or symlinked_part(root, os.path.dirname(relpath)):
            raise CacheCorruption(f"{what}: refusing to write {relpath!r}", hint="a DVC path must stay inside the "
                                  "workspace, with no symlinked directory on the way")
        dest = os.path.join(str(root), relpath)
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        if not is_dir:
            return self._place_file(dest, md5, dos2unix, what) or ""
        return self._place_dir(dest, md5, dos2unix, what)

    def _place_file(self, dest: str, md5: str, dos2unix: bool, what: str, legacy: bool | None = None) -> str:
        legacy = dos2unix if legacy is None else legacy
        fd, tmp = tempfile.mkstemp(prefix=".buildml-dvc-", dir=os.path.dirname(dest))
        try:
            try:
                where = self._copy_verified(md5, md5, dos2unix, legacy, fd, what)
            finally:
                os.close(fd)
            if not where:
                raise self._missing(md5, what)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, dest)  # never over a file that is there
            except FileExistsError:
                pass
            return where
        finally:
            os.unlink(tmp)

    def _place_dir(self, dest: str, md5: str, dos2unix: bool, what: str) -> str:
        fd, tmp = tempfile.mkstemp(prefix=".buildml-dvc-", dir=os.path.dirname(dest))
        try:
            try:
                where = self._copy_verified(f"{md5}.dir", md5, False, dos2unix, fd, what)
            finally:
                os.close(fd)
            if not where:
                raise self._missing(f"{md5}.dir", what)
            listing = Path(tmp).read_bytes()
        finally:
            os.unlink(tmp)
        entries = _listing(listing, where, what)
        staging = tempfile.mkdtemp(prefix=".buildml-dvc-", dir=os.path.dirname(dest))
        try:
            for rel, oid in entries:
                target = os.path.join(staging, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self._place_file(target, oid, dos2unix, f"{what} ({rel})")
            if os.path.lexists(dest):
                return where  # someone else placed it meanwhile: theirs stays
            os.rename(staging, dest)
            staging = ""
            return where
        finally:
            if staging:
                shutil.rmtree(staging, ignore_errors=True)


def _listing(data: bytes, where: str, what: str) -> list[tuple[str, str]]:
    """(relpath, md5) of each entry of a .dir object, every value checked."""
    try:
        raw = json.loads(data)
    except ValueError:
        raw = None
    if not isinstance(raw, list):
        raise CacheCorruption(f"{what}: the DVC directory object {where} is not a JSON list", hint=FETCH_HINT)
    out = []
    for i, entry in enumerate(raw):
        rel = entry.get("relpath") if isinstance(entry, dict) else None
        md5 = entry.get("md5") if isinstance(entry, dict) else None
        problem = relpath_problem(rel, reserved=False) if isinstance(rel, str) else "is not a string"
        if problem or not is_md5(md5):
            bad = f"relpath {rel!r} {problem}" if problem else f"md5 {md5!r} is not 32 hex characters"
            raise CacheCorruption(f"{what}: entry {i} of the DVC directory object {where}: {bad}", hint=FETCH_HINT)
        out.append((rel, md5))
    return out
