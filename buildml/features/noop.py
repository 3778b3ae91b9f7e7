"""The no-op certificate: stat signatures proving nothing a build depends on changed since it found all up to date.

After a `buildml build` in which every target was already up to date, the stat signature
(size, mtime_ns, ctime_ns, inode) of every path that build depended on is written to
.buildml/noop/<fingerprint>.json, named by a fingerprint of everything else that decided it (the
command line, environment, buildml version). The next build with the same fingerprint stats those
paths; when every one matches it prints what a no-op prints and exits without loading anything.
Why that is safe: buildml/CACHING.md, "The no-op certificate".
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from buildml.hashing import RACY_NS

ROOT_FILE, STATE_DIR = "buildml.yaml", ".buildml"  # workspace.py's (not imported: it pulls in YAML)
CERT_DIR = "noop"  # .buildml/noop/<fingerprint>.json, one per pattern/option set
KEEP = 8  # certificates kept per workspace (the most recently written)
FORMAT = "buildml-noop/1"
SWITCH = "BUILDML_NOOP_CERTIFICATE"  # set to 0 to neither use nor write certificates
ENV_NAMES = ("HOME", "XDG_CACHE_HOME", "DOCKER_HOST", "STORAGE_EMULATOR_HOST")  # and every BUILDML_* variable
DISPLAY_ONLY = ("jobs", "keep_going", "as_json", "verbose", "quiet", "color")  # cannot change what a no-op does
NEVER = ("at", "sweeps", "sort", "detach")  # command-line options that are never certified when set
RACY = (f"a file it read changed within {RACY_NS // 10**9} s of the build (or since): stats cannot vouch for it yet; "
        "the next no-op build writes it")


def signature(path: str) -> list | None:
    """[size, mtime_ns, ctime_ns, inode] of path (links followed), or None when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def is_racy(sig, since_ns: int) -> bool:
    """True when a path may have changed within one timestamp tick of since_ns (or after it)."""
    return sig is not None and max(sig[1], sig[2]) >= since_ns - RACY_NS


def fingerprint(cli_params: dict, cwd: str) -> str:
    """Digest of what decides a build besides the files: the command line, environment, buildml itself."""
    import sys

    from buildml import __version__

    args = {k: v for k, v in cli_params.items() if k not in DISPLAY_ONLY}
    env = {k: v for k, v in os.environ.items() if (k.startswith("BUILDML_") or k in ENV_NAMES) and k != SWITCH}
    body = [FORMAT, __version__, sys.executable, cwd, args, env]
    text = json.dumps(body, sort_keys=True, default=repr).encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()  # cryptographic: env values may be secrets


def find_root(start: str) -> str | None:
    """The workspace root the loader would find from start (nearest buildml.yaml or .dvc/ at or above), or None."""
    path = os.path.abspath(start)
    while True:
        if os.path.isfile(os.path.join(path, ROOT_FILE)) or os.path.isdir(os.path.join(path, ".dvc")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


class NoopCertificate:
    """One `buildml build` invocation's side of the certificate: replay() before loading, certify() after."""

    def __init__(self, cli_params: dict):
        self.started_ns = time.time_ns()  # before anything of the workspace is read
        self._t0 = time.monotonic()
        self.targets = tuple(cli_params.get("targets") or ())
        self.cwd = os.getcwd()
        self.enabled = os.environ.get(SWITCH, "1") != "0" and not any(cli_params.get(k) for k in NEVER)
        self.fingerprint = fingerprint(cli_params, self.cwd) if self.enabled else ""
        self.warned = False

    def watch(self, emit):
        """emit, noting whether the build warned (a build that warned is not certified)."""
        from buildml.events import Warning

        def watched(event):
            if isinstance(event, Warning):
                self.warned = True
            emit(event)

        return watched

    # -- using a certificate ------------------------------------------------------------------
    def replay(self, make_display) -> int | None:
        """When a valid certificate vouches for this build: show a no-op's events and return 0; else None."""
        body = self._valid_body() if self.enabled else None
        if body is None:
            return None
        from buildml.events import BuildFinished, BuildStarted, Outcome, Result, TargetFinished
        from buildml.labels import Label

        results, shown = [], []
        for package, name, key, outputs, show in body["targets"]:
            label = Label(package, name)
            results.append(Result(label, Outcome.UP_TO_DATE, key, dict.fromkeys(outputs, {})))
            if show:
                shown.append(label)
        display = make_display(shown)
        try:
            display(BuildStarted(tuple(r.label for r in results)))
            for result in results:
                display(TargetFinished(result))
            finished = BuildFinished(tuple(results), time.monotonic() - self._t0)
            display(finished)
        finally:
            getattr(display, "close", lambda: None)()
        _record_stats(body.get("cache"), finished)
        return 0

    def _valid_body(self) -> dict | None:
        root = find_root(self.cwd)
        if root is None:
            return None
        body = read_certificate(cert_path(os.path.join(root, STATE_DIR), self.fingerprint))
        if body is None or body.get("fingerprint") != self.fingerprint or body.get("root") != root:
            return None
        if not unchanged(root, body["state"], body["state_sigs"], None):
            return None
        return body if unchanged(root, body["paths"], body["sigs"], body["started_ns"]) else None

    # -- writing one --------------------------------------------------------------------------
    def certify(self, session, finished) -> str | None:
        """Write the certificate when this build found everything up to date and stats can vouch for it: None
        when written, else why not (`build -v` shows it)."""
        try:
            return self._certifiable(session, finished) or self._write(session, finished)
        except OSError as exc:  # the certificate is only ever a shortcut: never fail a build over it
            return f"cannot write it: {exc.strerror or exc}"

    def _write(self, session, finished) -> str | None:
        from buildml.features.noop_paths import STATE_FILES, build_paths

        hasher = getattr(session, "hasher", None)
        if any(is_racy(sig, self.started_ns) for sig in list(getattr(hasher, "seen", {}).values())):
            return RACY  # cheap early answer: a file read this build is still in the racy window
        labels = [r.label for r in finished.results]
        out_root = session.options.out_root or str(session.ws.root)
        paths = sorted(build_paths(session.ws, session.graph, labels, finished.results, out_root)
                       | set(getattr(session, "commit_files", ())))  # HEAD moves: record that commit's sources
        sigs = self._settled(paths)
        if sigs is None or not _as_hashed(dict(zip(paths, sigs)), hasher):
            return RACY
        state = [str(session.ws.state_dir / name) for name in STATE_FILES]  # written by this build: no racy rule
        state_sigs = [signature(p) for p in state]
        if state_sigs[0] is None:
            return "the workspace state (.buildml/state.db) is missing"
        shown = set(session.select(self.targets))
        cache = session.store.local
        body = {"fingerprint": self.fingerprint, "root": str(session.ws.root), "started_ns": self.started_ns,
                "cache": str(cache.root), "paths": paths, "sigs": sigs,
                "state": state, "state_sigs": state_sigs,
                "targets": [[r.label.package, r.label.name, r.key, sorted(r.outputs), r.label in shown]
                            for r in finished.results]}
        written = write_certificate(cert_path(session.ws.state_dir, self.fingerprint), body)
        return None if written else "cannot write it under .buildml/noop/"

    def _certifiable(self, session, finished) -> str | None:
        """None for a build of this command line that found every target up to date, of kinds stats can vouch
        for; else why not."""
        from buildml.events import Outcome
        from buildml.features.noop_paths import uncertifiable

        if not self.enabled:
            return "turned off (--at, a sweep, --detach or BUILDML_NOOP_CERTIFICATE=0)"
        if self.warned or finished.interrupted or not finished.results:
            return "the build warned" if self.warned else "the build was interrupted or built nothing"
        if getattr(session.options, "state_dir", None) or getattr(session.options, "at_revision", None):
            return "a build of a variant or of another revision"
        busy = [r for r in finished.results if r.status != Outcome.UP_TO_DATE]
        if busy:
            return f"{busy[0].label} was {busy[0].status}: only a build that finds everything up to date is certified"
        from buildml.load.executor_settings import executor_settings

        settings = executor_settings(session.ws.settings)
        local = tuple(n for n, c in settings.executors.items() if c.type == "local")
        why = uncertifiable(session.graph, [r.label for r in finished.results], local)
        if why:
            return why
        return None if str(session.ws.root) == find_root(self.cwd) else "run from inside a nested workspace"

    def _settled(self, paths) -> list | None:
        """The signatures of paths, or None when one is missing or changed since shortly before the build began."""
        sigs = []
        for path in paths:
            sig = signature(path)
            if sig is None or is_racy(sig, self.started_ns):
                return None
            sigs.append(sig)
        return sigs


def _as_hashed(now: dict, hasher) -> bool:
    """True when every file the hasher digested this build still has the signature it was digested at."""
    seen = getattr(hasher, "seen", None) or {}
    return all((now[p] if p in now else signature(p)) == list(sig) for p, sig in list(seen.items()))


def unchanged(root: str, paths, sigs, started_ns: int | None) -> bool:
    """True when every path still has its recorded signature (and, given started_ns, none was recorded racy)."""
    stat = os.stat
    for rel, sig in zip(paths, sigs):
        try:
            st = stat(os.path.join(root, rel))
        except OSError:
            if sig is None:
                continue
            return False
        if sig is None or [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] != sig:
            return False
        if started_ns is not None and is_racy(sig, started_ns):
            return False
    return True


def read_certificate(path) -> dict | None:
    """The certificate's body, or None when missing, half-written, corrupt or of another format."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        header, _, body = data.partition(b"\n")
        meta = json.loads(header)
        if meta.get("format") != FORMAT or meta.get("digest") != hashlib.blake2b(body, digest_size=16).hexdigest():
            return None
        parsed = json.loads(body)
        if len(parsed["paths"]) != len(parsed["sigs"]) or len(parsed["state"]) != len(parsed["state_sigs"]):
            return None
        return parsed
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def cert_path(state_dir, fingerprint: str) -> str:
    return os.path.join(state_dir, CERT_DIR, f"{fingerprint}.json")


def write_certificate(path, body: dict) -> bool:
    """Atomically replace the certificate: a header line with the body's digest, then the body (temp + rename)."""
    root = body["root"] + os.sep
    body = {**body, "paths": [p[len(root):] if p.startswith(root) else p for p in body["paths"]]}
    data = json.dumps(body, separators=(",", ":")).encode()
    header = json.dumps({"format": FORMAT, "digest": hashlib.blake2b(data, digest_size=16).hexdigest()}).encode()
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(header + b"\n" + data)
        os.replace(tmp, path)
    except OSError:
        _unlink(tmp)
        return False
    _prune(os.path.dirname(path))
    return True


def _prune(directory: str) -> None:
    """Keep the KEEP most recent certificates, and drop temp files a writer left behind (it died)."""
    entries = []
    try:
        for entry in os.scandir(directory):
            entries.append((entry.stat().st_mtime_ns, entry.name, entry.path))
    except OSError:  # another process pruned or renamed meanwhile: leave it to the next writer
        return
    entries.sort(reverse=True)
    for _mtime, _name, path in [e for e in entries if e[1].endswith(".json")][KEEP:]:
        _unlink(path)
    stale = time.time_ns() - 600 * 10**9
    for mtime, name, path in entries:
        if name.endswith(".tmp") and mtime < stale:
            _unlink(path)


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _record_stats(cache_dir, finished) -> None:
    """What a normal build does at its end: one `cache stats` line, and its entries marked as just used (gc)."""
    if not cache_dir or not os.path.isdir(cache_dir):
        return
    from buildml.store.admin import record_build
    from buildml.store.local import LocalStore

    record_build(LocalStore(cache_dir), finished)  # a real store: record_build uses its .local
