"""Fetch or rebuild: is a remote hit worth its download, or is running the action here cheaper?

For a result whose outputs only the remote cache holds, the fetch time is estimated from the bytes to download and
the bandwidth measured on earlier downloads from that remote (store/bandwidth.py), the rebuild time from the cost
the result's manifest recorded (its wall time, and on which executor). `cache.prefer` (a target's, else the
workspace's) decides: `fetch` always fetches; `rebuild` runs here unless the action needs what this machine lacks
(a GPU); `auto` (the default) fetches unless rebuilding is clearly cheaper (the fetch estimated to take more than
CLEARLY times the recorded run and a second longer), and always fetches what cannot run here, or when there is no
measured bandwidth or recorded cost to compare. Each decision carries its figures, shown by `-v`, events, `status`
and `explain`. Nothing here changes an action key: a rebuilt result is a result of the same key.
"""

from __future__ import annotations

from buildml.errors import BuildmlError
from buildml.trust import valid_cost

CLEARLY = 4.0
MARGIN_S = 1.0


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 100_000 else f"{nbytes} bytes"


class FetchOrRebuild:
    """judge(action, manifest) -> (fetch, why) for remote hits; figures for explain."""

    def __init__(self, store, prefer: str = "auto", cannot_run=lambda spec: "", bandwidth=None):
        self.store, self.prefer, self.cannot_run = store, prefer, cannot_run
        self.bandwidth = bandwidth  # () -> bytes/s of the remote, or None when never measured
        self._memo: dict = {}

    def judge(self, action, manifest: dict) -> tuple[bool, str]:
        """(True, why) to fetch the outputs of manifest, (False, why) to run the action here; why '' when local."""
        key = action.key
        if key not in self._memo:
            self._memo[key] = self._judge(action, manifest)
        return self._memo[key]

    def _lacking(self, spec) -> str:
        """Why spec cannot run on its executor here ('' when it can); an executor that cannot be asked lacks all."""
        try:
            return self.cannot_run(spec)
        except BuildmlError as exc:
            return f"its executor cannot be reached: {exc.message.splitlines()[0]}"

    def _judge(self, action, manifest: dict) -> tuple[bool, str]:
        local = self.store.local
        shared = set(action.spec.local_only)
        remote_only = [m for p, m in manifest.get("outputs", {}).items()
                       if p not in shared and not local.has_blob(m["digest"])]
        if not remote_only or getattr(self.store, "remote", None) is None:
            return True, ""
        nbytes = sum(m.get("size") or 0 for m in remote_only)
        prefer = action.spec.prefer or self.prefer
        if prefer == "fetch":
            return True, f"fetched {_mb(nbytes)} from the remote cache (cache.prefer: fetch)"
        if prefer == "rebuild":
            lacking = self._lacking(action.spec)
            if lacking:
                return True, f"fetched {_mb(nbytes)} from the remote cache: it cannot run here ({lacking})"
            return False, f"runs here instead of fetching {_mb(nbytes)} (cache.prefer: rebuild)"
        cost = valid_cost(manifest.get("cost"))
        wall, where = cost["wall_s"], cost["executor"] or "an unknown executor"
        speed = self.bandwidth() if self.bandwidth is not None else None
        if wall is None or not speed:
            what = "no recorded cost" if wall is None else "no measured bandwidth"
            return True, f"fetched {_mb(nbytes)} from the remote cache ({what} to weigh it against)"
        fetch_s = nbytes / speed
        figures = (f"fetching {_mb(nbytes)} at {speed / 1e6:.2f} MB/s takes about {fetch_s:.1f}s, its recorded run "
                   f"{wall:.1f}s on {where}")
        if fetch_s > CLEARLY * wall and fetch_s - wall > MARGIN_S:
            lacking = self._lacking(action.spec)  # asked only now: a remote executor's capacity costs a connection
            if lacking:
                return True, f"fetched {_mb(nbytes)} from the remote cache: it cannot run here ({lacking})"
            return False, f"runs here instead of fetching: {figures} (cache.prefer: auto)"
        return True, f"fetched from the remote cache: {figures}"


__all__ = ["FetchOrRebuild"]
