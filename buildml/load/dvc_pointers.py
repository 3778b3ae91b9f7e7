"""DVC-tracked data: `.dvc` pointer files, the outs recorded in `dvc.lock`, and the DVC config that says where the
bytes are (`.dvc/config`, `.dvc/config.local`: `[cache] dir`, `[core] remote`, `['remote "NAME"'] url`).

A dep that is missing from the workspace and that a pointer names (the path itself or a directory above it) is
fetched from the DVC cache or remote (buildml/store/dvc_cache.py), md5-verified and placed in the workspace; then it
is a source file like any other, keyed on its content. A present file that differs from its pointer is built as it
is, with one warning (as `dvc status` says "modified"). Pointers are found where DVC writes them: `PATH.dvc` beside
the data (or beside a directory above it), and `dvc.lock` in a directory above the path. Everything read from these
files is untrusted: an md5 is 32 hex characters, a path is relative and stays inside the workspace.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from buildml.errors import LoadError, Location, UserError
from buildml.load.workspace import DVC_DIR, STATE_DIR
from buildml.store.dvc_cache import DvcObjects, DvcRemote, is_md5, md5_file
from buildml.trust import relpath_problem

POINTER_SUFFIX = ".dvc"
LOCK_FILE = "dvc.lock"
REPAIR = "it is read as DVC writes it: regenerate it with `dvc add` / `dvc repro` (or `dvc commit`)"


@dataclass(frozen=True)
class DvcPin:
    """Data a pointer names: a workspace-relative path, its md5 (a directory's without `.dir`)."""

    path: str
    md5: str
    is_dir: bool
    dos2unix: bool  # DVC 2 pointers (no `hash: md5`): md5 with CRLF -> LF for text chunks
    size: int | None
    source: str  # the pointer file, workspace-relative
    location: Location


def _bad(message: str, where, field: str) -> LoadError:
    return LoadError(message, location=where, field=field, hint=REPAIR)


def _entry_pin(entry, base: str, source: str, doc, path: tuple, field: str) -> DvcPin | None:
    where = doc.where(path)
    if not isinstance(entry, dict):
        raise _bad(f"an entry of {field} must be a mapping with path and md5", where, field)
    rel = entry.get("path")
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\0" in rel:
        raise _bad(f"path {rel!r} is not a relative path", doc.where(path + ("path",)), f"{field}.path")
    joined = posixpath.normpath(posixpath.join(base, rel))
    problem = relpath_problem(joined)
    if problem or joined == DVC_DIR or joined.startswith(DVC_DIR + "/"):
        raise _bad(f"path {rel!r} {problem or 'is inside .dvc/'} (the data must lie inside the workspace)",
                   doc.where(path + ("path",)), f"{field}.path")
    md5 = entry.get("md5")
    if md5 is None:  # an out DVC does not cache (cache: false) or not yet committed: nothing to fetch
        return None
    is_dir = isinstance(md5, str) and md5.endswith(".dir")
    value = md5[:-4] if is_dir else md5
    if not is_md5(value):
        raise _bad(f"md5 {md5!r} of {rel!r} is not 32 hex characters (with '.dir' for a directory)",
                   doc.where(path + ("md5",)), f"{field}.md5")
    hash_name = entry.get("hash")
    if hash_name not in (None, "md5"):
        raise _bad(f"hash {hash_name!r} of {rel!r} is not one buildml reads (md5)", doc.where(path + ("hash",)),
                   f"{field}.hash")
    size = entry.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise _bad(f"size {size!r} of {rel!r} is not an integer >= 0", doc.where(path + ("size",)), f"{field}.size")
    return DvcPin(joined, value, is_dir, hash_name is None, size, source, where)


def read_pointer(root: Path, relpath: str) -> list[DvcPin]:
    """The outs of one `.dvc` file (paths relative to its directory, or its `wdir`)."""
    from buildml.load.yamlsrc import load_yaml_file

    doc = load_yaml_file(os.path.join(str(root), relpath), relpath)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("outs"), list):
        raise _bad("a .dvc file is a mapping with an 'outs:' list", doc.where(()), "outs")
    base = posixpath.dirname(relpath)
    wdir = data.get("wdir")
    if wdir is not None:
        if not isinstance(wdir, str) or wdir.startswith("/"):
            raise _bad(f"wdir {wdir!r} is not a relative path", doc.where(("wdir",)), "wdir")
        base = posixpath.normpath(posixpath.join(base, wdir))
        base = "" if base == "." else base
    pins = [_entry_pin(e, base, relpath, doc, ("outs", i), "outs") for i, e in enumerate(data["outs"])]
    return [p for p in pins if p is not None]


def read_lock_outs(root: Path, relpath: str) -> list[DvcPin]:
    """The outs dvc.lock records for its stages (paths relative to the lock's directory)."""
    from buildml.load.yamlsrc import load_yaml_file

    doc = load_yaml_file(os.path.join(str(root), relpath), relpath)
    data = doc.data
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        raise _bad("dvc.lock is a mapping with a 'stages:' mapping", doc.where(()), "stages")
    base = posixpath.dirname(relpath)
    pins = []
    for name, stage in stages.items():
        outs = stage.get("outs", []) if isinstance(stage, dict) else None
        if not isinstance(outs, list):
            raise _bad(f"stage {name!r}: outs must be a list", doc.where(("stages", name)), f"stages.{name}.outs")
        for i, entry in enumerate(outs):
            pin = _entry_pin(entry, base, relpath, doc, ("stages", name, "outs", i), f"stages.{name}.outs")
            if pin is not None:
                pins.append(pin)
    return pins


# -- .dvc/config ---------------------------------------------------------------------------------------------
_SECTION = re.compile(r"\[\s*(?P<q>['\"]?)(?P<name>.*?)(?P=q)\s*\]")


def parse_config(text: str, file: str) -> dict[str, dict[str, str]]:
    """DVC's config (configobj INI): sections `[core]`, `['remote "name"']`, `key = value` lines."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        m = _SECTION.fullmatch(stripped)
        if m:
            current = sections.setdefault(" ".join(m.group("name").split()), {})
            continue
        key, eq, value = stripped.partition("=")
        if not eq or current is None:
            raise LoadError(f"cannot read line {n}: {stripped[:60]!r}", location=Location(file, n), field="config",
                            hint="DVC's config is `[section]` headers and `key = value` lines (`dvc config --list`)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        current[key.strip()] = value
    return sections


@dataclass(frozen=True)
class DvcConfig:
    cache_dir: Path
    remote: DvcRemote | None


def read_config(repo: Path) -> DvcConfig:
    """The cache directory and the default remote of the DVC repo at repo (config.local over config)."""
    dvc_dir = Path(repo) / DVC_DIR
    merged: dict[str, dict[str, str]] = {}
    for name in ("config", "config.local"):
        path = dvc_dir / name
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {DVC_DIR}/{name}: {exc}", hint="fix or remove the file") from None
        for section, values in parse_config(text, f"{DVC_DIR}/{name}").items():
            merged.setdefault(section, {}).update(values)
    cache = merged.get("cache", {}).get("dir")
    cache_dir = (dvc_dir / os.path.expanduser(cache)).resolve() if cache else dvc_dir / "cache"
    name = merged.get("core", {}).get("remote")
    remote = None
    if name:
        section = merged.get(f'remote "{name}"')
        if section is None or not section.get("url"):
            raise UserError(f"{DVC_DIR}/config: core.remote is {name!r}, but there is no remote {name!r} with a url",
                            hint=f"add it with `dvc remote add -d {name} URL`")
        remote = DvcRemote(name, _remote_url(section["url"], dvc_dir), _remote_options(section))
    return DvcConfig(cache_dir, remote)


def _remote_url(url: str, dvc_dir: Path) -> str:
    if "://" in url:
        return url
    return str((dvc_dir / os.path.expanduser(url)).resolve())  # DVC: relative to the config file's directory


def _remote_options(section: dict) -> dict:
    """fsspec options from DVC's remote settings (s3: endpointurl, region, keys; others passed as they are)."""
    options: dict = {}
    url = section["url"]
    if url.startswith(("s3://", "s3a://")):
        client = {}
        if section.get("endpointurl"):
            client["endpoint_url"] = section["endpointurl"]
        if section.get("region"):
            client["region_name"] = section["region"]
        if client:
            options["client_kwargs"] = client
        if section.get("access_key_id"):
            options["key"] = section["access_key_id"]
        if section.get("secret_access_key"):
            options["secret"] = section["secret_access_key"]
        if section.get("profile"):
            options["profile"] = section["profile"]
    return options


# -- the data of a workspace -------------------------------------------------------------------------------
class DvcData:
    """Pointers of a workspace and where their bytes are; asked by analysis about missing and present deps.

    data_repo is the DVC repo whose cache and config hold the bytes: the workspace itself, or for `--at` the
    user's real repository (a temporary checkout has no cache, and no config.local)."""

    def __init__(self, root: Path, data_repo: Path | None = None, warn=lambda m: None, state_dir: Path | None = None,
                 at_revision: str | None = None):
        self.root, self.data_repo, self.warn = Path(root), Path(data_repo or root), warn
        self.at_revision = at_revision  # --at: a missing file is one git does not hold at that commit
        self.state_file = Path(state_dir or self.root / STATE_DIR) / "dvc-md5.json"
        self._pointers: dict[str, list[DvcPin]] = {}
        self._objects = None
        self._warned: set[str] = set()
        self._md5s = None
        self.fetched: list[tuple[str, str]] = []  # (path, where its bytes came from)
        self.enabled = (self.root / DVC_DIR).is_dir()  # pointers mean something only in a DVC repo: else no stats

    def _read(self, relpath: str, reader) -> list[DvcPin]:
        if relpath not in self._pointers:
            self._pointers[relpath] = reader(self.root, relpath) if os.path.isfile(self.root / relpath) else []
        return self._pointers[relpath]

    def pin_for(self, path: str) -> DvcPin | None:
        """The pin naming path or a directory above it: `X.dvc` beside X first, then dvc.lock files above."""
        if not self.enabled:
            return None
        parts = path.split("/")
        for n in range(len(parts), 0, -1):
            here = "/".join(parts[:n])
            for pin in self._read(here + POINTER_SUFFIX, read_pointer):
                if pin.path == here:
                    return pin
        for n in range(len(parts) - 1, -1, -1):
            lock = "/".join(parts[:n] + [LOCK_FILE])
            for pin in self._read(lock, read_lock_outs):
                if pin.path == path or path.startswith(pin.path + "/"):
                    return pin
        return None

    def provide(self, path: str) -> bool:
        """Fetch the data a pointer names for the missing path; False when no pointer names it."""
        pin = self.pin_for(path)
        if pin is None:
            return False
        if not os.path.lexists(self.root / pin.path):
            where = self.objects().place(self.root, pin.path, pin.md5, pin.is_dir, pin.dos2unix,
                                         f"{pin.path} (pinned by {pin.source})")
            self.fetched.append((pin.path, where))
        return os.path.lexists(self.root / path)

    def missing(self, path: str):
        """(message, hint) for a dep nothing provides, when there is more to say than 'not a file'; else None."""
        if self.at_revision is None:
            return None
        return (f"--at {self.at_revision[:10]} sees only committed files, and {path!r} is not in git at that commit "
                f"(git-ignored or untracked), no .dvc file or dvc.lock there pins it, and no build of that commit "
                f"in this cache recorded it",
                f"pin it in the commits you will build: `dvc add {path}`, commit {path}.dvc (and `dvc push` to a DVC "
                f"remote), or make it an external data dep (its URL in deps) pinned in buildml.lock by `buildml lock`; "
                f"or build that commit once in a work tree that has the file (a build records what it used outside git)")

    def objects(self) -> DvcObjects:
        if self._objects is None:
            config = read_config(self.data_repo)
            caches, remote = [config.cache_dir], config.remote
            if self.data_repo != self.root:  # --at: the revision's own settings, where the real repo has none
                own = read_config(self.root)
                if own.cache_dir.is_dir() and own.cache_dir not in caches:
                    caches.append(own.cache_dir)
                remote = remote or own.remote
            self._objects = DvcObjects(caches, remote)
        return self._objects

    def check(self, path: str) -> None:
        """Warn once when a present file (not a directory) differs from the pointer that names it exactly."""
        if path in self._warned:
            return
        pin = self.pin_for(path)
        if pin is None or pin.is_dir or pin.path != path:
            return
        full = self.root / path
        try:
            st = os.stat(full)
        except OSError:
            return
        if pin.size is not None and st.st_size != pin.size:
            modified = True
        else:
            modified = self._md5(path, st, pin.dos2unix) != pin.md5
        if modified:
            self._warned.add(path)
            self.warn(f"{path} differs from {pin.source} (DVC would call it modified): building with the file as it "
                      f"is; `dvc add {path}` records it, `dvc checkout {path}` restores the pinned data")

    def _md5(self, path: str, st, dos2unix: bool) -> str:
        """md5 of a file, remembered by (size, mtime, inode) in .buildml/dvc-md5.json."""
        if self._md5s is None:
            try:
                self._md5s = json.loads(self.state_file.read_text())
            except (OSError, ValueError):
                self._md5s = None
            if not isinstance(self._md5s, dict):  # missing or not ours: only a cache, start again
                self._md5s = {}
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino, dos2unix]
        known = self._md5s.get(path)
        if isinstance(known, list) and known[:-1] == stamp and is_md5(known[-1]):
            return known[-1]
        md5 = md5_file(self.root / path, dos2unix)
        self._md5s[path] = stamp + [md5]
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._md5s))
            os.replace(tmp, self.state_file)
        except OSError:
            pass  # only a cache
        return md5
