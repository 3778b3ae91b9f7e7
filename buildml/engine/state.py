"""The workspace's own state in `.buildml/state.db`: stat cache, last builds, materialized outputs.

One sqlite file (WAL mode) so a no-op build loads its state in one read and two buildml
processes can share it. Everything here is a cache of facts that can be recomputed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from buildml.errors import EnvironmentProblem
from buildml.trust import Untrusted, check_digest, is_digest, relpath_problem, validate_outputs

_TABLES = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INT, mtime_ns INT, ctime_ns INT, ino INT, digest TEXT);
CREATE TABLE IF NOT EXISTS builds (label TEXT PRIMARY KEY, key TEXT, record TEXT);
CREATE TABLE IF NOT EXISTS outputs (path TEXT PRIMARY KEY, digest TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""


class State:
    """Reads everything once on first use; writes changes back in one transaction on flush()."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._db = None
        self._files: dict | None = None
        self._builds: dict | None = None
        self._outputs: dict | None = None
        self._dirty_files: dict = {}
        self._dirty_builds: dict = {}
        self._dirty_outputs: dict = {}
        self._meta_dirty: dict = {}

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        """Connect, switching the file to WAL once. Two processes creating the file at the same moment
        can get SQLITE_BUSY from the journal-mode switch without the busy timeout applying: retry."""
        last = None
        for attempt in range(50):
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.directory / "state.db", timeout=60, check_same_thread=False)
                if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_TABLES)
                return db
            except sqlite3.OperationalError as exc:
                last = exc
                time.sleep(0.05 * (attempt + 1))
            except (OSError, sqlite3.Error) as exc:
                last = exc
                break
        raise EnvironmentProblem(f"cannot open workspace state in {self.directory}: {last}",
                                 hint="check permissions and free disk space")

    # -- stat cache ---------------------------------------------------------
    def file_entry(self, path: str):
        """(size, mtime_ns, ctime_ns, ino, digest) last recorded for path, or None."""
        if self._files is None:
            with self._lock:
                if self._files is None:
                    rows = self._conn().execute("SELECT path, size, mtime_ns, ctime_ns, ino, digest FROM files")
                    self._files = {r[0]: r[1:] for r in rows if is_digest(r[5])}  # else: hashed again
        return self._files.get(path)

    def record_file(self, path: str, entry: tuple) -> None:
        self.file_entry(path)
        with self._lock:
            self._files[path] = entry
            self._dirty_files[path] = entry

    # -- last builds ---------------------------------------------------------
    def _load_builds(self) -> dict:
        if self._builds is None:
            with self._lock:
                if self._builds is None:
                    rows = self._conn().execute("SELECT label, key, record FROM builds")
                    self._builds = {r[0]: (r[1], r[2]) for r in rows}
        return self._builds

    def last_build(self, label: str) -> dict | None:
        """The record of the last successful build of label (see rebuilder), or None."""
        row = self._load_builds().get(label)
        if row is None:
            return None
        record = row[1]
        if isinstance(record, str):
            record = _checked_record(record)
            self._builds[label] = (row[0], record)
        return record

    def record_build(self, label: str, key: str, record: dict) -> None:
        self._load_builds()
        with self._lock:
            self._builds[label] = (key, record)
            self._dirty_builds[label] = (key, record)

    def built_labels(self) -> list:
        """The labels with a recorded last build."""
        return sorted(self._load_builds())

    def forget_build(self, label: str) -> None:
        self._load_builds()
        with self._lock:
            self._builds.pop(label, None)
            self._dirty_builds[label] = None

    # -- logs of the last run of each target --------------------------------------
    def record_log(self, label: str, digest: str | None) -> None:
        if digest:
            self._meta_dirty[f"log:{label}"] = digest

    def last_log(self, label: str) -> str | None:
        """The log digest of label's last run, or None; Untrusted when the recorded value is not a digest."""
        row = self._conn().execute("SELECT value FROM meta WHERE name = ?", (f"log:{label}",)).fetchone()
        digest = self._meta_dirty.get(f"log:{label}") or (row[0] if row else None)
        if digest is not None and not is_digest(digest):
            raise Untrusted(f"{self.directory / 'state.db'}: the log recorded for {label} has the digest "
                            f"{digest!r:.80}, which is not a digest (32 hex characters)",
                            hint=f"build {label} again to record its log")
        return digest

    # -- materialized outputs ------------------------------------------------
    def output_digest(self, path: str) -> str | None:
        """Digest of the file buildml last wrote at workspace path, or None if it never did."""
        if self._outputs is None:
            with self._lock:
                if self._outputs is None:
                    rows = self._conn().execute("SELECT path, digest FROM outputs")
                    self._outputs = {p: d for p, d in rows if is_digest(d) and not relpath_problem(p)}  # else: not ours
        return self._outputs.get(path)

    def record_output(self, path: str, digest: str | None) -> None:
        self.output_digest(path)
        with self._lock:
            if digest is None:
                self._outputs.pop(path, None)
            else:
                self._outputs[path] = digest
            self._dirty_outputs[path] = digest

    def all_outputs(self) -> dict:
        self.output_digest("")
        return dict(self._outputs)

    # -- persistence -----------------------------------------------------------
    def flush(self) -> None:
        """Write pending changes in one transaction."""
        with self._lock:
            files, builds, outputs = self._dirty_files, self._dirty_builds, self._dirty_outputs
            meta, self._meta_dirty = self._meta_dirty, {}
            self._dirty_files, self._dirty_builds, self._dirty_outputs = {}, {}, {}
        if not (files or builds or outputs or meta):
            return
        db = self._conn()
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?)",
                               [(p, *e) for p, e in files.items()])
                db.executemany("INSERT OR REPLACE INTO builds VALUES (?,?,?)",
                               [(l, k, json.dumps(r)) for l, (k, r) in
                                ((l, v) for l, v in builds.items() if v is not None)])
                db.executemany("DELETE FROM builds WHERE label = ?", [(l,) for l, v in builds.items() if v is None])
                db.executemany("INSERT OR REPLACE INTO outputs VALUES (?,?)",
                               [(p, d) for p, d in outputs.items() if d is not None])
                db.executemany("DELETE FROM outputs WHERE path = ?", [(p,) for p, d in outputs.items() if d is None])
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(meta.items()))
        except sqlite3.Error as exc:
            raise EnvironmentProblem(f"cannot write workspace state: {exc}", hint="check free disk space") from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _checked_record(text: str) -> dict | None:
    """A last-build record from the db, or None (never built) when it is not one buildml wrote."""
    try:
        record = json.loads(text)
        if not isinstance(record, dict):
            return None
        check_digest(record.get("key"), "key")
        validate_outputs(record.get("outputs"))
        manifest = record.get("manifest", {})
        if not isinstance(manifest, dict) or manifest.get("log") is not None and not is_digest(manifest["log"]):
            return None
    except (ValueError, RecursionError, Untrusted):
        return None
    return record
