"""The no-op certificate: stat signatures proving nothing a build depends on changed since it found all up to date.

After a `buildml build` after which every target is up to date (found so, executed or fetched), the stat signature
(size, mtime_ns, ctime_ns, inode) of every path that build depended on is written to
.buildml/noop/<fingerprint>.json, named by a fingerprint of everything else that decided it (the
command line, environment, buildml version). The next build with the same fingerprint stats those
paths; when every one matches it prints what a no-op prints and exits without loading anything. A path that
changed within the racy window is vouched for by its content instead (a digest the replay re-reads).
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
FORMAT = "buildml-noop/2"
SWITCH = "BUILDML_NOOP_CERTIFICATE"  # set to 0 to neither use nor write certificates
ENV_NAMES = ("HOME", "XDG_CACHE_HOME", "DOCKER_HOST", "STORAGE_EMULATOR_HOST")  # and every BUILDML_* variable
DISPLAY_ONLY = ("jobs", "keep_going", "as_json", "verbose", "quiet", "color")  # cannot change what a no-op does
NEVER = ("at", "sweeps", "sort", "detach")  # command-line options that are never certified when set
RACY = ("{path} changed within " + str(RACY_NS // 10**9) + " s of the build (or since), and its content cannot vouch "
        "for it: {why}")


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
        self._stale = None  # (root, body) of a certificate whose paths changed
        self.vouched_for = None  # (targets vouched for, targets) when vouched() took some as they were
        self._own_paths: dict = {}  # label -> the paths its result depends on, of each target vouched() took

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
        if unchanged(root, body["paths"], body["sigs"], body["started_ns"], body["racy"]):
            return body
        self._stale = (root, body)  # what changed may leave most targets as they were: vouched() says which
        return None

    def vouched(self) -> dict | None:
        """After replay() found the certificate's paths changed: label -> Result of each target whose result it
        still vouches for, taken as up to date without being examined (Session.build(known=...)); None when it
        vouches for none. A target is vouched for when no path its own result depends on changed (its sources,
        params files, outputs and their directories) and neither did any of its deps'; any change to a path every
        target depends on (buildml.yaml, a BUILD file, the loader's walk, a module) vouches for nothing."""
        if self._stale is None:
            return None
        root, body = self._stale
        more = self._more()
        if more is None:
            return None
        changed = changed_paths(root, body, dict(more["listings"]))
        if not changed or changed & set(more["common"]):
            return None
        owners: dict = {}
        for t, own in enumerate(more["own"]):
            for i in own:
                owners.setdefault(i, []).append(t)
        dirty = {t for i in changed for t in owners.get(i, ())}
        children: dict = {}
        for t, deps in enumerate(more["deps"]):
            for d in deps:
                children.setdefault(d, []).append(t)
        todo = list(dirty)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in dirty:
                    dirty.add(child)
                    todo.append(child)
        from buildml.events import Outcome, Result
        from buildml.labels import Label

        known = {}
        paths = [os.path.join(root, p) for p in body["paths"]]
        for t, (package, name, key, _outputs, _show) in enumerate(body["targets"]):
            if t not in dirty:
                label = Label(package, name)
                outputs, manifest = more["results"][t]
                known[label] = Result(label, Outcome.UP_TO_DATE, key, outputs, manifest=manifest)
                self._own_paths[label] = {paths[i] for i in more["own"][t]}
        if not known:
            return None
        self.vouched_for = (len(known), len(body["targets"]))
        return known

    # -- writing one --------------------------------------------------------------------------
    def certify(self, session, finished) -> str | None:
        """Write the certificate when this build found everything up to date and stats can vouch for it: None
        when written, else why not (`build -v` shows it)."""
        try:
            return self._certifiable(session, finished) or self._write(session, finished)
        except OSError as exc:  # the certificate is only ever a shortcut: never fail a build over it
            return f"cannot write it: {exc.strerror or exc}"

    def _write(self, session, finished) -> str | None:
        from buildml.events import Outcome
        from buildml.features.noop_paths import STATE_FILES, global_paths, target_paths

        hasher = getattr(session, "hasher", None)
        out_root = session.options.out_root or str(session.ws.root)
        common = global_paths(session.ws) | set(getattr(session, "commit_files", ()))  # HEAD moves: its sources
        root = str(session.ws.root)  # params files too: loading reads them (`${}`, dvc.yaml's foreach and vars)
        common.update(os.path.join(root, f) for spec in session.graph.specs.values() for f, _keys in spec.params)
        reuse = self._own_paths  # a target taken as it was depends on the paths it did
        own = [reuse[r.label] if r.label in reuse else target_paths(session.ws, session.graph, r.label, r, out_root)
               for r in finished.results]
        paths = sorted(common.union(*own))
        used = dict(getattr(hasher, "digested", {}))  # what this build used: sources it hashed, outputs it made
        written = set()  # outputs this build wrote: what it hashed there before is gone, their digests vouch for them
        for result in finished.results:
            outs = [(os.path.join(out_root, p), o.get("digest")) for p, o in result.outputs.items()]
            used.update(outs)
            if result.status != Outcome.UP_TO_DATE:
                written.update(p for p, _ in outs)
        settled = self._settled(paths, used, str(session.ws.root))
        if isinstance(settled, str):
            return settled
        if not _as_hashed(dict(zip(paths, settled[0])), hasher, written):
            return RACY.format(path="a file it hashed", why="its stats changed since")
        sigs, racy = settled
        state = [str(session.ws.state_dir / name) for name in STATE_FILES]  # written by this build: no racy rule
        state_sigs = [signature(p) for p in state]
        if state_sigs[0] is None:
            return "the workspace state (.buildml/state.db) is missing"
        shown = set(session.select(self.targets))
        cache = session.store.local
        body = {"fingerprint": self.fingerprint, "root": str(session.ws.root), "started_ns": self.started_ns,
                "cache": str(cache.root), "paths": paths, "sigs": sigs, "racy": racy,
                "state": state, "state_sigs": state_sigs,
                "targets": [[r.label.package, r.label.name, r.key, sorted(r.outputs), r.label in shown]
                            for r in finished.results]}
        written = write_certificate(cert_path(session.ws.state_dir, self.fingerprint), body,
                                    _per_target(session.graph, finished.results, paths, common, own))
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
        busy = [r for r in finished.results if r.status not in (Outcome.UP_TO_DATE, Outcome.EXECUTED, Outcome.CACHED)]
        if busy:
            return f"{busy[0].label} was {busy[0].status}: only a build after which everything is up to date is certified"
        from buildml.load.executor_settings import executor_settings

        settings = executor_settings(session.ws.settings)
        local = tuple(n for n, c in settings.executors.items() if c.type == "local")
        why = uncertifiable(session.graph, [r.label for r in finished.results], local)
        if why:
            return why
        return None if str(session.ws.root) == find_root(self.cwd) else "run from inside a nested workspace"

    def _more(self) -> dict | None:
        """The per-target part of the stale certificate, parsed once."""
        if "_parsed" not in self.__dict__:
            self._parsed = read_more(self._stale[1])
        return self._parsed

    def _listings_before(self, root: str) -> dict:
        """Absolute directory path -> listing digest, of the certificate this build found stale (if any)."""
        if self._stale is None:
            return {}
        old_root, body = self._stale
        more = self._more() if old_root == root else None
        if more is None:
            return {}
        return {os.path.join(root, body["paths"][i]): digest for i, digest in more["listings"]
                if i < len(body["paths"])}

    def _settled(self, paths, used: dict, root: str) -> tuple | str:
        """(signatures, racy) of paths, or why one cannot be vouched for (missing, or racy and not by content).

        A path changed since shortly before the build began (racy: its stat cannot tell a later write in the same
        clock tick) is vouched for by content instead, as git does for its index: a file by the digest this build
        used, which it must still have; a directory by its listing, every entry of which must be a path of this
        build. racy: [[index, digest]] of those; a replay re-reads them (a few files: those the build just wrote or
        hashed) and trusts their stats for nothing."""
        sigs, racy = [], []
        known = set(paths)
        before = self._listings_before(root)
        for i, path in enumerate(paths):
            sig = signature(path)
            if sig is None:
                return f"{_shown(path, root)} is gone"
            if is_racy(sig, self.started_ns):
                digest, why = _vouch(path, used.get(path), known, before.get(path))
                if digest is None:
                    return RACY.format(path=_shown(path, root), why=why)
                racy.append([i, digest])
            sigs.append(sig)
        return sigs, racy


def _shown(path: str, root: str) -> str:
    return os.path.relpath(path, root) if path != root else "the workspace directory"


def _per_target(graph, results, paths, common, own) -> dict:
    """What a build after an edit needs to take the untouched targets as they were (NoopCertificate.vouched):
    which paths each target's result depends on (beyond its deps'), which ones every target's does, the deps,
    each result's outputs and manifest, and each directory's listing (a directory whose stats changed but whose entries did
    not, as a rename-save leaves it, changes nothing)."""
    index = {p: i for i, p in enumerate(paths)}
    position = {r.label: i for i, r in enumerate(results)}
    listings = {}
    for i, path in enumerate(paths):
        if os.path.isdir(path):
            names = _listing(path)
            if names is not None:
                listings[i] = _listing_digest(names)
    return {"common": sorted(index[p] for p in common), "own": [sorted(index[p] for p in o) for o in own],
            "deps": [sorted(position[d] for d in graph.dag.predecessors(r.label) if d in position) for r in results],
            "results": [[r.outputs, r.manifest] for r in results],
            "listings": sorted(listings.items())}


def _vouch(path: str, used: str | None, known: set, before: str | None) -> tuple:
    """(the content digest that vouches for a racy path now, None) or (None, why it cannot): a file whose bytes
    are not those the build used (or of which it used none), a directory holding an entry the build did not read
    unless its listing is the one the last certificate recorded (before): entries there since, nothing read them."""
    if os.path.isdir(path):
        names = _listing(path)
        if names is None:
            return None, "it cannot be listed"
        digest = _listing_digest(names)
        stranger = next((n for n in names if os.path.join(path, n) not in known and n != STATE_DIR), None)
        if stranger is not None and digest != before:
            return None, f"it holds {stranger!r}, which the build did not read, and its entries changed"
        return digest, None
    if used is None:
        return None, "the build read it without hashing it (a BUILD, params or module file)"
    return (used, None) if _content(path) == used else (None, "its bytes changed since the build used them")


def _listing(path: str) -> list | None:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def _listing_digest(names: list) -> str:
    from buildml.hashing import digest_bytes

    return "dir:" + digest_bytes("\0".join(names).encode("utf-8", "surrogateescape"))


def _content(path: str) -> str | None:
    """A file's content digest, or a directory's listing digest; None when it cannot be read."""
    if os.path.isdir(path):
        names = _listing(path)
        return None if names is None else _listing_digest(names)
    from buildml.hashing import digest_file

    try:
        return digest_file(path)
    except OSError:
        return None


def _as_hashed(now: dict, hasher, written=frozenset()) -> bool:
    """True when every file the hasher digested this build still has the signature it was digested at (but for
    the outputs the build wrote since)."""
    seen = getattr(hasher, "seen", None) or {}
    return all((now[p] if p in now else signature(p)) == list(sig) for p, sig in list(seen.items()) if p not in written)


def unchanged(root: str, paths, sigs, started_ns: int | None, racy=()) -> bool:
    """True when every path still has its recorded signature (and, given started_ns, each one recorded racy still
    has the content it was vouched for by: racy is [[index, digest]])."""
    stat = os.stat
    vouched = {i: digest for i, digest in racy}
    for i, (rel, sig) in enumerate(zip(paths, sigs)):
        try:
            st = stat(os.path.join(root, rel))
        except OSError:
            if sig is None:
                continue
            return False
        if sig is None or [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] != sig:
            return False
        if started_ns is not None and is_racy(sig, started_ns):
            if i not in vouched or _content(os.path.join(root, rel)) != vouched[i]:
                return False
    return True


def changed_paths(root: str, body: dict, listings: dict) -> set:
    """Indices of the certificate's paths that changed: signature, or recorded content where it was racy; a
    directory whose signature changed but whose listing is the recorded one did not."""
    vouched = {i: digest for i, digest in body["racy"]}
    started_ns = body["started_ns"]
    changed = set()
    for i, (rel, sig) in enumerate(zip(body["paths"], body["sigs"])):
        path = os.path.join(root, rel)
        now = signature(path)
        if now != sig:
            if now is not None and i in listings and os.path.isdir(path) and _content(path) == listings[i]:
                continue
            changed.add(i)
        elif is_racy(sig, started_ns) and (i not in vouched or _content(path) != vouched[i]):
            changed.add(i)
    return changed


def read_certificate(path) -> dict | None:
    """The certificate's body, or None when missing, half-written, corrupt or of another format. The per-target
    part (read_more) stays unparsed until a build after an edit asks for it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        header, _, rest = data.partition(b"\n")
        body, _, more = rest.partition(b"\n")
        meta = json.loads(header)
        if meta.get("format") != FORMAT or meta.get("digest") != hashlib.blake2b(body, digest_size=16).hexdigest():
            return None
        parsed = json.loads(body)
        if len(parsed["paths"]) != len(parsed["sigs"]) or len(parsed["state"]) != len(parsed["state_sigs"]):
            return None
        if not all(isinstance(i, int) and 0 <= i < len(parsed["paths"]) and isinstance(d, str)
                   for i, d in parsed["racy"]):
            return None
        parsed["_more"] = (more, meta.get("more"))
        return parsed
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_more(body: dict) -> dict | None:
    """The per-target part of a certificate read by read_certificate, checked; None when absent or invalid."""
    more, digest = body.get("_more") or (b"", None)
    try:
        if not more or digest != hashlib.blake2b(more, digest_size=16).hexdigest():
            return None
        parsed = json.loads(more)
        n, count = len(body["targets"]), len(body["paths"])
        lists = [parsed["common"], *parsed["own"], *parsed["deps"]]
        if len(parsed["own"]) != n or len(parsed["deps"]) != n or len(parsed["results"]) != n:
            return None
        if not all(isinstance(i, int) and 0 <= i < count for part in lists[:1 + n] for i in part):
            return None
        if not all(isinstance(d, int) and 0 <= d < n for deps in parsed["deps"] for d in deps):
            return None
        from buildml.trust import Untrusted, validate_outputs

        try:  # outputs become staged blobs and keys of dependents: the state's one gate, as for the builds table
            for outs, manifest in parsed["results"]:
                validate_outputs(outs)
                if not isinstance(manifest, (dict, type(None))):
                    return None
        except Untrusted:
            return None
        if not all(isinstance(i, int) and isinstance(d, str) for i, d in parsed["listings"]):
            return None
        return parsed
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def cert_path(state_dir, fingerprint: str) -> str:
    return os.path.join(state_dir, CERT_DIR, f"{fingerprint}.json")


def write_certificate(path, body: dict, more: dict | None = None) -> bool:
    """Atomically replace the certificate: a header line with the digests of what follows, the body, then the
    per-target part (temp + rename)."""
    root = body["root"] + os.sep
    kept, _digest = body.get("_more") or (b"", None)  # a body read back keeps its per-target part unless given one
    body = {k: v for k, v in body.items() if k != "_more"}
    body["paths"] = [p[len(root):] if p.startswith(root) else p for p in body["paths"]]
    data = json.dumps(body, separators=(",", ":")).encode()
    extra = json.dumps(more, separators=(",", ":")).encode() if more is not None else kept
    meta = {"format": FORMAT, "digest": hashlib.blake2b(data, digest_size=16).hexdigest()}
    if extra:
        meta["more"] = hashlib.blake2b(extra, digest_size=16).hexdigest()
    header = json.dumps(meta).encode()
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(header + b"\n" + data + (b"\n" + extra if extra else b""))
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
