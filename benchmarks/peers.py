"""Incremental builds side by side: buildml vs doit, ninja, `make -r` and Bazel on one synthetic graph.

    python benchmarks/peers.py                       # N=1000, 5 repeats, every tool found
    python benchmarks/peers.py --n 1000 10000 --repeat 3 --write-readme
    python benchmarks/peers.py --quick               # N=100, 2 repeats: a smoke run
    python benchmarks/peers.py --tools buildml,ninja,make

Installing the peers (none is a dependency of buildml):

    .venv/bin/pip install doit ninja          # doit 0.37 and the ninja binary wheel (1.13)
    apt-get install bazel-bootstrap            # Debian's Bazel 4.2.3 (works offline); `make` is GNU make

A tool that is not installed is reported and skipped, never faked.

The graph is synth.py's (`generate`, seed 42): N targets in 20 layers, one source file each, up to 3
deps on the layer before, each running `cat <its source> <its deps' outs> | cksum > <name>.out` in its
package directory. For each peer the same graph is written in its own language into its own copy of the
workspace: a doit `dodo.py` (file_dep/targets, a CmdAction with cwd = the package, doit's default MD5
checker), one `build.ninja`, one Makefile (run as `make -r`), and a `BUILD.bazel` per package with one
`genrule` per target (the same pipeline with `$(location)` paths, since genrules run in the execroot).
Every tool gets the same `-j` (the core count); doit runs its tasks on threads (`-P thread`); Bazel runs
actions unsandboxed (`--spawn_strategy=local`, so what is timed is its engine, not the sandbox) with a
private `--output_user_root` inside the temp dir, its server warmed by one build before anything is
timed and shut down at the end. buildml runs as a whole process, `buildml build -q //...`, as run.py does.

After the first clean build every peer's outputs are checked byte for byte against buildml's.

Workloads, each interleaved: every trial runs each tool once, in a rotating order, before the next trial.
  clean       outputs and every tool's state removed (Bazel: `bazel clean`, server kept); wall time and CPU
              per action: user+sys of the whole process tree (RUSAGE_CHILDREN deltas; for Bazel plus the
              server's own and its reaped children's CPU from /proc) divided by N
  noop        the repeated no-op (after one untimed no-op)
  leaf        a source of a target nothing depends on rewritten: one action runs
  after-leaf  the first no-op right after that build
  mid         the source of a mid-graph target rewritten: of layer 10 of 20, the target whose downstream
              closure is the median of its layer's; it and its dependents run (cksum changes every output)
Figures are medians. Ratios are buildml / peer (below 1: buildml faster).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synth import as_installed, generate  # noqa: E402

BUILDML = str(Path(sys.executable).parent / "buildml")
ALL_TOOLS = ("buildml", "doit", "ninja", "make", "bazel")
PEERS = ALL_TOOLS[1:]
WORKLOADS = ("clean", "noop", "leaf", "after-leaf", "mid")
START, END = "<!-- peers:start -->", "<!-- peers:end -->"
TARGET_RE = re.compile(r"  (t\d+):\n    command: (.*)\n    deps: \[(.*)\]\n    outs: \[(.*)\]\n")


def find_tool(name: str) -> str | None:
    """The executable for a tool: the venv's own bin first (pip-installed doit/ninja), then PATH."""
    exe = {"make": "make", "bazel": "bazel", "doit": "doit", "ninja": "ninja", "buildml": "buildml"}[name]
    local = Path(sys.executable).parent / exe
    if local.exists():
        return str(local)
    return shutil.which(exe)


# ---------------------------------------------------------------------------------------- the graph

class Target:
    def __init__(self, pkg: str, name: str, command: str, deps: list[tuple[str, str]]):
        self.pkg, self.name, self.command, self.deps = pkg, name, command, deps  # deps: (pkg, name)

    @property
    def src(self) -> str:
        return f"{self.pkg}/{self.name}.txt"

    @property
    def out(self) -> str:
        return f"{self.pkg}/{self.name}.out"


def read_graph(root: Path) -> list[Target]:
    """The targets synth.py wrote, read back from its BUILD.yaml files, in index order."""
    targets = []
    for build in root.glob("p*/BUILD.yaml"):
        pkg = build.parent.name
        for name, command, deps, _outs in TARGET_RE.findall(build.read_text()):
            dep_labels = [d.strip().strip('"') for d in deps.split(",")[1:]]
            targets.append(Target(pkg, name, command, [tuple(d[2:].split(":")) for d in dep_labels]))
    targets.sort(key=lambda t: int(t.name[1:]))
    return targets


def dependents_closure(targets: list[Target], start: str) -> int:
    """How many actions run when `start`'s source changes (it and everything downstream)."""
    rdeps: dict[str, list[str]] = {}
    for t in targets:
        for _pkg, d in t.deps:
            rdeps.setdefault(d, []).append(t.name)
    seen, todo = {start}, [start]
    while todo:
        for r in rdeps.get(todo.pop(), []):
            if r not in seen:
                seen.add(r)
                todo.append(r)
    return len(seen)


def write_doit(root: Path, targets: list[Target]) -> None:
    lines = ["from doit.action import CmdAction\n\nDOIT_CONFIG = {'verbosity': 0}\n\nTASKS = [\n"]
    for t in targets:
        deps = [t.src] + [f"{p}/{n}.out" for p, n in t.deps]
        lines.append(f"    ({t.name!r}, {t.pkg!r}, {t.command!r}, {deps!r}, {t.out!r}),\n")
    lines.append("]\n\n\ndef task_build():\n"
                 "    for name, pkg, cmd, deps, out in TASKS:\n"
                 "        yield {'name': name, 'actions': [CmdAction(cmd, cwd=pkg)], 'file_dep': deps,\n"
                 "               'targets': [out]}\n")
    (root / "dodo.py").write_text("".join(lines))


def write_ninja(root: Path, targets: list[Target]) -> None:
    lines = ["rule run\n  command = cd $dir && $cmd\n\n"]
    for t in targets:
        ins = " ".join([t.src] + [f"{p}/{n}.out" for p, n in t.deps])
        lines.append(f"build {t.out}: run {ins}\n  dir = {t.pkg}\n  cmd = {t.command.replace('$', '$$')}\n")
    lines.append("default " + " ".join(t.out for t in targets) + "\n")
    (root / "build.ninja").write_text("".join(lines))


def write_make(root: Path, targets: list[Target]) -> None:
    lines = [".PHONY: all\nall: " + " ".join(t.out for t in targets) + "\n\n"]
    for t in targets:
        ins = " ".join([t.src] + [f"{p}/{n}.out" for p, n in t.deps])
        lines.append(f"{t.out}: {ins}\n\tcd {t.pkg} && {t.command.replace('$', '$$')}\n")
    (root / "Makefile").write_text("".join(lines))


def write_bazel(root: Path, targets: list[Target]) -> None:
    (root / "WORKSPACE").write_text("")
    (root / ".bazelversion").unlink(missing_ok=True)
    per_pkg: dict[str, list[str]] = {}
    for t in targets:
        srcs = [f"{t.name}.txt"] + [f"//{p}:{n}" for p, n in t.deps]
        locs = " ".join(f"$(location {s})" for s in srcs)
        per_pkg.setdefault(t.pkg, []).append(
            f"genrule(\n    name = {t.name!r},\n    srcs = {srcs!r},\n    outs = [{t.name + '.out'!r}],\n"
            f"    cmd = \"cat {locs} | cksum > $@\",\n)\n\n")
    for pkg, rules in per_pkg.items():
        (root / pkg / "BUILD.bazel").write_text('package(default_visibility = ["//visibility:public"])\n\n'
                                                + "".join(rules))


# ---------------------------------------------------------------------------------------- the tools

class Tool:
    name = ""

    def __init__(self, exe: str, root: Path, work: Path, jobs: int, targets: list[Target]):
        self.exe, self.root, self.work, self.jobs, self.targets = exe, root, work, jobs, targets
        self.env = dict(os.environ)

    def setup(self) -> None:
        """Write the build files (the sources are already there)."""

    def build_cmd(self) -> list[str]:
        raise NotImplementedError

    def reset(self) -> None:
        """Remove every output and the tool's own state: the next build is a clean one."""
        for t in self.targets:
            (self.root / t.out).unlink(missing_ok=True)

    def output(self, t: Target) -> Path:
        return self.root / t.out

    def extra_cpu(self) -> float:
        """CPU seconds spent outside our process tree (a build server's), cumulative."""
        return 0.0

    def build(self) -> tuple[float, float]:
        """One build: (wall seconds, CPU seconds of the whole tree)."""
        before, extra = resource.getrusage(resource.RUSAGE_CHILDREN), self.extra_cpu()
        start = time.perf_counter()
        proc = subprocess.run(self.build_cmd(), cwd=self.root, env=self.env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{self.name}: {self.build_cmd()} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + self.extra_cpu() - extra
        return wall, cpu

    def close(self) -> None:
        pass


class Buildml(Tool):
    name = "buildml"

    def __init__(self, *a):
        super().__init__(*a)
        self.cache = self.work / "buildml-cache"
        self.env["BUILDML_CACHE_DIR"] = str(self.cache)

    def build_cmd(self):
        return [self.exe, "build", "-q", "-j", str(self.jobs), "//..."]

    def reset(self):
        super().reset()
        shutil.rmtree(self.root / ".buildml", ignore_errors=True)
        shutil.rmtree(self.root / "buildml-out", ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)


class Doit(Tool):
    name = "doit"

    def setup(self):
        write_doit(self.root, self.targets)

    def build_cmd(self):
        return [self.exe, "-n", str(self.jobs), "-P", "thread"]

    def reset(self):
        super().reset()
        for p in self.root.glob(".doit.db*"):
            p.unlink()


class Ninja(Tool):
    name = "ninja"

    def setup(self):
        write_ninja(self.root, self.targets)

    def build_cmd(self):
        return [self.exe, "-j", str(self.jobs)]

    def reset(self):
        super().reset()
        for p in (".ninja_log", ".ninja_deps"):
            (self.root / p).unlink(missing_ok=True)


class Make(Tool):
    name = "make"

    def setup(self):
        write_make(self.root, self.targets)

    def build_cmd(self):
        return [self.exe, "-r", "-s", "-j", str(self.jobs)]


class Bazel(Tool):
    name = "bazel"

    def __init__(self, *a):
        super().__init__(*a)
        self.startup = [self.exe, f"--output_user_root={self.work / 'bazel-root'}", "--nohome_rc",
                        "--max_idle_secs=900"]
        self.pid: int | None = None

    def setup(self):
        write_bazel(self.root, self.targets)

    def build_cmd(self):
        return [*self.startup, "build", f"--jobs={self.jobs}", "--spawn_strategy=local", "--noshow_progress",
                "--show_result=0", "//..."]

    def output(self, t):
        return self.root / "bazel-bin" / t.out

    def server_pid(self) -> int | None:
        if self.pid is None:
            proc = subprocess.run([*self.startup, "info", "server_pid"], cwd=self.root, capture_output=True, text=True)
            if proc.returncode == 0 and proc.stdout.strip().isdigit():
                self.pid = int(proc.stdout.strip())
        return self.pid

    def extra_cpu(self):
        pid = self.pid
        if pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # fields[11:15] are utime, stime, cutime, cstime (stat fields 14-17, counted after the comm)
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def reset(self):
        subprocess.run([*self.startup, "clean"], cwd=self.root, capture_output=True, check=True)

    def close(self):
        subprocess.run([*self.startup, "shutdown"], cwd=self.root, capture_output=True)


CLASSES = {"buildml": Buildml, "doit": Doit, "ninja": Ninja, "make": Make, "bazel": Bazel}


# ---------------------------------------------------------------------------------------- the run

def rewrite(path: Path, text: str) -> None:
    path.write_text(text)


def bench(n: int, work: Path, tools: list[str], repeat: int, jobs: int, log) -> dict:
    base = work / f"n{n}"
    shutil.rmtree(base, ignore_errors=True)
    roots = {}
    for name in tools:
        roots[name] = base / name / "ws"
        generate(roots[name], n)  # same seed: the same sources and graph in every copy
    targets = read_graph(roots[tools[0]])
    assert len(targets) == n, (len(targets), n)
    rdep_names = {d for t in targets for _p, d in t.deps}
    leaf = next(t for t in reversed(targets) if t.name not in rdep_names)
    per_layer = max(1, n // 20)  # synth.py's 20 layers; mid-graph: the median fan-out of layer 10
    layer = sorted(targets[10 * per_layer:11 * per_layer], key=lambda t: (dependents_closure(targets, t.name), t.name))
    mid = layer[len(layer) // 2]
    counts = {"clean": n, "noop": 0, "leaf": dependents_closure(targets, leaf.name), "after-leaf": 0,
              "mid": dependents_closure(targets, mid.name)}
    objs = {name: CLASSES[name](find_tool(name), roots[name], base / name, jobs, targets) for name in tools}
    for o in objs.values():
        o.setup()
    if "bazel" in objs:  # start and warm the server (loading + analysis) before anything is timed
        log(f"N={n}: warming the bazel server")
        objs["bazel"].build()
        objs["bazel"].server_pid()
    wall = {w: {t: [] for t in tools} for w in WORKLOADS}
    cpu = {t: [] for t in tools}

    def order(i):
        return tools[i % len(tools):] + tools[:i % len(tools)]

    for i in range(repeat):  # clean builds
        for name in order(i):
            objs[name].reset()
            w, c = objs[name].build()
            wall["clean"][name].append(w)
            cpu[name].append(c)
        log(f"N={n} clean #{i + 1}: " + " ".join(f"{t}={wall['clean'][t][-1]:.2f}s" for t in tools))
        if i == 0:
            verify(objs, targets)
    time.sleep(2.1)  # as run.py: let the racy-timestamp window of the last outputs pass
    for name in tools:
        objs[name].build()  # one untimed no-op (buildml's writes its no-op certificate)
    for i in range(repeat):
        for name in order(i):
            wall["noop"][name].append(objs[name].build()[0])
    log(f"N={n} noop: " + " ".join(f"{t}={statistics.median(wall['noop'][t]):.3f}s" for t in tools))
    for i in range(repeat):
        for name in order(i):
            rewrite(objs[name].root / leaf.src, f"leaf changed {i}\n")
            wall["leaf"][name].append(objs[name].build()[0])
            wall["after-leaf"][name].append(objs[name].build()[0])
    log(f"N={n} leaf: " + " ".join(f"{t}={statistics.median(wall['leaf'][t]):.3f}s" for t in tools))
    for i in range(repeat):
        for name in order(i):
            rewrite(objs[name].root / mid.src, f"mid changed {i}\n")
            wall["mid"][name].append(objs[name].build()[0])
    log(f"N={n} mid: " + " ".join(f"{t}={statistics.median(wall['mid'][t]):.3f}s" for t in tools))
    verify(objs, targets)
    for o in objs.values():
        o.close()
    shutil.rmtree(base, ignore_errors=True)
    med = {w: {t: statistics.median(v) for t, v in per.items()} for w, per in wall.items()}
    cpu_per_action = {t: statistics.median(v) / n for t, v in cpu.items()}
    return {"n": n, "wall": med, "cpu_per_action": cpu_per_action, "counts": counts, "leaf": leaf.name,
            "mid": mid.name}


def verify(objs: dict[str, Tool], targets: list[Target]) -> None:
    """Every peer's outputs equal buildml's, byte for byte (or, without buildml, the first tool's)."""
    names = list(objs)
    ref = objs[names[0]]
    for name in names[1:]:
        bad = [t.name for t in targets if ref.output(t).read_bytes() != objs[name].output(t).read_bytes()]
        if bad:
            raise SystemExit(f"{name}'s outputs differ from {ref.name}'s for {len(bad)} targets, e.g. {bad[:5]}")


# ---------------------------------------------------------------------------------------- the report

ROWS = {"noop": "no-op, repeated", "leaf": "one leaf source changed", "after-leaf": "first no-op right after that change",
        "mid": "one mid-graph source changed", "clean": "clean build"}


def targets_met(r: dict) -> list[str]:
    """The issue's targets, each as a line: what, measured, met."""
    w, cpa, out = r["wall"], r["cpu_per_action"], []

    def line(what, value, limit, have=True):
        if not have:
            out.append(f"- {what}: not measured (peer missing)")
            return
        out.append(f"- {what}: {value:.2f}x (target <= {limit}x): {'met' if value <= limit else '**not met**'}")

    b = w["leaf"].get("buildml")
    if b is None:
        return out
    for peer in ("doit", "bazel"):
        line(f"leaf change, buildml / {peer}", b / w["leaf"].get(peer, 1), 0.8, peer in w["leaf"])
    line("first no-op after a change / repeated no-op (buildml)", w["after-leaf"]["buildml"] / w["noop"]["buildml"], 1.5)
    line("mid-graph change, buildml / doit", w["mid"]["buildml"] / w["mid"].get("doit", 1), 1.0, "doit" in w["mid"])
    line("clean build CPU per action, buildml / doit", cpa["buildml"] / cpa.get("doit", 1), 1.0, "doit" in cpa)
    line("clean build wall, buildml / ninja", w["clean"]["buildml"] / w["clean"].get("ninja", 1), 1.5, "ninja" in w["clean"])
    return out


def table(r: dict, tools: list[str]) -> str:
    peers = [t for t in PEERS if t in tools]
    ratios = [p for p in peers if "buildml" in tools]
    head = ["workload (actions run)"] + [f"{t} s" for t in tools] + [f"buildml/{p}" for p in ratios]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for w in ("noop", "leaf", "after-leaf", "mid", "clean"):
        cells = [f"{ROWS[w]} ({r['counts'][w]})"] + [f"{r['wall'][w][t]:.3f}" for t in tools]
        cells += [f"{r['wall'][w]['buildml'] / r['wall'][w][p]:.2f}" for p in ratios]
        rows.append("| " + " | ".join(cells) + " |")
    cpa = r["cpu_per_action"]
    cells = ["clean build, CPU per action (ms)"] + [f"{cpa[t] * 1000:.2f}" for t in tools]
    cells += [f"{cpa['buildml'] / cpa[p]:.2f}" if cpa[p] else "" for p in ratios]
    rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def versions(tools: list[str]) -> str:
    out = []
    for t in tools:
        if t == "buildml":
            continue
        args = {"bazel": ["--version"], "make": ["--version"], "ninja": ["--version"], "doit": ["--version"]}[t]
        proc = subprocess.run([find_tool(t), *args], capture_output=True, text=True, cwd=tempfile.gettempdir())
        first = (proc.stdout or proc.stderr).strip().splitlines()
        version = first[0].split()[-1] if first else "?"
        if t == "bazel" and version == "no_version":  # Debian's bazel-bootstrap says no more than that
            deb = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "bazel-bootstrap"], capture_output=True, text=True)
            version = f"{deb.stdout.strip()} (Debian bazel-bootstrap)" if deb.returncode == 0 else version
        out.append(f"{t} {version}")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=None, help="graph sizes (default 1000)")
    ap.add_argument("--repeat", type=int, default=None, help="trials per workload (default 5; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="N=100, 2 trials: a smoke run")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated, from " + ",".join(ALL_TOOLS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="-j for every tool (default: cores)")
    ap.add_argument("--write-readme", action="store_true", help="rewrite the peers section of benchmarks/README.md")
    args = ap.parse_args()
    as_installed()
    sizes = args.n or ([100] if args.quick else [1000])
    repeat = args.repeat or (2 if args.quick else 5)
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in ALL_TOOLS]
    if unknown:
        ap.error(f"unknown tools {unknown}; choose from {ALL_TOOLS}")
    tools, missing = [], []
    for t in wanted:
        (tools if find_tool(t) else missing).append(t)
    for t in missing:
        print(f"{t}: not installed, skipped", file=sys.stderr)
    if not tools:
        raise SystemExit("no tool to run")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="buildml-peers-"))
    try:
        results = [bench(n, work, tools, repeat, args.jobs, log) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [f"Machine: {os.cpu_count()} cores, {mem:.0f} GiB, Python {sys.version.split()[0]}; {versions(tools)}. "
             f"-j {args.jobs} for all. Medians of {repeat} interleaved trials. {time.strftime('%Y-%m-%d')}."
             + (f" Not installed, skipped: {', '.join(missing)}." if missing else "")]
    for r in results:
        parts.append(f"\n**N={r['n']}** (leaf: {r['leaf']}, mid-graph: {r['mid']}); seconds, and buildml / peer:\n\n"
                     + table(r, tools) + "\n\n" + "\n".join(targets_met(r)))
    text = "\n".join(parts) + "\n"
    print(text)
    if args.write_readme:
        readme = HERE / "README.md"
        body = readme.read_text()
        if START not in body:
            raise SystemExit(f"{readme} has no {START} ... {END} section")
        body = body[:body.index(START) + len(START)] + "\n" + text + body[body.index(END):]
        readme.write_text(body)


if __name__ == "__main__":
    main()
