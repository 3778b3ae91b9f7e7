"""The incremental path from the CLI: after every kind of change a build runs exactly the targets downstream of it.

Issue 18. Each change is made against incremental state: the workspace was built, left alone past
the racy window and built again (a no-op that, by `build -v`, wrote its no-op certificate) by the
`pool` fixture, once for all (one shared wait). Then the change, then a build that must execute
exactly the cone of the change (the changed target and what reads its outputs, in every package),
with the outputs' contents checked, then a build that executes nothing. These assertions are about
what is rebuilt, not about how buildml decides it, so they hold for the no-op certificate of today
and for per-target signatures alike.

The graph (two packages):

    src/a.txt -> //:a -> //:b -> //:c -> //ml:report      //:lone (independent; declares a secret)
                   \\-> //:sib (env: MODE)                  //ml:train (params: [train.lr]) -> //ml:report
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from buildml.hashing import RACY_NS
from conftest import BIN, REPO, WS, executed

SETTLE = RACY_NS / 1e9 + 0.2
TOKEN = "tok-3f9a1c77e2"  # the value of //:lone's secret: never keyed, never stored
ALL = ["//:a", "//:b", "//:c", "//:lone", "//:sib", "//ml:report", "//ml:train"]
CONE_A = ["//:a", "//:b", "//:c", "//:sib", "//ml:report"]  # what reads src/a.txt, directly or not
WRITTEN, USED = "no-op certificate: written", "no-op certificate: used"

BUILD = """\
targets:
  a:
    command: cat src/a.txt > a.out
    deps: [src/a.txt]
    outs: [a.out]
  b:
    command: cat a.out src/b.txt > b.out
    deps: [a.out, src/b.txt]
    outs: [b.out]
  c:
    command: cat b.out > c.out
    deps: [b.out]
    outs: [c.out]
  sib:
    command: tr a-z A-Z < a.out > sib.out; echo "mode=$MODE" >> sib.out
    deps: [a.out]
    env: {MODE: one}
    outs: [sib.out]
  lone:
    command: test -n "$TOKEN" && cat src/lone.txt > lone.out
    deps: [src/lone.txt]
    secrets: [TOKEN]
    outs: [lone.out]
"""

ML_BUILD = """\
targets:
  train:
    command: echo "lr=${train.lr}" > model.out
    params: [train.lr]
    outs: [model.out]
  report:
    command: cat model.out ../c.out > report.out
    deps: [model.out, //:c]
    outs: [report.out]
"""

# A workspace rule module: kind `stamp` writes `<VERSION> <text>` to stamp.out. Its content is the rule's version.
RULE = '''\
"""`stamp`: write a version line."""
from buildml.rule import Attr, Rule

VERSION = "v1"


class StampRule(Rule):
    kind = "stamp"
    attrs = {"text": Attr("string", "what to stamp", required=True)}

    def analyse(self, target):
        line = f"{VERSION} {target.attrs['text']}"
        return self.base_spec(target, ("sh", "-c", f"echo {line} > stamp.out"), outs=("stamp.out",))
'''

RULE_TARGETS = """\
  stamp:
    kind: stamp
    text: hello
  after:
    command: cat stamp.out a.out > after.out
    deps: [stamp.out, a.out]
    outs: [after.out]
"""


class IWS(WS):
    """A workspace whose builds see //:lone's secret (as a caller's environment would hold it)."""

    def env(self, **extra) -> dict:
        return super().env(**{"TOKEN": TOKEN, **extra})


def make(root, cache, rules: bool = False) -> IWS:
    ws = IWS(root, cache)
    ws.write("buildml.yaml", "rules: {stamp: rules/stamp.py}\n" if rules else "")
    ws.write("BUILD.yaml", BUILD + (RULE_TARGETS if rules else ""))
    if rules:
        ws.write("rules/stamp.py", RULE)
    ws.write("ml/BUILD.yaml", ML_BUILD)
    ws.write("ml/params.yaml", "train:\n  lr: 0.1\n  epochs: 3\n")
    ws.write("src/a.txt", "alpha\n")
    ws.write("src/b.txt", "beta\n")
    ws.write("src/lone.txt", "lone\n")
    return ws


NAMES = ["source", "touch", "param", "unselected", "command", "added", "removed", "comment", "env_decl",
         "env_host", "racy", "racy_cert", "rounds"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Built, settled and certified workspaces, one per test that asks: pool(name). "rules" has a rule module."""
    base = tmp_path_factory.mktemp("inc")
    spaces = {n: make(base / n, base / f"cache-{n}") for n in NAMES}
    spaces["rules"] = make(base / "rules", base / "cache-rules", rules=True)
    outs = _parallel(spaces.values(), "build", "--json")
    for name, out in zip(spaces, outs):
        assert sorted(executed(_finished(out))) == sorted(ALL + (["//:after", "//:stamp"] if name == "rules" else []))
    time.sleep(SETTLE)
    outs = _parallel(spaces.values(), "build", "-v")  # a no-op that writes the certificate
    for name, out in zip(spaces, outs):
        assert "0 executed, 0 cached" in out, out
        if name == "rules":  # a user-defined kind is never certified: its no-ops take the full path
            assert "no-op certificate: not written: //:stamp is a stamp target" in out, out
        else:
            assert WRITTEN in out, out
    return spaces.__getitem__


def _parallel(spaces, *args) -> list[str]:
    procs = [subprocess.Popen([str(BIN / "buildml"), *args], cwd=ws.root, env=ws.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for ws in spaces]
    outs = []
    for proc in procs:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
        outs.append(out)
    return outs


def _finished(stdout: str) -> list:
    lines = [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]
    return [l for l in lines if l.get("event") == "finished"]


def build(ws: WS, *args, env=None) -> tuple[dict, list]:
    """(summary, finished events) of `buildml build --json ARGS`, which must exit 0."""
    proc = ws.run("build", "--json", *args, env=env, check=0)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    return lines[-1], [l for l in lines if l.get("event") == "finished"]


def ran(ws: WS, *args, env=None) -> list[str]:
    """The labels a build executed, sorted; it must fail nothing and take nothing from the cache."""
    summary, events = build(ws, *args, env=env)
    assert summary["failed"] == 0 and summary["cached"] == 0
    return sorted(executed(events))


def assert_noop(ws: WS, *args, env=None, total: int = len(ALL)) -> None:
    """A build that executes nothing, fetches nothing and finds all `total` targets up to date."""
    summary, events = build(ws, *args, env=env)
    assert (summary["executed"], summary["cached"], summary["failed"], summary["up_to_date"]) == (0, 0, 0, total), \
        [(e["target"], e["status"], e.get("reasons")) for e in events if e["status"] != "up-to-date"]


def certify(ws: WS, *args) -> None:
    """Wait out the racy window; a no-op then writes the incremental state (the certificate), unless the build
    before it could (its racy files vouched for by content) and it uses that one; the next one uses it."""
    time.sleep(SETTLE)
    first = ws.run("build", "-v", *args, check=0).stderr
    assert WRITTEN in first or USED in first, first
    assert USED in ws.run("build", "-v", *args, check=0).stderr


def outputs(a="alpha\n", b="beta\n", mode="one", lr="0.1", lone="lone\n") -> dict:
    """Every output's expected content, from the sources it was built from."""
    c = a + b
    return {"a.out": a, "b.out": c, "c.out": c, "sib.out": a.upper() + f"mode={mode}\n", "lone.out": lone,
            "ml/model.out": f"lr={lr}\n", "ml/report.out": f"lr={lr}\n" + c}


def assert_outputs(ws: WS, **sources) -> None:
    assert {p: ws.read(p) for p in outputs()} == outputs(**sources)


# -- 1. source edit ------------------------------------------------------------------------------------
def test_source_edit_rebuilds_its_cone_only(pool):
    """An edited source re-runs its target and everything downstream (across packages); the rest is untouched."""
    ws = pool("source")
    ws.write("src/a.txt", "a longer alpha\n")
    assert ran(ws) == CONE_A  # not //:lone, not //ml:train
    assert_outputs(ws, a="a longer alpha\n")
    assert_noop(ws)
    ws.write("src/b.txt", "BETA\n")  # same size
    assert ran(ws) == ["//:b", "//:c", "//ml:report"]
    assert_outputs(ws, a="a longer alpha\n", b="BETA\n")
    ws.write("src/lone.txt", "alone\n")
    assert ran(ws) == ["//:lone"]
    assert_outputs(ws, a="a longer alpha\n", b="BETA\n", lone="alone\n")
    assert_noop(ws)


# -- 2. touch --------------------------------------------------------------------------------------------
def test_touch_runs_nothing_and_the_state_recovers(pool):
    """mtime-only changes (sources, params, BUILD files) execute nothing; once settled, no-ops are certified again."""
    ws = pool("touch")
    for rel in ("src/a.txt", "src/lone.txt", "ml/params.yaml", "BUILD.yaml", "ml/BUILD.yaml"):
        os.utime(ws.root / rel)
    assert_noop(ws)
    assert_noop(ws)
    assert_outputs(ws)
    ws.write("src/b.txt", "beta\n")  # the same bytes written again (new mtime and ctime)
    _replace(ws.root / "src/lone.txt", "lone\n")  # and saved the way editors do: a new inode, same bytes
    assert_noop(ws)
    t = time.time_ns() - 10**9 * 3600  # an mtime in the past (a checkout, `touch -d`): same bytes, still nothing
    os.utime(ws.root / "src/a.txt", ns=(t, t))
    assert_noop(ws)
    certify(ws)
    assert_noop(ws)


# -- 3. params -------------------------------------------------------------------------------------------
def test_selected_param_rebuilds_its_readers(pool):
    """A changed selected key re-runs the target selecting it and its dependents only."""
    ws = pool("param")
    ws.write("ml/params.yaml", "train:\n  lr: 0.2\n  epochs: 3\n")
    assert ran(ws) == ["//ml:report", "//ml:train"]
    assert_outputs(ws, lr="0.2")
    assert_noop(ws)
    ws.write("ml/params.yaml", "train:\n  lr: 0.1\n  epochs: 3\n")  # back: the earlier results, from the cache
    summary, events = build(ws)
    assert summary["executed"] == 0
    assert {e["target"] for e in events if e["status"] == "cached"} == {"//ml:report", "//ml:train"}
    assert_outputs(ws, lr="0.1")
    assert_noop(ws)


def test_unselected_param_runs_nothing(pool):
    """A key no target selects, in the same params file, changes nothing; the next change of a selected one does."""
    ws = pool("unselected")
    ws.write("ml/params.yaml", "train:\n  lr: 0.1\n  epochs: 30\nnew: {x: 1}\n")
    assert_noop(ws)
    assert_noop(ws)
    ws.write("ml/params.yaml", "train:\n  lr: 0.5\n  epochs: 30\nnew: {x: 1}\n")
    assert ran(ws) == ["//ml:report", "//ml:train"]
    assert_outputs(ws, lr="0.5")
    assert_noop(ws)


# -- 4. BUILD edits --------------------------------------------------------------------------------------
def test_changed_command_rebuilds_it_and_its_dependents(pool):
    """One target's command changed: it and what reads its outputs (here across packages) re-run."""
    ws = pool("command")
    ws.write("BUILD.yaml", BUILD.replace("cat a.out src/b.txt > b.out", "cat src/b.txt a.out > b.out"))
    assert ran(ws) == ["//:b", "//:c", "//ml:report"]
    assert ws.read("c.out") == "beta\nalpha\n" and ws.read("ml/report.out") == "lr=0.1\nbeta\nalpha\n"
    assert_noop(ws)


def test_added_target_builds_alone(pool):
    """A new target in an existing BUILD file is the only thing that runs."""
    ws = pool("added")
    ws.write("ml/BUILD.yaml", ML_BUILD + "  extra:\n    command: cat ../a.out > extra.out\n    deps: [//:a]\n"
             "    outs: [extra.out]\n")
    assert ran(ws) == ["//ml:extra"]
    assert ws.read("ml/extra.out") == "alpha\n"
    assert_outputs(ws)
    assert_noop(ws, total=len(ALL) + 1)


def test_removed_target_runs_nothing(pool):
    """A removed target runs nothing and is no longer built; the others stay up to date."""
    ws = pool("removed")
    ws.write("BUILD.yaml", BUILD[:BUILD.index("  lone:")])
    summary, events = build(ws)
    assert summary["executed"] == 0 and sorted(e["target"] for e in events) == sorted(set(ALL) - {"//:lone"})
    assert_noop(ws, total=len(ALL) - 1)
    ws.write("src/a.txt", "ALPHA\n")  # the rest of the graph still rebuilds by its cone
    assert ran(ws) == CONE_A
    assert_outputs(ws, a="ALPHA\n")
    assert_noop(ws, total=len(ALL) - 1)


def test_build_file_edit_that_changes_no_target_runs_nothing(pool):
    """Comments, reordering and a quoted form of the same value in BUILD.yaml leave every key as it was."""
    ws = pool("comment")
    lines = ML_BUILD.splitlines(keepends=True)
    ws.write("ml/BUILD.yaml", "# the model\n" + "".join(lines[:1] + lines[5:] + lines[1:5]))  # report before train
    ws.write("BUILD.yaml", BUILD.replace("{MODE: one}", "{MODE: 'one'}  # quoted"))
    assert_noop(ws)
    assert_noop(ws)


# -- 5. rule module edit -----------------------------------------------------------------------------------
def test_rule_module_edit_rebuilds_its_targets(pool):
    """A workspace rule module whose code changes the action re-runs its targets and their dependents; an edit
    that keeps the action (a comment) re-runs its targets, the module being their rule's version, and nothing
    downstream, their outputs being the same. Targets of other kinds are untouched."""
    ws = pool("rules")
    total = len(ALL) + 2
    ws.write("rules/stamp.py", RULE.replace('VERSION = "v1"', 'VERSION = "v2"'))
    assert ran(ws) == ["//:after", "//:stamp"]
    assert ws.read("stamp.out") == "v2 hello\n" and ws.read("after.out") == "v2 hello\nalpha\n"
    assert_noop(ws, total=total)
    ws.write("rules/stamp.py", ws.read("rules/stamp.py") + "# a comment\n")
    assert ran(ws) == ["//:stamp"]
    assert ws.read("after.out") == "v2 hello\nalpha\n"
    assert_noop(ws, total=total)
    ws.write("src/a.txt", "alpha2\n")
    assert ran(ws) == sorted(CONE_A + ["//:after"])
    assert_outputs(ws, a="alpha2\n")
    assert ws.read("after.out") == "v2 hello\nalpha2\n"
    assert_noop(ws, total=total)


# -- 6. environment -----------------------------------------------------------------------------------------
def test_declared_env_change_rebuilds_that_target(pool):
    """A changed `env:` value re-runs that target (it has no dependents); its sibling and its dep do not."""
    ws = pool("env_decl")
    ws.write("BUILD.yaml", BUILD.replace("{MODE: one}", "{MODE: two}"))
    assert ran(ws) == ["//:sib"]
    assert_outputs(ws, mode="two")
    assert_noop(ws)
    ws.write("BUILD.yaml", BUILD.replace("{MODE: one}", "{MODE: one, EXTRA: x}"))  # a new variable: a new key
    assert ran(ws) == ["//:sib"]
    assert_outputs(ws, mode="one")
    assert_noop(ws)


def test_host_environment_enters_no_key(pool):
    """As documented (README "What a command sees"): the caller's PATH, undeclared variables (even one a target
    declares), BUILDML_* variables, HOME, the GPUs and threads the caller sets and secrets' values are not keyed, so changing them runs nothing; a
    command still sees its declared value. Switching the environment back finds its incremental state intact."""
    ws = pool("env_host")
    extra_bin = ws.root.parent / "env-host-bin"
    extra_bin.mkdir()
    variants = [{"PATH": f"{extra_bin}{os.pathsep}{ws.env()['PATH']}"}, {"MODE": "from-the-caller"},
                {"UNRELATED_VAR": "1"}, {"BUILDML_INCTEST_UNKNOWN": "1"}, {"HOME": str(extra_bin)},
                {"CUDA_VISIBLE_DEVICES": "3", "OMP_NUM_THREADS": "7"}, {"TOKEN": "another-secret-value"}]
    for variant in variants:
        assert_noop(ws, env=ws.env(**variant))
    assert_outputs(ws)  # MODE is still the declared one
    env = ws.env()
    del env["TOKEN"]  # a secret is needed to run, not to be up to date
    assert_noop(ws, env=env)
    assert USED in ws.run("build", "-v", check=0).stderr  # the original environment's certificate still holds
    ws.write("src/lone.txt", "lonely\n")
    assert ran(ws, env=ws.env(TOKEN="yet-another-secret")) == ["//:lone"]
    assert_outputs(ws, lone="lonely\n")
    for top in (ws.root / ".buildml", ws.cache):  # no secret value was stored (state, certificates, manifests, logs)
        for path in (p for p in top.rglob("*") if p.is_file()):
            data = path.read_bytes()
            for value in (TOKEN, "another-secret-value", "yet-another-secret"):
                assert value.encode() not in data, path


# -- 7. image ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def busybox():
    subprocess.run([str(REPO / "tools/base-images.sh"), "busybox"], check=True, capture_output=True)
    return "buildml-base/busybox:1"


@pytest.mark.docker
def test_dockerfile_change_rebuilds_the_image_and_what_runs_in_it(ws, busybox):
    """An edited Dockerfile rebuilds the image and the target running in it; a local target is untouched."""
    repo = f"buildml-test/inc-{uuid.uuid4().hex[:10]}"
    ws.write("images/BUILD.yaml", f"targets:\n  tools:\n    kind: image\n    repository: {repo}\n")
    ws.write("images/Dockerfile", f"FROM {busybox}\nCOPY hello.txt /opt/hello.txt\n")
    ws.write("images/hello.txt", "hello\n")
    ws.write("app/BUILD.yaml", "targets:\n  run:\n    image: //images:tools\n"
             "    command: cat /opt/hello.txt /opt/extra.txt > out.txt 2>/dev/null; true\n    outs: [out.txt]\n")
    ws.write("BUILD.yaml", "targets:\n  here:\n    command: echo here > here.txt\n    outs: [here.txt]\n")
    try:
        assert ran(ws) == ["//:here", "//app:run", "//images:tools"]
        assert ws.read("app/out.txt") == "hello\n"
        assert_noop(ws, total=3)
        ws.write("images/Dockerfile", f"FROM {busybox}\nCOPY hello.txt /opt/hello.txt\nRUN echo more > /opt/extra.txt\n")
        assert ran(ws) == ["//app:run", "//images:tools"]
        assert ws.read("app/out.txt") == "hello\nmore\n"
        assert_noop(ws, total=3)
    finally:
        tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo],
                              capture_output=True, text=True).stdout.split()
        if tags:
            subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True)


# -- 8. racy edits -----------------------------------------------------------------------------------------------
def _rewrite_same_stat(path, text: str) -> None:
    """Rewrite path in place with other bytes of the same size, its mtime put back to the nanosecond: only the
    ctime (which no call can set back) tells the change; the inode is the same too."""
    st = os.stat(path)
    assert len(text.encode()) == st.st_size
    with open(path, "r+") as f:
        f.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = os.stat(path)
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def _replace(path, text: str, keep_times: bool = False) -> None:
    """Save path as editors do: write a temp file beside it and rename it over (a new inode); keep_times puts the
    old atime and mtime on it."""
    st = os.stat(path)
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    if keep_times:
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)


def test_racy_edits_within_the_same_second_rebuild(pool):
    """Build, then at once (same second, same size) rewrite a source and build again, three times: each rebuilds
    the cone. Then the worst cases, each right after a build: other bytes of the same size with the same mtime_ns
    and inode (twice in a row), and with the same mtime_ns but a new inode (an editor's rename over the file); and
    once more after a settled, certified no-op. What buildml guarantees: a file's stat signature is (size,
    mtime_ns, ctime_ns, inode); any write, utime or rename sets the ctime to now, which no call can set back; and
    a digest is kept in the stat cache (and a certificate written) only for a file unchanged for RACY_NS (2 s)
    before it was read. So an edit is seen even when it lands in the same timestamp tick as the read before it:
    that read was racy, so the file is hashed again."""
    ws = pool("racy")
    for text in ("alpha1\n", "alpha2\n", "alpha3\n"):
        ws.write("src/a.txt", text)
        assert ran(ws) == CONE_A
        assert_outputs(ws, a=text)
    for text in ("alpha4\n", "alpha5\n"):
        _rewrite_same_stat(ws.root / "src/a.txt", text)
        assert ran(ws) == CONE_A
        assert_outputs(ws, a=text)
    st = os.stat(ws.root / "src/a.txt")
    _replace(ws.root / "src/a.txt", "alpha6\n", keep_times=True)  # same size and mtime_ns, another inode
    assert (os.stat(ws.root / "src/a.txt").st_size, os.stat(ws.root / "src/a.txt").st_mtime_ns) == \
        (st.st_size, st.st_mtime_ns)
    assert ran(ws) == CONE_A
    assert_outputs(ws, a="alpha6\n")
    assert_noop(ws)
    certify(ws)  # and once settled, the same worst case against the certificate and the stat cache's entry
    _rewrite_same_stat(ws.root / "src/a.txt", "alpha7\n")
    assert ran(ws) == CONE_A
    assert_outputs(ws, a="alpha7\n")
    assert_noop(ws)


def test_edit_right_after_the_certificate_was_written(pool):
    """A source edited in the same second a no-op wrote its certificate rebuilds its cone: in the worst case (same
    size, mtime_ns and inode as the certificate recorded), and by a plain same-size rewrite after a certificate of
    a subset of the graph; a build of another command line, whose certificate is older, sees it too."""
    ws = pool("racy_cert")
    assert WRITTEN in ws.run("build", "-v", "//...", check=0).stderr  # a new command line: its own certificate
    _rewrite_same_stat(ws.root / "src/a.txt", "ALPHA\n")
    assert ran(ws, "//...") == CONE_A
    assert ran(ws) == []  # the pool's certificate of `build` is stale now: nothing is left to do, nothing replayed
    assert_outputs(ws, a="ALPHA\n")
    assert_noop(ws, "//...")
    time.sleep(SETTLE)  # only a settled no-op writes a certificate
    assert WRITTEN in ws.run("build", "-v", "//:c", check=0).stderr
    ws.write("src/a.txt", "alPha\n")  # same size, same mtime second as the certificate
    assert ran(ws, "//:c") == ["//:a", "//:b", "//:c"]
    assert ws.read("c.out") == "alPha\nbeta\n"
    assert ran(ws) == ["//:sib", "//ml:report"]
    assert_outputs(ws, a="alPha\n")
    assert_noop(ws)


# -- every round keeps to the cone -------------------------------------------------------------------------------
def test_rounds_of_edit_build_noop(pool):
    """edit -> build -> no-op -> settle -> certified no-op, round after round: each build runs exactly the cone."""
    ws = pool("rounds")
    state = {}
    rounds = [("src/b.txt", "b", "bee\n", ["//:b", "//:c", "//ml:report"]),
              ("src/a.txt", "a", "aa\n", CONE_A),
              ("ml/params.yaml", "lr", "0.3", ["//ml:report", "//ml:train"])]
    for i, (rel, name, value, cone) in enumerate(rounds):
        state[name] = value
        ws.write(rel, f"train:\n  lr: {value}\n  epochs: 3\n" if name == "lr" else value)
        assert ran(ws) == cone, rel
        assert_outputs(ws, **state)
        assert_noop(ws)
        if i < len(rounds) - 1:
            certify(ws)
