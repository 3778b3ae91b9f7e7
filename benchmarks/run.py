"""Run the buildml benchmark suite and write the figures into benchmarks/README.md.

    python benchmarks/run.py            # everything (about 15 minutes on 2 cores)
    python benchmarks/run.py --quick    # N=100/1000 only, small dataset

Every figure is the median of several whole-process runs, timed from the shell's point of view.
"""

from __future__ import annotations

import argparse
import os
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
NO_CERT = "BUILDML_NOOP_CERTIFICATE"  # set to 0: every no-op loads and checks everything (buildml/noop.py)
TARGETS = {
    "noop_10000": 1.0, "noop_1000": 0.3, "dataset_noop": 0.2, "help": 0.15, "per_action_ms": 5.0,
}


def run(args, cwd, env, check=True) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"{args} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def median_of(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def executed_count(stdout: str) -> int:
    import json
    last = [l for l in stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(last)["executed"]


def bench_synthetic(n: int, work: Path, repeat: int) -> dict:
    root, cache = work / f"synth{n}", work / f"cache{n}"
    shutil.rmtree(root, ignore_errors=True), shutil.rmtree(cache, ignore_errors=True)
    generate(root, n)
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache)}
    clean, _ = run([BUILDML, "build", "-q", "//..."], root, env)
    time.sleep(2.1)  # let the racy-timestamp window pass, as it would between real edits
    full_env = {**env, NO_CERT: "0"}
    full = median_of(lambda: run([BUILDML, "build", "-q", "//..."], root, full_env)[0], repeat)
    run([BUILDML, "build", "-q", "//..."], root, env)  # a full no-op that writes the no-op certificate
    noop = median_of(lambda: run([BUILDML, "build", "-q", "//..."], root, env)[0], repeat)
    peak = peak_memory([BUILDML, "build", "-q", "//..."], root, full_env)
    src = root / "p0" / "t0.txt"
    changes = []
    for i in range(repeat):
        src.write_text(f"changed {i}\n")
        t, out = run([BUILDML, "build", "--json", "//..."], root, env)
        changes.append((t, executed_count(out)))
    touched = []
    for _ in range(repeat):
        os.utime(src)
        t, out = run([BUILDML, "build", "--json", "//..."], root, env)
        touched.append((t, executed_count(out)))
    return {"n": n, "clean": clean, "noop": noop, "noop_full": full, "peak_mb": peak,
            "changed": statistics.median(t for t, _ in changes), "changed_reran": changes[-1][1],
            "touched": statistics.median(t for t, _ in touched), "touched_reran": touched[-1][1]}


def bench_dataset(work: Path, files: int, size: int, repeat: int) -> dict:
    root, cache = work / "dataset", work / "dataset-cache"
    shutil.rmtree(root, ignore_errors=True), shutil.rmtree(cache, ignore_errors=True)
    (root / "raw").mkdir(parents=True)
    (root / "buildml.yaml").write_text("")
    (root / "BUILD.yaml").write_text(
        "targets:\n  count:\n    command: ls raw | wc -l > count.txt\n    deps: [raw/]\n    outs: [count.txt]\n")
    block = os.urandom(size)
    for i in range(files):
        (root / "raw" / f"f{i:05d}.bin").write_bytes(block[i % 251:] + block[:i % 251])
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache)}
    first, _ = run([BUILDML, "build", "-q"], root, env)
    time.sleep(2.1)
    run([BUILDML, "build", "-q"], root, env)  # records the stat cache (and the no-op certificate)
    full = median_of(lambda: run([BUILDML, "build", "-q"], root, {**env, NO_CERT: "0"})[0], repeat)
    noop = median_of(lambda: run([BUILDML, "build", "-q"], root, env)[0], repeat)
    (root / "raw" / "f00000.bin").write_bytes(os.urandom(size))
    changed, _ = run([BUILDML, "build", "-q"], root, env)
    return {"files": files, "bytes": files * size, "first": first, "noop": noop, "noop_full": full, "changed": changed,
            "root": root}


def bench_hashing(root: Path, repeat: int) -> dict:
    files = sorted(str(p) for p in (root / "raw").iterdir())
    total = sum(os.path.getsize(f) for f in files)
    code = ("import sys, tempfile, time; from buildml.engine.hasher import Hasher; from buildml.engine.state import State\n"
            "files = sys.argv[1:]; h = Hasher(State(tempfile.mkdtemp())); t = time.perf_counter(); h.files(files)\n"
            "print(time.perf_counter() - t)")
    inside = []

    def ours():
        elapsed, out = run([sys.executable, "-c", code, *files], root, os.environ)
        inside.append(float(out))
        return elapsed

    out = {"bytes": total, "buildml": total / median_of(ours, repeat)}
    out["in_process"] = total / statistics.median(inside)
    for name in ("xxhsum", "sha256sum"):
        if shutil.which(name):
            tool_args = [name, "-H2", *files] if name == "xxhsum" else [name, *files]
            out[name] = total / median_of(lambda tool_args=tool_args: run(tool_args, root, os.environ)[0], repeat)
    return out


def bench_overheads(work: Path, repeat: int) -> dict:
    help_time = median_of(lambda: run([BUILDML, "--help"], work, os.environ)[0], repeat)
    root, cache = work / "trivial", work / "trivial-cache"
    shutil.rmtree(root, ignore_errors=True), shutil.rmtree(cache, ignore_errors=True)
    root.mkdir()
    (root / "buildml.yaml").write_text("")
    n = 1000
    (root / "BUILD.yaml").write_text("targets:\n" + "".join(f"  t{i}:\n    command: 'true {i}'\n" for i in range(n)))  # distinct keys
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache)}
    clean, _ = run([BUILDML, "build", "-q", "-j", "1"], root, env)
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["sh", "-c", "true"], check=True)
    commands = time.perf_counter() - start
    noop, _ = run([BUILDML, "build", "-q", "-j", "1"], root, {**env, NO_CERT: "0"})
    return {"help": help_time, "per_action_ms": (clean - noop) / n * 1000, "spawn_ms": commands / n * 1000}


def peak_memory(args, cwd, env) -> float | None:
    """Peak resident memory of one run in MB (GNU time's %M), or None without /usr/bin/time."""
    if not os.path.exists("/usr/bin/time"):
        return None
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *args], cwd=cwd, env=env, capture_output=True, text=True)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, Python {sys.version.split()[0]}"


def table(results: dict) -> str:
    rows = ["| measure | figure | target | met |", "| --- | --- | --- | --- |"]

    def row(name, value, unit, target=None):
        met = "" if target is None else ("yes" if value <= target else "**no**")
        tgt = "" if target is None else f"< {target:g} {unit}"
        rows.append(f"| {name} | {value:.3f} {unit} | {tgt} | {met} |")

    for r in results["synthetic"]:
        n = r["n"]
        row(f"N={n}: clean build", r["clean"], "s")
        row(f"N={n}: no-op build", r["noop"], "s", {10000: 1.0, 1000: 0.3}.get(n))
        row(f"N={n}: no-op, full check (no certificate: first no-op after a change)", r["noop_full"], "s")
        rows.append(f"| N={n}: one source changed near the root | {r['changed']:.3f} s ({r['changed_reran']} actions re-ran) | | |")
        rows.append(f"| N={n}: one source touched, unchanged | {r['touched']:.3f} s ({r['touched_reran']} actions re-ran) | | |")
    d = results.get("dataset")
    if d:
        gb = d["bytes"] / 1e9
        row(f"dataset {d['files']} files / {gb:.1f} GB: first build", d["first"], "s")
        row("dataset: no-op", d["noop"], "s", 0.2)
        row("dataset: no-op, full check (no certificate)", d["noop_full"], "s")
        row("dataset: one file changed", d["changed"], "s")
    h = results.get("hashing")
    if h:
        rows.append(f"| hashing throughput, buildml in process (warm page cache) | {h['in_process'] / 1e9:.2f} GB/s | | |")
        for name in ("buildml", "xxhsum", "sha256sum"):
            if name in h:
                rows.append(f"| hashing throughput, {name} whole process (warm page cache) | {h[name] / 1e9:.2f} GB/s | | |")
        if "xxhsum" in h:
            ratio = h["buildml"] / h["xxhsum"]
            rows.append(f"| buildml / xxhsum | {ratio:.0%} | >= 80% | {'yes' if ratio >= 0.8 else '**no**'} |")
    for r in results["synthetic"]:
        if r["n"] == 10000 and r["peak_mb"] is not None:
            rows.append(f"| peak memory, 10,000-target no-op, full check (`/usr/bin/time -f %M`) | {r['peak_mb']:.0f} MB "
                        f"| < 500 MB | {'yes' if r['peak_mb'] < 500 else '**no**'} |")
    o = results["overheads"]
    row("`buildml --help`", o["help"], "s", 0.15)
    rows.append(f"| per action, 1,000 trivial targets at -j1: (clean - no-op) / 1,000 | {o['per_action_ms']:.2f} ms "
                f"(of which spawning `sh -c true` alone: {o['spawn_ms']:.2f} ms) | < 5 ms overhead | "
                f"{'yes' if o['per_action_ms'] - o['spawn_ms'] < 5 else '**no**'} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print the table without updating README.md")
    args = ap.parse_args()
    as_installed()
    work = Path(tempfile.mkdtemp(prefix="buildml-bench-"))
    sizes = (100, 1000) if args.quick else (100, 1000, 10000)
    results = {"synthetic": [bench_synthetic(n, work, args.repeat) for n in sizes]}
    files, size = (200, 1 << 20) if args.quick else (2000, 1 << 20)
    results["dataset"] = bench_dataset(work, files, size, args.repeat)
    results["hashing"] = bench_hashing(results["dataset"]["root"], args.repeat)
    results["overheads"] = bench_overheads(work, args.repeat)
    text = f"Machine: {machine()}. Medians of {args.repeat} runs. {time.strftime('%Y-%m-%d')}.\n\n{table(results)}\n"
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        readme = HERE / "README.md"
        body = readme.read_text() if readme.exists() else ""
        start, end = "<!-- figures:start -->", "<!-- figures:end -->"
        if start in body:
            body = body[:body.index(start) + len(start)] + "\n" + text + body[body.index(end):]
            readme.write_text(body)


if __name__ == "__main__":
    main()
