"""Endpoint drift: does a running endpoint serve what the graph builds now, and if not, what changed since?

`buildml run` gives the server its endpoint's action key (`BUILDML_ENDPOINT_KEY`) and records the endpoints it
started in `.buildml/endpoints.json` (label -> url, health path, key, pid of the `buildml run` that owns it).
`buildml status ENDPOINT --live` asks that record (and the health route, to see the server is up); `--live URL`
asks any server, which reports its key in the health response (the `X-Buildml-Key` header, or `buildml_key` in a
JSON body). A key that differs from the endpoint's key now is drift; its reasons are found by walking the chain:
the served endpoint's manifest against its action now, and for each input that changed and that a target makes
(a model), the manifest that made the old bytes against that target's action now (a param, a file, a command).
Everything read back (the record, the response, manifests) is untrusted: keys must be well formed.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request

from buildml.errors import UserError
from buildml.trust import is_digest

RECORD_FILE = "endpoints.json"
KEY_ENV = "BUILDML_ENDPOINT_KEY"
KEY_HEADER = "X-Buildml-Key"
KEY_FIELD = "buildml_key"
MAX_DEPTH = 8  # how far up the chain of producers reasons are looked for


# -- the record of endpoints buildml started ------------------------------------------------------
def _path(session):
    return session.ws.state_dir / RECORD_FILE


def _load(session) -> dict:
    try:
        data = json.loads(_path(session).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {label: e for label, e in data.items() if _well_formed(e)}


def _well_formed(entry) -> bool:
    return (isinstance(entry, dict) and is_digest(entry.get("key")) and isinstance(entry.get("url"), str)
            and entry["url"].startswith("http://127.0.0.1:") and isinstance(entry.get("health"), str)
            and entry["health"].startswith("/") and type(entry.get("pid")) is int and entry["pid"] > 0)


def _save(session, data: dict) -> None:
    path = _path(session)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def remember(session, label, url: str, health: str, key: str) -> None:
    """Record that this process serves label's key at url."""
    data = _load(session)
    data[str(label)] = {"url": url, "health": health, "key": key, "pid": os.getpid(), "started": time.time()}
    _save(session, data)


def forget(session, label) -> None:
    """Drop this process's record of label (another process's newer one stays)."""
    data = _load(session)
    if data.get(str(label), {}).get("pid") == os.getpid():
        del data[str(label)]
        _save(session, data)


def running(session, label) -> dict | None:
    """The record of label's endpoint when the process that serves it is alive and its health route answers."""
    entry = _load(session).get(str(label))
    if entry is None or not _alive(entry["pid"]) or not is_buildml_run(entry["pid"]):
        return None
    try:
        health(entry["url"] + entry["health"])
    except UserError:
        return None
    return entry


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def is_buildml_run(pid: int) -> bool:
    """True when pid is a `buildml run` process (its command line, from /proc): the record is a file, and a
    signal goes to nothing else whatever it says."""
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return False  # not Linux, or gone: never signal what cannot be checked
    return any(os.path.basename(a) in (b"buildml", b"buildml.exe") or a == b"buildml.cli"
               for a in argv) and b"run" in argv


def stop_owner(entry: dict, timeout: float = 30.0) -> bool:
    """Ask the `buildml run` that serves entry to stop (SIGTERM: it stops its server) and wait for it; False when
    the recorded process is not a `buildml run` (then nothing is signalled)."""
    if not is_buildml_run(entry["pid"]):
        return False
    try:
        os.kill(entry["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while _alive(entry["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


# -- asking a server -------------------------------------------------------------------------------
def health(url: str, timeout: float = 5.0) -> tuple[dict, bytes]:
    """(headers, body) of a 200 from url; a UserError when the server does not answer so."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return dict(reply.headers.items()), reply.read(1 << 16)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"no healthy endpoint at {url}: {getattr(exc, 'reason', exc)}",
                        hint="start it with `buildml run TARGET`, or check the URL and the health path") from None


def served_key(url: str) -> str:
    """The key a server reports at url (its health route)."""
    headers, body = health(url)
    key = {k.lower(): v for k, v in headers.items()}.get(KEY_HEADER.lower())
    if key is None:
        try:
            data = json.loads(body)
            key = data.get(KEY_FIELD) if isinstance(data, dict) else None
        except ValueError:
            key = None
    if not is_digest(key):
        raise UserError(f"the server at {url} does not say which key it serves",
                        hint=f"answer the health route with the {KEY_HEADER} header or {{\"{KEY_FIELD}\": ...}}, "
                             f"set from ${KEY_ENV} (buildml run sets it)")
    return key


# -- drift -----------------------------------------------------------------------------------------
def drift(session, label, served: str, url: str) -> dict:
    """Whether the endpoint at url serves label's key now; if not, why (reasons along the chain of producers)."""
    finished = session.build([str(label)], dry_run=True)
    results = {r.label: r for r in finished.results}
    now = results[label].key
    info = {"target": str(label), "url": url, "serving": served, "current": now, "stale": served != now,
            "reasons": []}
    if served != now:
        info["reasons"] = _why(session, label, served, results, depth=0) if now else _pending(finished)
    return info


def _pending(finished) -> list[str]:
    """Why the targets the endpoint needs are stale (their key is unknown until they are built)."""
    from buildml.events import Outcome

    return [f"{r.label}: {reason}" for r in finished.results if r.status in (Outcome.STALE, Outcome.RESTORABLE)
            for reason in r.reasons] or ["its inputs are not built yet (build it to see what changed)"]


def _why(session, label, old_key: str, results: dict, depth: int) -> list[str]:
    """Reasons label's action now differs from the one whose key was old_key, and why upstream, recursively."""
    from buildml.engine.rebuilder import build_record, explain_difference

    manifest = session.store.get_action(old_key) if is_digest(old_key) else None
    try:
        action, _ = session.action_for(label, results)
    except Exception:  # noqa: BLE001 - its deps are not built: nothing more precise can be said
        return [f"{label}: its inputs are not built yet (build it to see what changed)"]
    if manifest is None:
        return [f"{label}: the served build ({old_key[:12]}) is not in the cache, so what changed cannot be named"]
    new = build_record(action, {})
    p = manifest.get("provenance") or {}
    old = {**new, "key": old_key, "argv": p.get("command", new["argv"]), "env": p.get("env", new["env"]),
           "inputs": p.get("inputs", {}), "params": p.get("params", {}), "image": p.get("image_key")}
    reasons = [f"{label}: {r}" for r in explain_difference(old, new)]
    if depth >= MAX_DEPTH:
        return reasons
    owners = session.graph.out_owner
    for path, digest in sorted((old["inputs"] or {}).items()):
        if not isinstance(digest, str) or new["inputs"].get(path) in (None, digest):
            continue
        producer = _producer(session, owners, path)
        made_by = _made(session, producer, digest) if producer is not None else None
        if made_by is not None:
            reasons += _why(session, producer, made_by, results, depth + 1)
    return reasons


def _producer(session, owners: dict, path: str):
    while path:
        if path in owners:
            return owners[path]
        path = os.path.dirname(path)
    return None


def _made(session, label, digest: str) -> str | None:
    """The key of label's newest cached result that produced the bytes digest."""
    from buildml.store.index import open_index

    index = open_index(session.store.local, session.ws.state_dir)
    try:
        found = [s for s in index.producers(digest) if s.get("label") == str(label)]
    finally:
        index.close()
    found.sort(key=lambda s: s.get("started") or 0)
    return found[-1]["key"] if found and is_digest(found[-1]["key"]) else None


def render(info: dict) -> list[str]:
    """drift() as lines of text."""
    if not info["stale"]:
        return [f"{info['target']} at {info['url']}: serves what the graph builds now (key {info['current'][:12]})"]
    current = info["current"][:12] if info["current"] else "unknown until its deps are built"
    lines = [f"{info['target']} at {info['url']}: stale: serves key {info['serving'][:12]}, the graph builds "
             f"{current}"]
    return lines + [f"    {reason}" for reason in info["reasons"]]


__all__ = ["drift", "forget", "remember", "render", "running", "served_key", "stop_owner"]
