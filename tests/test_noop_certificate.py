"""The no-op certificate (buildml/noop.py): a no-op proven by stats rebuilds exactly what a full check would.

Every workspace here is built, left alone past the racy window, and built again (which writes
the certificate) once, by the `pool` fixture: one shared 2 s wait instead of one per test. A
build "took the certificate" when it did not rewrite .buildml/last-build.json (every build that
loads the workspace rewrites it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from buildml.hashing import RACY_NS
from conftest import BIN, WS, executed

SETTLE = RACY_NS / 1e9 + 0.2
CERT_DIR = ".buildml/noop"
RECORD = ".buildml/last-build.json"
ALL = ["//:data", "//:prep", "//:train"]

BUILD = """\
targets:
  prep:
    command: cat src/a.txt src/*.csv | cksum > prep.out
    deps: [src/a.txt, "src/*.csv"]
    outs: [prep.out]
  train:
    command: cat prep.out params.yaml | cksum > model.out
    deps: [prep.out]
    params: [train.lr]
    outs: [model.out]
  data:
    command: ls data | cksum > count.txt
    deps: [data/]
    outs: [count.txt]
"""


def make(root, cache) -> WS:
    ws = WS(root, cache)
    ws.write("buildml.yaml", "")
    ws.write("BUILD.yaml", BUILD)
    ws.write("params.yaml", "train:\n  lr: 0.1\nother: 1\n")
    ws.write("src/a.txt", "alpha\n")
    ws.write("src/b.csv", "1,2\n")
    ws.write("data/x.bin", "x\n")
    return ws


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Certified workspaces, one per test that asks: pool(name)."""
    base = tmp_path_factory.mktemp("noop")
    names = ["noop", "text", "edit", "same_size", "glob", "deleted_out", "edited_out", "params", "package",
             "root_file", "override", "pattern", "env", "cache_gone", "dir_dep", "corrupt", "stale", "concurrent", "racy",
             "partial", "right_after", "forged", "renamed", "stranger"]
    spaces = {n: make(base / n, base / f"cache-{n}") for n in names}
    # executes every target; certifies nothing (on a loaded machine BUILD.yaml may be out of the racy window already,
    # and the certificate of a build whose outputs were too new for the stat cache is voided by the next full build
    # that records them: tests below need the certificate of a full no-op)
    _parallel(spaces.values(), "build", "-q", BUILDML_NOOP_CERTIFICATE="0")
    time.sleep(SETTLE)
    _parallel(spaces.values(), "build", "-q")  # a no-op: writes the certificate
    for ws in spaces.values():
        cert(ws)
    return spaces.__getitem__


def _parallel(spaces, *args, **env) -> None:
    procs = [subprocess.Popen([str(BIN / "buildml"), *args], cwd=ws.root, env=ws.env(**env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for ws in spaces]
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out


def certs(ws: WS) -> list:
    """The certificates in the workspace's state directory."""
    return sorted((ws.root / CERT_DIR).glob("*.json")) if (ws.root / CERT_DIR).is_dir() else []


def cert(ws: WS):
    """The workspace's one certificate."""
    found = certs(ws)
    assert len(found) == 1, found
    return found[0]


def _record_id(ws: WS):
    st = os.stat(ws.root / RECORD)
    return st.st_ino, st.st_mtime_ns


def build(ws: WS, *args, env=None, check=0):
    """(summary, finished events, whether the certificate settled it) of `buildml build --json ARGS`."""
    before = _record_id(ws)
    proc = ws.run("build", "--json", *args, env=env, check=check)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    return lines[-1], [l for l in lines if l.get("event") == "finished"], _record_id(ws) == before


def statuses(events) -> dict:
    return {e["target"]: e["status"] for e in events}


def settle_and_certify(ws: WS) -> None:
    """Wait out the racy window, then a no-op that writes the certificate and one that uses it."""
    time.sleep(SETTLE)
    assert build(ws)[2] is False
    assert build(ws)[2] is True


# -- the no-op itself ------------------------------------------------------------------------------
def test_certified_noop_executes_nothing_and_prints_the_usual_summary(pool):
    """With a certificate a no-op executes 0, reports every target up to date, and skips loading."""
    ws = pool("noop")
    summary, events, certified = build(ws)
    assert certified
    assert (summary["executed"], summary["cached"], summary["up_to_date"], summary["failed"]) == (0, 0, 3, 0)
    assert statuses(events) == dict.fromkeys(ALL, "up-to-date")
    assert {e["target"]: e["outputs"] for e in events} == {"//:data": ["count.txt"], "//:prep": ["prep.out"],
                                                            "//:train": ["model.out"]}


def test_certified_output_matches_a_full_noop(pool):
    """Plain and quiet output of a certified no-op equal a full no-op's (timestamps and durations aside)."""
    ws = pool("text")

    def text(*args, **env):
        before = _record_id(ws)
        out = ws.run("build", *args, env=ws.env(**env), check=0).stdout
        return re.sub(r"\d\d:\d\d:\d\d|\d+\.\d\ds", "T", out), _record_id(ws) == before

    for args in ((), ("-q",), ("-v",)):
        full, was_certified = text(*args, BUILDML_NOOP_CERTIFICATE="0")
        assert not was_certified
        fast, was_certified = text(*args)
        assert was_certified and fast == full
    assert "0 executed, 0 cached, 3 up to date in T" in fast


# -- every kind of change still rebuilds -------------------------------------------------------------
def test_source_edit_rebuilds(pool):
    """An edited source re-runs its target and, its checksum changing, the target reading its output."""
    ws = pool("edit")
    ws.write("src/a.txt", "a longer alpha\n")
    summary, events, certified = build(ws)
    assert not certified and sorted(executed(events)) == ["//:prep", "//:train"]


def test_same_size_edit_with_the_old_mtime_rebuilds(pool):
    """Same size, mtime put back to the nanosecond with os.utime: the ctime still tells, and it rebuilds."""
    ws = pool("same_size")
    path = ws.root / "src/a.txt"
    st = os.stat(path)
    path.write_text("ALPHA\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    summary, events, certified = build(ws)
    assert not certified and sorted(executed(events)) == ["//:prep", "//:train"]


def test_racy_certificate_is_neither_written_nor_trusted(pool):
    """A no-op within the racy window of a change writes no certificate; one recorded racy is never trusted."""
    from buildml.features.noop import read_certificate, write_certificate

    ws = pool("racy")
    cert_before = os.stat(cert(ws)).st_mtime_ns
    for _ in range(2):  # params.yaml rewritten (same bytes) just before: a full no-op, but racy
        ws.write("params.yaml", ws.read("params.yaml"))
        summary, events, certified = build(ws)
        assert not certified and summary["executed"] == 0 and summary["up_to_date"] == 3
    assert os.stat(cert(ws)).st_mtime_ns == cert_before
    settle_and_certify(ws)
    body = read_certificate(cert(ws))
    newest = max(max(sig[1], sig[2]) for sig in body["sigs"])
    body["started_ns"] = newest + RACY_NS // 2  # as if taken within a tick of the last change: that path is racy
    write_certificate(cert(ws), body)
    assert read_certificate(cert(ws)) == body  # well-formed, right fingerprint, stats all match...
    assert build(ws)[2] is False  # ...and still not trusted


# -- after an edit: the certificate in part; right after a build: racy paths vouched for by content ----------------
def test_edit_examines_only_the_cone_and_the_next_noop_is_certified_at_once(pool):
    """An edit of data/ (read by //:data alone) examines that one target, the other two taken as recorded; the
    build that executed writes a certificate (its racy files vouched for by content) that the very next build
    takes, with no wait; a second edit of the same file in the same second is seen."""
    ws = pool("partial")
    ws.write("data/x.bin", "x2\n")
    proc = ws.run("build", "-v", check=0)
    assert "partly used: 2 of 3 targets read nothing that changed" in proc.stderr, proc.stderr
    assert "1 executed, 0 cached, 2 up to date" in proc.stdout and "no-op certificate: written" in proc.stderr
    assert build(ws)[2] is True  # at once: data/x.bin and count.txt are racy, and re-read
    ws.write("data/x.bin", "x3\n")  # same size, within the same second as the last write
    summary, events, certified = build(ws)
    assert not certified and executed(events) == ["//:data"] and statuses(events)["//:train"] == "up-to-date"
    assert len(events) == 3  # every target has its finished event, examined or not
    assert ws.read("count.txt") == subprocess.run("ls data | cksum", shell=True, cwd=ws.root, capture_output=True,
                                                  text=True).stdout
    ws.write("src/a.txt", "alpha, edited\n")  # prep and, its output changing, train
    proc = ws.run("build", "-v", check=0)
    assert "partly used: 1 of 3 targets" in proc.stderr and "2 executed" in proc.stdout, proc.stderr + proc.stdout


def test_right_after_a_build_the_noop_is_certified(pool):
    """The first no-op right after a build that executed is answered from the certificate, not the full path."""
    ws = pool("right_after")
    ws.write("src/a.txt", "alpha again\n")
    summary, events, certified = build(ws)
    assert sorted(executed(events)) == ["//:prep", "//:train"]
    summary, events, certified = build(ws)
    assert certified and summary["up_to_date"] == 3


def test_racy_path_with_forged_stats_is_still_caught_by_content(pool):
    """A racy file whose stats a same-tick write would leave unchanged (forged here: the certificate is rewritten
    with the stats after the edit) is caught by its recorded content."""
    from buildml.features.noop import read_certificate, signature, write_certificate

    ws = pool("forged")
    ws.write("src/a.txt", "alpha forged\n")
    build(ws)  # executes prep and train, writes a certificate with src/a.txt racy
    body = read_certificate(cert(ws))
    i = body["paths"].index("src/a.txt")
    assert i in {j for j, _ in body["racy"]}
    ws.write("src/a.txt", "ALPHA FORGED\n")
    body["sigs"][i] = signature(str(ws.root / "src/a.txt"))
    write_certificate(cert(ws), body)
    summary, events, certified = build(ws)
    assert not certified and sorted(executed(events)) == ["//:prep", "//:train"]


def test_rename_save_is_partial_and_a_new_file_beside_sources_is_not(pool):
    """A source saved by rename changes its directory's stats but not its listing: still examined in part. A new
    file in a package directory (the loader's walk) takes the full path."""
    ws = pool("renamed")
    tmp = ws.root / "data/.x.bin.swp"
    tmp.write_text("x renamed\n")
    os.replace(tmp, ws.root / "data/x.bin")
    proc = ws.run("build", "-v", check=0)
    assert "partly used: 2 of 3 targets" in proc.stderr and "1 executed" in proc.stdout, proc.stderr
    ws = pool("stranger")
    ws.write("notes.txt", "a file nothing reads, in the root package\n")
    proc = ws.run("build", "-v", check=0)
    assert "partly used" not in proc.stderr and "0 executed, 0 cached, 3 up to date" in proc.stdout


def test_new_file_matching_a_glob_rebuilds(pool):
    """A new file matching a glob dep is a new input: its target re-runs."""
    ws = pool("glob")
    ws.write("src/c.csv", "3,4\n")
    summary, events, certified = build(ws)
    assert not certified and sorted(executed(events)) == ["//:prep", "//:train"]


def test_new_file_in_a_directory_dep_rebuilds(pool):
    """A new file in a directory dep re-runs the target reading the directory."""
    ws = pool("dir_dep")
    ws.write("data/y.bin", "y\n")
    summary, events, certified = build(ws)
    assert not certified and executed(events) == ["//:data"]


def test_deleted_output_is_restored(pool):
    """A deleted output is put back from the cache, as a full build would."""
    ws = pool("deleted_out")
    content = ws.read("model.out")
    os.unlink(ws.root / "model.out")
    summary, events, certified = build(ws)
    assert not certified and statuses(events)["//:train"] == "cached" and summary["executed"] == 0
    assert ws.read("model.out") == content


def test_edited_output_is_restored(pool):
    """An output edited by hand is moved aside and the built one restored."""
    ws = pool("edited_out")
    content = ws.read("prep.out")
    ws.write("prep.out", "tampered\n")
    summary, events, certified = build(ws)
    assert not certified and statuses(events)["//:prep"] == "cached" and summary["executed"] == 0
    assert ws.read("prep.out") == content


def test_params_changes(pool):
    """A declared param key's change re-runs its reader; an undeclared key's change runs nothing (but is checked)."""
    ws = pool("params")
    ws.write("params.yaml", "train:\n  lr: 0.1\nother: 2\n")
    summary, events, certified = build(ws)
    assert not certified and summary["executed"] == 0 and summary["up_to_date"] == 3
    ws.write("params.yaml", "train:\n  lr: 0.2\nother: 2\n")
    summary, events, certified = build(ws)
    assert not certified and executed(events) == ["//:train"]


def test_new_package_is_built(pool):
    """A new BUILD.yaml anywhere below the root adds its targets to //... and they build."""
    ws = pool("package")
    ws.write("sub/BUILD.yaml", "targets:\n  extra:\n    command: echo hi > extra.txt\n    outs: [extra.txt]\n")
    summary, events, certified = build(ws)
    assert not certified and executed(events) == ["//sub:extra"]


def test_edited_root_file_is_checked(pool):
    """An edit of buildml.yaml takes the full path (here it changes nothing to build)."""
    ws = pool("root_file")
    ws.write("buildml.yaml", "jobs: 1\n")
    summary, events, certified = build(ws)
    assert not certified and summary["up_to_date"] == 3


def test_param_override_and_other_pattern_are_not_certified(pool):
    """--param and a different pattern change the fingerprint: the full path decides."""
    ws = pool("override")
    summary, events, certified = build(ws, "--param", "train.lr=0.5")
    assert not certified and executed(events) == ["//:train"]
    ws = pool("pattern")
    summary, events, certified = build(ws, "//:prep")
    assert not certified and statuses(events) == {"//:prep": "up-to-date"}
    assert build(ws)[2] is True  # the certificate of //... is still good


def test_environment_change_is_not_certified(pool):
    """Another BUILDML_CACHE_DIR (or any BUILDML_* variable) is another fingerprint."""
    ws = pool("env")
    other = ws.cache.parent / "other-cache-env"
    summary, events, certified = build(ws, env=ws.env(BUILDML_CACHE_DIR=str(other)))
    assert not certified and summary["up_to_date"] == 3


def test_removed_cache_dir_keeps_the_noop(pool):
    """Outputs in place and unchanged stay up to date without the cache: the certificate still holds."""
    ws = pool("cache_gone")
    shutil.rmtree(ws.cache)
    summary, events, certified = build(ws)
    assert certified and summary["up_to_date"] == 3 and summary["executed"] == 0
    summary, events, certified = build(ws, env=ws.env(BUILDML_NOOP_CERTIFICATE="0"))
    assert not certified and summary["up_to_date"] == 3  # as a full no-op says


# -- the certificate file itself ---------------------------------------------------------------------
def test_corrupt_certificate_is_ignored_and_rewritten(pool):
    """A truncated or edited certificate is never trusted; the next full no-op writes a good one."""
    ws = pool("corrupt")
    path = cert(ws)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    assert build(ws)[2] is False
    assert build(ws)[2] is True  # rewritten by the full no-op (nothing is racy)
    header, _, body = path.read_bytes().partition(b"\n")
    path.write_bytes(header + b"\n" + body.replace(b'"prep.out"', b'"prep.ouT"'))
    assert build(ws)[2] is False


def test_stale_certificate_is_ignored(pool):
    """A certificate from before a change (put back by hand) no longer matches the stats: not trusted."""
    ws = pool("stale")
    old = (cert(ws)).read_bytes()
    ws.write("src/a.txt", "changed\n")
    assert sorted(executed(build(ws)[1])) == ["//:prep", "//:train"]
    (cert(ws)).write_bytes(old)
    summary, events, certified = build(ws)
    assert not certified and summary["up_to_date"] == 3


def test_two_processes_at_once(pool):
    """Two no-ops at once, both writing the certificate, leave a valid one; two certified no-ops at once agree."""
    ws = pool("concurrent")
    ws.write("src/b.csv", "9,9\n")
    assert sorted(executed(build(ws)[1])) == ["//:prep", "//:train"]
    time.sleep(SETTLE)
    _parallel([ws, ws, ws], "build", "-q")  # all three write the certificate
    before = _record_id(ws)
    procs = [subprocess.Popen([str(BIN / "buildml"), "build", "--json"], cwd=ws.root, env=ws.env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs) and _record_id(ws) == before
    assert all(json.loads(o.splitlines()[-1])["up_to_date"] == 3 for o in outs)


# -- what is never certified -------------------------------------------------------------------------
def test_failures_tests_and_at_are_never_certified(ws):
    """A failing build, a build with a test target and a build --at write no certificate."""
    ws.write("BUILD.yaml", """\
        targets:
          ok:
            command: echo ok > ok.txt
            outs: [ok.txt]
          check:
            kind: test
            command: test -f ok.txt
            deps: [ok.txt]
        """)
    ws.run("build", "//:check", "-q", check=0)  # names the test: built and run
    time.sleep(SETTLE)
    for _ in range(2):
        assert ws.build_json("//:check")[0]["up_to_date"] == 2
    assert certs(ws) == []  # a test is never certified, even up to date
    ws.run("build", "-q", check=0)  # //... leaves the test out: certified
    os.unlink(cert(ws))
    ws.write("BUILD.yaml", "targets:\n  bad:\n    command: exit 3\n")
    time.sleep(SETTLE)
    ws.run("build", "-q", check=1)
    assert certs(ws) == []


def test_uncertifiable_targets(tmp_path):
    """Images, external URLs and tests are refused by analysis alone (no Docker, no network)."""
    from buildml.api import Options, Session
    from buildml.features.noop import NoopCertificate
    from buildml.features.noop_paths import uncertifiable

    root = tmp_path / "ws"
    ws = make(root, tmp_path / "cache")
    ws.write("images/Dockerfile", "FROM scratch\n")
    ws.write("images/BUILD.yaml", "targets:\n  base:\n    kind: image\n    context: .\n")
    ws.write("ext/BUILD.yaml", f"targets:\n  fetch:\n    command: ls\n    deps: ['file://{root}/data/*.bin']\n")
    ws.write("t/BUILD.yaml", "targets:\n  unit:\n    kind: test\n    command: 'true'\n")
    ws.write("run/BUILD.yaml", "targets:\n  inimage:\n    command: 'true'\n    image: //images:base\n")
    graph = Session(root, Options()).graph
    assert uncertifiable(graph, [l for l in graph.specs if l.package == ""]) is None
    for package, why in (("images", "image"), ("ext", "external"), ("t", "test"), ("run", "image")):
        labels = [l for l in graph.specs if l.package == package]
        assert why in uncertifiable(graph, labels), package
    assert NoopCertificate({"targets": (), "at": "HEAD"}).enabled is False
    assert NoopCertificate({"targets": (), "sweeps": ("train.lr=1,2",)}).enabled is False
    assert NoopCertificate({"targets": ()}).enabled is True


def test_only_the_newest_certificates_are_kept(tmp_path):
    """One certificate per command line, the KEEP most recently written kept (no unbounded growth)."""
    from buildml.features.noop import KEEP, cert_path, read_certificate, write_certificate

    body = {"root": str(tmp_path), "paths": [str(tmp_path / "a")], "sigs": [[1, 2, 3, 4]], "state": [], "state_sigs": [], "racy": []}
    for i in range(KEEP + 3):
        path = cert_path(tmp_path, f"{i:032x}")
        assert write_certificate(path, body)
        t = time.time_ns() - (KEEP + 3 - i) * 10**9
        os.utime(path, ns=(t, t))
    kept = sorted(p.name for p in (tmp_path / "noop").iterdir())
    assert kept == [f"{i:032x}.json" for i in range(3, KEEP + 3)]
    assert read_certificate(cert_path(tmp_path, f"{KEEP + 2:032x}"))["paths"] == ["a"]


def test_local_typed_executors_and_local_endpoints_are_certified_and_build_v_says_why_not(ws):
    """The main job's shape: a model on a buildml.yaml executor of type local and an endpoint built on the local
    executor (a descriptor file, no image) are certified; the certificate still sees an edit to the endpoint's
    code; `build -v` says whether it wrote one and, if not, why."""
    ws.write("buildml.yaml", "executor: local\nexecutors:\n  trainer: {type: local}\n")
    ws.write("BUILD.yaml", """\
        targets:
          train:
            kind: model
            executor: trainer
            command: echo model > model.pkl
            outs: [model.pkl]
          serve:
            kind: endpoint
            models: [":train"]
            command: python3 app.py
            deps: [app.py]
            port: 8080
          check:
            kind: test
            command: test -f model.pkl
            deps: [model.pkl]
        """)
    ws.write("app.py", "print('serving')\n")
    proc = ws.run("build", "-v", "//:train", "//:serve", check=0)
    assert ("no-op certificate: not written: BUILD.yaml changed within 2 s of the build (or since), and its content "
            "cannot vouch for it: the build read it without hashing it (a BUILD, params or module file)") in proc.stderr
    time.sleep(SETTLE)
    proc = ws.run("build", "-v", "//:train", "//:serve", check=0)
    assert "no-op certificate: written" in proc.stderr
    assert "no-op certificate: used" in ws.run("build", "-v", "//:train", "//:serve", check=0).stderr
    summary, events, certified = build(ws, "//:train", "//:serve")
    assert certified and statuses(events) == {"//:train": "up-to-date", "//:serve": "up-to-date"}
    ws.write("app.py", "print('serving v2')\n")
    summary, events, certified = build(ws, "//:train", "//:serve")
    assert not certified and statuses(events) == {"//:train": "up-to-date", "//:serve": "executed"}
    ws.run("build", "//:check", check=0)
    time.sleep(SETTLE)
    assert "no-op certificate: not written: //:check is a test" in ws.run("build", "-v", "//:check", check=0).stderr
