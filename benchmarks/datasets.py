"""Directory datasets of many small files (issue 17): buildml against `cp -r` + one hash pass, `find | xargs
stat` and DVC, on the same data in the same run, every figure the median of --repeat whole-process runs.

    python benchmarks/datasets.py                          # 10^5 files of 1 KB, 2 GiB of 2,000 files, DVC
    python benchmarks/datasets.py --files 10000 --repeat 3 # a quick figure
    python benchmarks/datasets.py --big                    # also 10^6 files (about 1 GB): slow
    python benchmarks/datasets.py --write-readme           # rewrite the section in benchmarks/README.md

Measured (A-C as in the issue):

A. N files of 1 KB in folders of 1,000 (--files, default 10^5: 100 x 1,000), written by a `dataset` target
   (a Python generator as its command), read by one consumer target (`find data -type f | wc -l`):
   clean build (fresh BUILDML_CACHE_DIR, no .buildml), interleaved with `cp -r` of the same directory plus
   one `xxhsum -H2` pass over its bytes (xxh3-128, buildml's digest; `cat > /dev/null` without xxhsum) and
   with the generator run alone; the first no-op after the build (after the 2 s racy-timestamp window, as a
   user's next build would come) and repeated no-ops; peers on the built directory: `find data -type f |
   xargs stat`, `dvc add data` in a fresh git+dvc repository and `dvc status` after. Then the same files as
   a SOURCE directory (`deps: [data/]` of the consumer): one file changed, rebuilt, and how many dataset
   files buildml opened for reading during that build (`strace -f -e trace=openat` on a separate run: the
   CLI reports no read counter; a summary key naming reads or hashes is shown too if a build prints one).
B. --big: 10^6 files (--big-files): clean build once, no-op, peak memory of the no-ops (`/usr/bin/time -f
   %M`), `dvc add` once and `dvc status`.
C. 2 GiB as 2,000 files of 1 MiB, as a `dataset` target's output and as a source directory: the first
   no-op after the build against later no-ops.

Only the CLI is used, so this measures whichever buildml `python -c "import buildml"` finds: run it with the
venv's python (or `PYTHONPATH=<checkout>` for a worktree); the header names the package path. All data lives
under one temporary directory in /tmp (--tmp), deleted at the end (--keep leaves it).

Peers: `apt-get install xxhash strace time` (Debian: xxhsum, strace, /usr/bin/time); DVC comes with the
dev extra (`pip install -e '.[dev]'`, dvc>=3.0) or `pip install dvc`; git must be on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synth import as_installed  # noqa: E402

# The CLI as a process of this interpreter: whatever `import buildml` finds (the venv's package, or PYTHONPATH's).
BUILDML = [sys.executable, "-c", "import sys; from buildml.cli import main; sys.argv[0] = 'buildml'; sys.exit(main())"]
DVC = shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
NO_CERT = "BUILDML_NOOP_CERTIFICATE"  # set to 0: the no-op loads and checks everything (what a first no-op may cost)
RACY_WAIT = 2.1  # buildml trusts no stat taken within 2 s of a file's change (buildml/hashing.py RACY_NS)
PER_FOLDER = 1000
START, END = "<!-- datasets:start -->", "<!-- datasets:end -->"

GENERATOR = '''"""Write N files of SIZE bytes into data/dNNN/ (1,000 a folder): deterministic, every file different."""
import os, random, sys
n, size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "data"
block = random.Random(17).randbytes(size + 4096)
for i in range(n):
    folder = os.path.join(out, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(folder, exist_ok=True)
    off = (i * 7) % 4096
    with open(os.path.join(folder, "f%07d.bin" % i), "wb") as f:
        f.write(b"%08d" % i + block[off:off + size - 8])
'''


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(args, cwd, env=None, check=True, shell=False) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env or os.environ, capture_output=True, text=True, shell=shell)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return elapsed, proc.stdout


def sh(command: str, cwd, env=None) -> float:
    return timed(command, cwd, env, shell=True)[0]


def bml(root: Path, cache: Path, *args, extra: dict | None = None) -> tuple[float, str]:
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache), **(extra or {})}
    return timed([*BUILDML, "build", *(args or ("-q",))], root, env)


def peak_mb(root: Path, cache: Path, extra: dict | None = None) -> float | None:
    """Peak resident memory of one `buildml build -q` in MB (GNU time's %M), or None without /usr/bin/time."""
    if not os.path.exists("/usr/bin/time"):
        return None
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache), **(extra or {})}
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *BUILDML, "build", "-q"], cwd=root, env=env,
                          capture_output=True, text=True)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def med(values) -> float:
    return statistics.median(values)


def summary(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def workspace(root: Path, files: int, size: int, source: bool) -> None:
    """A workspace whose data/ is a `dataset` target's out (source=False) or a source directory (source=True)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "buildml.yaml").write_text("")
    (root / "gen.py").write_text(GENERATOR)
    consumer = "  count:\n    command: find data -type f | wc -l > count.txt\n    outs: [count.txt]\n"
    if source:
        (root / "BUILD.yaml").write_text(f"targets:\n{consumer}    deps: [data/]\n")
    else:
        (root / "BUILD.yaml").write_text(
            "targets:\n  data:\n    kind: dataset\n"
            f"    command: {sys.executable} gen.py {files} {size}\n    deps: [gen.py]\n    outs: [data/]\n"
            f"{consumer}    deps: [':data']\n")


def check_count(root: Path, files: int) -> None:
    got = int((root / "count.txt").read_text().split()[0])
    if got != files:
        raise SystemExit(f"{root}: the consumer counted {got} files, expected {files}")


def rm(*paths: Path) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


# --- A/B/C: the dataset target -------------------------------------------------------------------------------

def bench_target(work: Path, tag: str, files: int, size: int, repeat: int, clean_repeat: int,
                 baselines: bool, peers: bool, dvc_adds: int) -> dict:
    """Clean builds (each with a fresh cache and workspace), each followed by its first no-op and, interleaved,
    the baselines on the same data; then repeated no-ops interleaved with the peers."""
    root, cache = work / f"{tag}-target", work / f"{tag}-cache"
    r: dict = {"files": files, "size": size, "clean": [], "first_noop": [], "cp": [], "hash": [], "gen": []}
    for i in range(clean_repeat):
        rm(root, cache)
        workspace(root, files, size, source=False)
        log(f"{tag}: clean build {i + 1}/{clean_repeat} ({files} files of {size} B)")
        r["clean"].append(bml(root, cache)[0])
        check_count(root, files)
        time.sleep(RACY_WAIT)
        r["first_noop"].append(bml(root, cache)[0])
        if baselines:
            copy, alone = work / f"{tag}-copy", work / f"{tag}-gen"
            rm(copy, alone)
            r["cp"].append(sh(f"cp -r '{root / 'data'}' '{copy}'", work))
            hasher = "xargs -0 xxhsum -H2 > /dev/null" if shutil.which("xxhsum") else "xargs -0 cat > /dev/null"
            r["hash"].append(sh(f"find '{copy}' -type f -print0 | {hasher}", work))
            rm(copy)
            alone.mkdir()
            r["gen"].append(timed([sys.executable, str(root / "gen.py"), str(files), str(size)], alone)[0])
            rm(alone)
    r["hasher"] = "xxhsum -H2" if shutil.which("xxhsum") else "cat"
    r["noop"], r["noop_full"], r["stat"] = [], [], []
    log(f"{tag}: no-ops" + (" and find | xargs stat" if peers else ""))
    for _ in range(repeat):
        r["noop"].append(bml(root, cache)[0])
        r["noop_full"].append(bml(root, cache, extra={NO_CERT: "0"})[0])
        if peers:
            r["stat"].append(sh("find data -type f | xargs stat > /dev/null", root))
    r["peak"] = peak_mb(root, cache)
    r["peak_full"] = peak_mb(root, cache, {NO_CERT: "0"})
    if dvc_adds:
        r.update(bench_dvc(work, tag, root / "data", dvc_adds, repeat))
    rm(cache)
    return r


def bench_dvc(work: Path, tag: str, data: Path, add_repeat: int, status_repeat: int) -> dict:
    """`dvc add data` in a fresh git+dvc repository holding a copy of the same files (each add anew), then
    `dvc status` (the first one after the add, then repeated)."""
    if DVC is None or shutil.which("git") is None:
        log("dvc or git not found: DVC rows left out")
        return {}
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    out: dict = {"dvc_add": [], "dvc_status_first": [], "dvc_status": []}
    repo = work / f"{tag}-dvc"
    for i in range(add_repeat):
        rm(repo, work / f"{tag}-dvc-site")
        repo.mkdir()
        timed(f"git init -q && '{DVC}' init -q && '{DVC}' config core.analytics false && "
              f"'{DVC}' config core.site_cache_dir '{work / f'{tag}-dvc-site'}'", repo, env, shell=True)
        sh(f"cp -r '{data}' data", repo)
        log(f"{tag}: dvc add {i + 1}/{add_repeat}")
        out["dvc_add"].append(timed([DVC, "add", "-q", "data"], repo, env)[0])
        out["dvc_status_first"].append(timed([DVC, "status"], repo, env)[0])
    for _ in range(status_repeat):
        out["dvc_status"].append(timed([DVC, "status"], repo, env)[0])
    rm(repo, work / f"{tag}-dvc-site")
    return out


# --- A: the same files as a source directory; C: 2 GiB as a source directory -----------------------------------

def bench_source(work: Path, tag: str, files: int, size: int, repeat: int, change: bool) -> dict:
    root, cache = work / f"{tag}-source", work / f"{tag}-source-cache"
    rm(root, cache)
    workspace(root, files, size, source=True)
    log(f"{tag}: source directory of {files} files: generating")
    timed([sys.executable, "gen.py", str(files), str(size)], root)
    time.sleep(RACY_WAIT)  # sources are older than a build, as they would be
    r: dict = {"files": files, "size": size, "first_noop": [], "clean": []}
    for i in range(repeat if not change else 1):
        rm(cache, root / ".buildml")
        log(f"{tag}: source clean build {i + 1}")
        r["clean"].append(bml(root, cache)[0])
        check_count(root, files)
        time.sleep(RACY_WAIT)
        r["first_noop"].append(bml(root, cache)[0])
    r["noop"] = [bml(root, cache)[0] for _ in range(repeat)]
    if change:
        r["changed"], r["reran"], r["summary_reads"] = [], [], None
        for i in range(repeat + 1):
            time.sleep(RACY_WAIT)
            bml(root, cache)  # settled: nothing racy left from the last change
            victim = root / "data" / "d000" / f"f{i:07d}.bin"
            victim.write_bytes(b"changed %07d " % i + victim.read_bytes()[16:])
            if i < repeat:
                t, out = bml(root, cache, "--json")
                s = summary(out)
                r["changed"].append(t)
                r["reran"].append(s.get("executed"))
                extra = {k: v for k, v in s.items() if "read" in k or "hash" in k}
                r["summary_reads"] = extra or r["summary_reads"]
            else:
                r["opened"] = opened_files(root, cache)
        log(f"{tag}: one file changed: {med(r['changed']):.3f} s, files {r['opened']}")
    rm(cache)
    return r


def opened_files(root: Path, cache: Path) -> dict | None:
    """Dataset files (*.bin) one `buildml build` opened, from strace -f: opens for reading of workspace files
    (hashing them, or copying them elsewhere), how many distinct files those were, and files created (copies,
    e.g. into an action's sandbox). Read opens minus copies made is what was read for any other reason."""
    if shutil.which("strace") is None:
        return None
    trace = root.parent / f"{root.name}.strace"
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache)}
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(trace), *BUILDML, "build", "-q"],
                   cwd=root, env=env, capture_output=True, check=True)
    pattern = re.compile(r'open(?:at)?\((?:[^,]+, )?"([^"]+\.bin)", ([A-Z_|]+)[^)]*\) = \d+')
    read, created, read_opens = set(), set(), 0
    with open(trace) as f:
        for line in f:
            m = pattern.search(line)
            if m is None or "O_DIRECTORY" in m.group(2):
                continue
            path, flags = m.group(1), m.group(2)
            if "O_CREAT" in flags or "O_WRONLY" in flags or "O_RDWR" in flags:
                created.add(path)
            elif os.path.join(root, path).startswith(str(root / "data")):
                read.add(path)
                read_opens += 1
    trace.unlink()
    return {"read_opens": read_opens, "read": len(read), "created": len(created)}


# --- the table -------------------------------------------------------------------------------------------------

def table(res: dict, repeat: int) -> str:
    rows = ["| measure | figure | target | met |", "| --- | --- | --- | --- |"]

    def row(name, value, target="", met=None):
        rows.append(f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else '**no**')} |")

    def s(values):
        return f"{med(values):.3f} s"

    def below(name, values, limit, unit="s"):
        row(name, s(values) if unit == "s" else f"{values:.0f} MB", f"< {limit:g} {unit}",
            (med(values) if unit == "s" else values) < limit)

    a = res.get("a")
    if a:
        n = f"{a['files']:,}"
        base = med(a["cp"]) + med(a["hash"])
        row(f"A {n} x 1 KB: clean build (dataset target + consumer)", s(a["clean"]),
            f"<= 3 x (cp -r + hash once) = {3 * base:.3f} s", med(a["clean"]) <= 3 * base)
        row(f"A {n}: `cp -r` + one `{a['hasher']}` pass (baseline)",
            f"{base:.3f} s ({med(a['cp']):.3f} + {med(a['hash']):.3f})")
        row(f"A {n}: clean build / baseline", f"{med(a['clean']) / base:.1f} x", "<= 3 x", med(a["clean"]) <= 3 * base)
        row(f"A {n}: the generator alone (no buildml)", s(a["gen"]))
        below(f"A {n}: first no-op after the build", a["first_noop"], 0.5)
        below(f"A {n}: no-op (repeated)", a["noop"], 0.5)
        row(f"A {n}: no-op, full check (`{NO_CERT}=0`)", s(a["noop_full"]))
        if a["peak"] is not None:
            row(f"A {n}: peak memory, no-op / full check", f"{a['peak']:.0f} / {a['peak_full']:.0f} MB")
        row(f"A {n}: `find data -type f \\| xargs stat` (peer)", s(a["stat"]))
        if a.get("dvc_add"):
            row(f"A {n}: `dvc add data`, first (peer)", s(a["dvc_add"]))
            row(f"A {n}: `dvc status`, first after the add / repeated (peer)",
                f"{s(a['dvc_status_first'])} / {s(a['dvc_status'])}")
    src = res.get("a_source")
    if src:
        n = f"{src['files']:,}"
        row(f"A {n} as a source directory: clean build (hashes every file)", s(src["clean"]))
        row(f"A {n} source: first no-op after the build / repeated", f"{s(src['first_noop'])} / {s(src['noop'])}")
        below(f"A {n} source: one file changed, rebuilt ({src['reran'][-1]} action re-ran)", src["changed"], 2)
        o = src["opened"]
        row(f"A {n} source: dataset files that rebuild read (strace)",
            "n/a (no strace)" if o is None else
            f"{o['read_opens']:,} opens for reading of {o['read']:,} distinct files (of {src['files']:,}); "
            f"{o['created']:,} copies written; read opens beyond the copies: {o['read_opens'] - o['created']:,}")
        if src["summary_reads"]:
            row(f"A {n} source: the build's own count", json.dumps(src["summary_reads"]))
    b = res.get("b")
    if b:
        n = f"{b['files']:,}"
        row(f"B {n} x 1 KB: clean build (once)", s(b["clean"]))
        below(f"B {n}: first no-op after the build", b["first_noop"], 2)
        below(f"B {n}: no-op (repeated)", b["noop"], 2)
        row(f"B {n}: no-op, full check (`{NO_CERT}=0`)", s(b["noop_full"]))
        if b["peak"] is not None:
            below(f"B {n}: peak memory of the no-op (`/usr/bin/time -f %M`)", b["peak"], 1000, "MB")
            below(f"B {n}: peak memory of the no-op, full check", b["peak_full"], 1000, "MB")
        row(f"B {n}: `find data -type f \\| xargs stat` (peer)", s(b["stat"]))
        if b.get("dvc_add"):
            row(f"B {n}: `dvc add data` (peer, once)", s(b["dvc_add"]))
            row(f"B {n}: `dvc status`, first after the add / repeated (peer)",
                f"{s(b['dvc_status_first'])} / {s(b['dvc_status'])}")
    for key, what in (("c", "`dataset` target out"), ("c_source", "source directory")):
        c = res.get(key)
        if not c:
            continue
        gib = c["files"] * c["size"] / 2**30
        first, later = med(c["first_noop"]), med(c["noop"])
        row(f"C {gib:.0f} GiB, {c['files']:,} x 1 MiB, {what}: clean build", s(c["clean"]))
        row(f"C {what}: first no-op after the build / later no-ops", f"{first:.3f} / {later:.3f} s ({first / later:.2f} x)",
            "first no slower than later (within 25 % or 50 ms: timing noise)",
            first <= max(1.25 * later, later + 0.05))
    return "\n".join(rows)


def header(args, repeat: int) -> str:
    probe = subprocess.run([sys.executable, "-c", "import buildml, os; print(os.path.dirname(buildml.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    rev = subprocess.run(["git", "-C", probe, "log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M"],
                         capture_output=True, text=True).stdout.strip() or "not a git checkout"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    argv = " ".join(sys.argv[1:])
    return (f"`python benchmarks/datasets.py {argv}`. Machine: {os.cpu_count()} cores, {mem:.0f} GiB, Python "
            f"{sys.version.split()[0]}, temp data in {args.tmp} ({fs_type(args.tmp)}), warm page cache. buildml: "
            f"{probe} at {rev}. Medians of {repeat} runs. {time.strftime('%Y-%m-%d %H:%M %Z')}.")


def fs_type(path: str) -> str:
    out = subprocess.run(["df", "--output=fstype", path], capture_output=True, text=True).stdout.split()
    return out[-1] if out else "?"


def write_readme(text: str) -> None:
    readme = HERE / "README.md"
    body = readme.read_text()
    if START not in body or END not in body:
        raise SystemExit(f"{readme} has no {START} ... {END} section")
    body = body[:body.index(START) + len(START)] + "\n" + text + body[body.index(END):]
    readme.write_text(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000, help="files of 1 KB in A (default 100,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median); clean builds too")
    ap.add_argument("--big", action="store_true", help="also B: --big-files files of 1 KB (slow)")
    ap.add_argument("--big-files", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("a", "b", "c"), action="append", help="run only these sections")
    ap.add_argument("--no-dvc", action="store_true", help="leave DVC out")
    ap.add_argument("--tmp", default="/tmp", help="where the temporary data goes (same disk as the workspace)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data")
    ap.add_argument("--write-readme", action="store_true", help=f"rewrite {START} ... {END} in benchmarks/README.md")
    args = ap.parse_args()
    as_installed()
    sections = set(args.only or ["a", "c"] + (["b"] if args.big else []))
    work = Path(tempfile.mkdtemp(prefix="buildml-datasets-", dir=args.tmp))
    res: dict = {}
    try:
        if "a" in sections:
            res["a"] = bench_target(work, "a", args.files, 1024, args.repeat, args.repeat, True, True,
                                    0 if args.no_dvc else args.repeat)
            rm(work / "a-target")
            res["a_source"] = bench_source(work, "a", args.files, 1024, args.repeat, change=True)
            rm(work / "a-source")
        if "c" in sections:
            res["c"] = bench_target(work, "c", 2000, 1 << 20, args.repeat, args.repeat, False, False, 0)
            rm(work / "c-target")
            res["c_source"] = bench_source(work, "c", 2000, 1 << 20, args.repeat, change=False)
            rm(work / "c-source")
        if "b" in sections:
            res["b"] = bench_target(work, "b", args.big_files, 1024, args.repeat, 1, False, True,
                                    0 if args.no_dvc else 1)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            rm(work)
    text = f"{header(args, args.repeat)}\n\n{table(res, args.repeat)}\n"
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
