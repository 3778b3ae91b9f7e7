"""Fuzz the trust boundary: poisoned manifests, output trees and lock files never touch a file outside the workspace
and the cache, and never raise anything but buildml's typed errors (issue 15).

The values come from a grammar that mixes valid ones with traversal, absolute paths, NUL, buildml's and git's own
names, wrong types and odd digests, and go through the real read paths in-process: LocalStore.get_action on a file
in ac/, the Materializer's restore with a real state and hasher, lockfile.read_lock/read_images and the external
data resolver. A few generated cases also go through the real CLI.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from buildml.errors import BuildmlError
from buildml.engine.external import ExternalData
from buildml.engine.hasher import Hasher
from buildml.hashing import digest_bytes
from buildml.load.lockfile import read_images, read_lock
from buildml.engine.materialize import Materializer
from buildml.engine.state import State
from buildml.store.local import BlobMissing, LocalStore

from conftest import WS

TYPED = (BuildmlError, BlobMissing)  # BlobMissing: a valid digest the store lacks (the scheduler re-runs the action)
OUTS = ["out.txt", "gen", "link/x", "linkdir"]  # the declared outs restores are checked against
BLOBS = [b"one\n", b"two\n", b"#!/bin/sh\n"]
PRESENT = [digest_bytes(b) for b in BLOBS]
KEY = "5e" * 16


def _settings(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


class Arena:
    """A workspace, a cache and, beside them, a sentinel tree that nothing may touch; symlinks from the workspace
    point into the sentinel (`link -> sentinel`, `linkdir -> sentinel/dir`)."""

    def __init__(self, base: Path):
        self.base, self.ws, self.cache, self.sentinel = base, base / "ws", base / "cache", base / "sentinel"
        (self.ws / ".git").mkdir(parents=True)
        (self.ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (self.ws / "buildml.yaml").write_text("")
        (self.sentinel / "dir").mkdir(parents=True)
        for rel in ("victim.txt", "dir/keep.bin", ".bashrc"):
            (self.sentinel / rel).write_text(f"precious {rel}\n")
        self.store = LocalStore(self.cache)
        self.store.warn = lambda message: None
        for data in BLOBS:
            self.store.put_bytes(data)
        self.state = State(self.ws / ".buildml")
        self.materializer = Materializer(self.ws, self.state, Hasher(self.state), self.store, lambda m: None,
                                         self.ws / ".buildml" / "displaced")
        self.reset()
        self.before = self.outside()

    def reset(self) -> None:
        """Back to the first workspace: what the last case restored or moved aside goes; the symlinks are remade."""
        for entry in os.scandir(self.ws):
            if entry.name in (".git", ".buildml", "buildml.yaml"):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        shutil.rmtree(self.ws / ".buildml" / "displaced", ignore_errors=True)
        self.links()
        (self.ws / "gen").mkdir()
        (self.ws / "gen" / "stale.txt").write_text("a user's file\n")
        (self.ws / "out.txt").write_text("a user's file\n")

    def links(self) -> None:
        for name, target in (("link", self.sentinel), ("linkdir", self.sentinel / "dir")):
            (self.ws / name).symlink_to(target)

    def outside(self) -> dict:
        """Everything beside the workspace and the cache: names next to base, and the sentinel tree with contents."""
        seen = {"..": sorted(os.listdir(self.base.parent)), ".": sorted(os.listdir(self.base))}
        for p in sorted(self.sentinel.rglob("*")):
            st_ = p.lstat()
            seen[str(p)] = (st_.st_mode, st_.st_ino, p.read_bytes() if p.is_file() else None)
        return seen

    def untouched(self) -> None:
        assert self.outside() == self.before, "a file outside the workspace and the cache was touched"
        assert (self.ws / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"


@pytest.fixture(scope="module")
def arena(tmp_path_factory) -> Arena:
    return Arena(tmp_path_factory.mktemp("fuzz-trust"))


# -- the grammar ---------------------------------------------------------------------------------------------------
def _mostly(valid, bad):
    """valid about 6 times in 7, else bad: enough whole manifests pass the gate for restores to run on them."""
    return st.one_of(*[valid] * 6, bad)


ODD = st.sampled_from([None, True, 0, -1, 1.5, "x", [], {}, [None], {"": None}])  # wrong types
VALID_PATHS = st.sampled_from(["out.txt", "gen/a.bin", "gen/sub/b", "gen/stale.txt", "gen/é", "link/x", "linkdir"])


@functools.cache  # each strategy is made once: hypothesis validates every new strategy object (costly)
def _bad_paths(sentinel: str):
    """Traversal, absolute, NUL, reserved names, undeclared, odd spellings."""
    return st.one_of(
        st.sampled_from(["", ".", "..", "/", "gen", "gen/", "gen//a", "./gen/a", "gen/./a", "gen/../out.txt", "gen\0/a",
                         "gen/a\0", "\0", "gen/\n", "gen/\udcff", "link", "link/../x", "linkdir/keep.bin", "other.txt",
                         ".git", ".git/HEAD", ".buildml/state.db", ".buildml", "buildml.yaml", "buildml-out/x",
                         "../sentinel/victim.txt", "gen/../../sentinel/victim.txt", "../../" + sentinel,
                         sentinel, sentinel + "/victim.txt", sentinel + "/dir", "~/.bashrc", "C:\\x", "gen\\..\\x"]),
        st.builds(lambda n, tail: "../" * n + tail, st.integers(1, 12), st.sampled_from(["sentinel/victim.txt", "x"])),
        st.text(st.sampled_from("ab/.\0-_ \\"), max_size=12),
        ODD,
    )


@functools.cache
def _paths(sentinel: str):
    return _mostly(VALID_PATHS, _bad_paths(sentinel))


@functools.cache
def _digests(sentinel: str):
    bad = st.one_of(
        st.sampled_from(["", "A" * 32, "0" * 31, "0" * 33, "g" * 32, "0" * 31 + "\0", " " + "0" * 31, "0" * 32 + "\n",
                         "../" * 40 + sentinel.lstrip("/") + "/victim.txt", sentinel + "/victim.txt", "..", "/",
                         "sha256:" + "0" * 64]),
        st.text("0123456789abcdef./", min_size=30, max_size=34),
        ODD)
    return _mostly(st.sampled_from(PRESENT + ["0" * 32]), bad)  # present blobs, and one the store lacks


@functools.cache
def _meta(sentinel: str):
    size, executable = _mostly(st.integers(0, 9), st.integers(-2, -1) | ODD), _mostly(st.booleans(), ODD)
    return _mostly(st.fixed_dictionaries({"digest": _digests(sentinel), "size": size, "exec": executable}), ODD)


@functools.cache
def _trees(sentinel: str):
    """An outputs mapping: JSON keys are strings, so wrong types appear only as the whole tree."""
    keys = st.one_of(*[VALID_PATHS] * 6, _bad_paths(sentinel).filter(lambda p: isinstance(p, str)))
    return _mostly(st.dictionaries(keys, _meta(sentinel), max_size=4), ODD)


@functools.cache
def _out_dirs(sentinel: str):
    return _mostly(st.lists(_mostly(st.sampled_from(["gen", "gen/sub", "linkdir"]), _paths(sentinel)), max_size=2), ODD)


@functools.cache
def _manifest_bodies(sentinel: str):
    """Manifests as JSON objects, every field from the grammar."""
    metric_keys = st.one_of(*[VALID_PATHS] * 6, _bad_paths(sentinel).filter(lambda p: isinstance(p, str)))
    return st.fixed_dictionaries({
        "key": _mostly(st.just(KEY), st.just("6f" * 16) | ODD), "outputs": _trees(sentinel),
        "out_dirs": _out_dirs(sentinel), "log": _mostly(st.none(), _digests(sentinel)),
        "exit_code": _mostly(st.just(0), ODD),
        "metrics": _mostly(st.dictionaries(metric_keys, ODD, max_size=2), ODD)})


@functools.cache
def _manifests(sentinel: str):
    """Manifest files: JSON objects from the grammar, or bytes that are not one."""
    body = _manifest_bodies(sentinel)
    raw = st.sampled_from([b"", b"{", b"[1, 2]", b'"x"', b"null", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b"{}"])
    return _mostly(body.map(lambda m: json.dumps(m).encode()), raw)  # json.dumps escapes non-ASCII


@functools.cache
def _lock_texts(sentinel: str, data_url: str):
    urls = st.one_of(st.just(data_url), st.sampled_from([f"file://{sentinel}/victim.txt", f"file://{sentinel}/dir",
                                                         "file:///nonexistent", "memory://x", "bogus-scheme://x",
                                                         "", "file://../x", "file:///a/\0"]), ODD)
    pin = st.one_of(st.fixed_dictionaries({"url": urls, "size": st.one_of(st.integers(-1, 9), ODD),
                                           "digest": _digests(sentinel)}, optional={"etag": ODD}), ODD)
    deps = st.one_of(st.dictionaries(st.one_of(st.just(data_url), st.just(f"file://{sentinel}/*"), st.text(max_size=5)),
                                     st.one_of(st.lists(pin, max_size=3), ODD), max_size=3), ODD)
    image_digests = st.one_of(st.just("sha256:" + "a" * 64), st.sampled_from(["sha256:", "sha256:x\nRUN evil", "md5:"]),
                              ODD)
    images = st.one_of(st.dictionaries(st.text(max_size=5), image_digests, max_size=2), ODD)
    doc = st.fixed_dictionaries({}, optional={"version": st.one_of(st.just(1), ODD), "deps": deps, "images": images})
    structured = doc.map(lambda d: yaml.safe_dump(d).encode())  # non-ASCII is escaped: the text is ASCII
    raw = st.sampled_from([b"<<<<<<< HEAD\nversion: 1\n=======\n", b"version: 1\ndeps: !!binary aGk=\n",
                           b"version: 1\ndeps:\n  a: [{url: x, size: 2024-01-01, digest: d}]\n", b"\xff\xfe\x00",
                           b"version: 1\ndeps: {a: &x [*x]}\n", b"[" * 3000, b"version: 1\ndeps:\n  a: 3\n",
                           b"version: !!python/object:os.system x\n", b"a: 1\na: 2\n", b"version: 1\nimages: [x]\n"])
    return st.one_of(structured, raw)


# -- the properties ------------------------------------------------------------------------------------------------
@given(data=st.data())
@_settings(4000)
def test_poisoned_manifests_through_get_action_and_restore(arena, data):
    """A manifest file in ac/ is either rejected or restores only inside the workspace, with typed errors only."""
    text = data.draw(_manifests(str(arena.sentinel)))
    arena.reset()
    path = arena.cache / "ac" / KEY[:2] / KEY
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text)
    try:
        manifest = arena.store.get_action(KEY)
        event("accepted" if manifest is not None else "rejected")  # --hypothesis-show-statistics shows the mix
        if manifest is not None:
            arena.materializer.restore(manifest["outputs"], OUTS, manifest.get("out_dirs", ()))
            event("restored")
    except TYPED as exc:
        event(type(exc).__name__)
    arena.untouched()


@given(data=st.data())
@_settings(3500)
def test_poisoned_trees_through_restore(arena, data):
    """An outputs tree and out_dirs given straight to the Materializer never reach outside the workspace."""
    tree = data.draw(_trees(str(arena.sentinel)))
    out_dirs = data.draw(_out_dirs(str(arena.sentinel)))
    arena.reset()
    try:
        arena.materializer.restore(tree, OUTS, out_dirs)
        event("restored")
    except TYPED as exc:
        event(type(exc).__name__)
    arena.untouched()


@given(data=st.data())
@_settings(3000)
def test_poisoned_lock_files(arena, data):
    """A lock file parses to pins or fails with a LoadError; resolving its pins (as --at does) stays typed."""
    text = data.draw(_lock_texts(str(arena.sentinel), _data_url(arena)))
    lock = arena.base / "buildml.lock"
    lock.write_bytes(text)
    try:
        read_images(lock)
        pins = read_lock(lock)
        resolver = ExternalData(lock, arena.store, check=False)
        for dep in sorted(pins):
            resolver.staged([dep])
        event("resolved")
    except TYPED as exc:
        event(type(exc).__name__)
    finally:
        lock.unlink()
    arena.untouched()


def _data_url(arena: Arena) -> str:
    data = arena.base / "data.csv"
    if not data.exists():
        data.write_text("1,2\n")
        arena.before = arena.outside()
    return f"file://{data}"


# -- a few generated cases through the real CLI ----------------------------------------------------------------------
CLI_BUILD = """\
targets:
  a:
    command: mkdir -p gen && echo good > out.txt && echo x > gen/a.bin
    outs: [out.txt, gen]
  rows:
    command: wc -l < external/file{victim} > rows.txt
    deps: ["file://{victim}"]
    outs: [rows.txt]
"""


@pytest.fixture(scope="module")
def cli_ws(tmp_path_factory):
    """A built workspace (target a's key; rows reads a file in the sentinel by URL) and the sentinel beside it."""
    base = tmp_path_factory.mktemp("fuzz-cli")
    sentinel = base / "sentinel"
    sentinel.mkdir()
    (sentinel / "victim.txt").write_text("precious\n")
    (base / "ws").mkdir()
    ws = WS(base / "ws", base / "cache")
    ws.write("buildml.yaml", "")
    ws.write("BUILD.yaml", CLI_BUILD.format(victim=sentinel / "victim.txt"))
    ws.run("build", "//:a", check=0)
    (key,) = [p.name for p in (ws.cache / "ac").rglob("*") if p.is_file()]
    return ws, key, sentinel


@given(data=st.data())
@_settings(6)
def test_generated_manifests_through_the_cli(cli_ws, data):
    """A build that finds a generated manifest under its key never exits 3 and touches nothing outside."""
    ws, key, sentinel = cli_ws
    body = {**data.draw(_manifest_bodies(str(sentinel))), "key": key}
    path = ws.cache / "ac" / key[:2] / key
    os.chmod(path, 0o644)
    path.write_text(json.dumps(body))
    (ws.root / "out.txt").unlink(missing_ok=True)
    proc = ws.run("build", "//:a")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "internal error" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert (sentinel / "victim.txt").read_text() == "precious\n" and sorted(os.listdir(sentinel)) == ["victim.txt"]


@given(data=st.data())
@_settings(4)
def test_generated_lock_files_through_the_cli(cli_ws, data):
    """A build next to a generated buildml.lock never exits 3."""
    ws, _key, sentinel = cli_ws
    (ws.root / "buildml.lock").write_bytes(data.draw(_lock_texts(str(sentinel), f"file://{sentinel}/victim.txt")))
    try:
        proc = ws.run("build", "//:rows")
    finally:
        (ws.root / "buildml.lock").unlink()
    assert proc.returncode != 3 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert (sentinel / "victim.txt").read_text() == "precious\n"
