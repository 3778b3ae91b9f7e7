"""An index of the result manifests in the local action cache, in `.buildml/manifest-index.db`.

`buildml metrics --history` needs every manifest of one label, for lineage the manifests
that produced given output digests, and `buildml cache stats` the sums of their recorded costs. Opening and parsing 10,000 manifests takes ~0.35 s warm and
~1 s cold here (a JSON-lines index still spent 0.5 s parsing); this sqlite file answers both
questions by index lookups, and a refresh opens only the manifests written since the last one
(listing the action cache's names is cheap). Entries gone from the cache (gc) are dropped. It is
a cache of facts in the store: it can be deleted at any time.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from buildml.trust import valid_cost

INDEX_FILE = "manifest-index.db"
VERSION = 2  # PRAGMA user_version; an index of another version is rebuilt (2: the cost columns)
_TABLES = """
CREATE TABLE IF NOT EXISTS manifests (key TEXT PRIMARY KEY, label TEXT, summary TEXT,
                                      wall_s REAL, cpu_s REAL, gpu_s REAL, output_bytes INTEGER);
CREATE INDEX IF NOT EXISTS manifests_by_label ON manifests (label);
CREATE TABLE IF NOT EXISTS produced (digest TEXT, key TEXT, PRIMARY KEY (digest, key));
CREATE INDEX IF NOT EXISTS produced_by_key ON produced (key);
"""


def summarize(manifest: dict) -> dict:
    """What history, lineage and the cost totals need of one manifest (no logs, no command, no env)."""
    p = manifest.get("provenance") or {}
    return {
        "key": manifest.get("key"), "label": manifest.get("label"), "kind": manifest.get("kind"),
        "exit_code": manifest.get("exit_code"), "started": p.get("started"), "duration": p.get("duration"),
        "commit": p.get("git_commit"), "dirty": bool(p.get("git_dirty")), "executor": p.get("executor"),
        "params": p.get("params") or {}, "param_overrides": p.get("param_overrides") or [],
        "metrics": manifest.get("metrics") or {}, "inputs": p.get("inputs") or {},
        "outputs": sorted({m["digest"] for m in (manifest.get("outputs") or {}).values()
                           if isinstance(m, dict) and "digest" in m}),
        "cost": valid_cost(manifest["cost"]) if "cost" in manifest else None,  # None: recorded before costs were
    }


class ManifestIndex:
    """Summaries of the local store's manifests by label and by the digests they produced."""

    def __init__(self, local_store, state_dir):
        self.store = local_store
        path = Path(state_dir) / INDEX_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def _migrate(self) -> None:
        """Create the tables; an index of another version (older rows lack the cost columns) is emptied first:
        the next refresh reads the manifests again."""
        if self.db.execute("PRAGMA user_version").fetchone()[0] == VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")  # one process migrates; another waits, then finds it done
        try:
            if self.db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
                self.db.execute("DROP TABLE IF EXISTS manifests")
                self.db.execute("DROP TABLE IF EXISTS produced")
                for statement in filter(str.strip, _TABLES.split(";")):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def refresh(self) -> None:
        """Index the manifests added since the last refresh; forget those removed from the cache."""
        present = set(self.store.iter_actions())
        known = {row[0] for row in self.db.execute("SELECT key FROM manifests")}
        gone = [(k,) for k in known - present]
        rows, produced = [], []
        for key in sorted(present - known):
            manifest = self.store.get_action(key)
            if manifest is None:
                continue
            summary = summarize(manifest)
            rows.append((key, summary["label"], json.dumps(summary, sort_keys=True), *_cost_columns(summary["cost"])))
            produced += [(d, key) for d in summary["outputs"]]
        with self.db:
            self.db.executemany("DELETE FROM manifests WHERE key = ?", gone)
            self.db.executemany("DELETE FROM produced WHERE key = ?", gone)
            self.db.executemany("INSERT OR REPLACE INTO manifests VALUES (?,?,?,?,?,?,?)", rows)
            self.db.executemany("INSERT OR IGNORE INTO produced VALUES (?,?)", produced)

    def of_label(self, label: str) -> list[dict]:
        return [json.loads(r[0]) for r in self.db.execute("SELECT summary FROM manifests WHERE label = ?", (label,))]

    def producers(self, digest: str) -> list[dict]:
        """The summaries of the manifests with an output of that digest."""
        return [json.loads(r[0]) for r in self.db.execute(
            "SELECT m.summary FROM produced p JOIN manifests m ON m.key = p.key WHERE p.digest = ?", (digest,))]

    def cost_totals(self) -> dict:
        """Sums over every indexed manifest: entries, those with a recorded cost, wall, CPU and GPU seconds (wall x
        declared gpus), output bytes; each sum counts only the entries where that part is known."""
        row = self.db.execute(
            "SELECT COUNT(*), COUNT(wall_s), COALESCE(SUM(wall_s), 0), COALESCE(SUM(cpu_s), 0), COUNT(cpu_s),"
            " COALESCE(SUM(gpu_s), 0), COALESCE(SUM(output_bytes), 0) FROM manifests").fetchone()
        return dict(zip(("entries", "with_cost", "wall_s", "cpu_s", "cpu_known", "gpu_s", "output_bytes"), row))

    def close(self) -> None:
        self.db.close()


def _cost_columns(cost: dict | None) -> tuple:
    """(wall_s, cpu_s, gpu_s, output_bytes) of a summary's cost; NULL where unknown (no cost: all NULL)."""
    if cost is None:
        return None, None, None, None
    gpus = cost["resources"].get("gpus") or 0
    gpu_s = None if cost["wall_s"] is None else cost["wall_s"] * gpus
    return cost["wall_s"], cost["cpu_s"], gpu_s, cost["output_bytes"]


def open_index(local_store, state_dir) -> ManifestIndex:
    """The index of local_store kept in state_dir, refreshed; an unreadable index file is rebuilt."""
    from buildml.errors import EnvironmentProblem

    for attempt in range(2):
        try:
            index = ManifestIndex(local_store, state_dir)
            index.refresh()
            return index
        except sqlite3.DatabaseError as exc:
            if attempt or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise EnvironmentProblem(f"cannot use the manifest index in {state_dir}: {exc}",
                                         hint=f"delete {Path(state_dir) / INDEX_FILE} (it is rebuilt) and retry") from None
            for suffix in ("", "-wal", "-shm"):
                (Path(state_dir) / (INDEX_FILE + suffix)).unlink(missing_ok=True)
    raise AssertionError("unreachable")
