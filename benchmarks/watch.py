"""`buildml watch` latency: from saving one leaf source to its rebuilt output and the build's summary line, on the
synthetic DAG (benchmarks/synth.py), against `buildml build` of the same edit from a cold process.

    python benchmarks/watch.py --n 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synth import PER_PACKAGE, as_installed, generate  # noqa: E402

BUILDML = str(Path(sys.executable).parent / "buildml")


def measure(n: int, repeat: int, work: Path) -> dict:
    root, cache = work / f"watch{n}", work / f"watch-cache{n}"
    shutil.rmtree(root, ignore_errors=True), shutil.rmtree(cache, ignore_errors=True)
    generate(root, n)
    env = {**os.environ, "BUILDML_CACHE_DIR": str(cache)}
    subprocess.run([BUILDML, "build", "-q"], cwd=root, env=env, check=True, capture_output=True)
    leaf = n - 1  # the last layer: nothing depends on it
    src, out = root / f"p{leaf // PER_PACKAGE}" / f"t{leaf}.txt", root / f"p{leaf // PER_PACKAGE}" / f"t{leaf}.out"
    cold = []
    for i in range(repeat):
        src.write_text(f"cold edit {i}\n")
        start = time.perf_counter()
        subprocess.run([BUILDML, "build", "-q"], cwd=root, env=env, check=True, capture_output=True)
        cold.append(time.perf_counter() - start)
    proc = subprocess.Popen([BUILDML, "watch", "-q"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    _until(lines, "watching", 600)
    to_output, to_summary = [], []
    try:
        for i in range(repeat):
            time.sleep(0.5)
            before = out.stat().st_mtime_ns
            src.write_text(f"watch edit {i}\n")
            start = time.perf_counter()
            while out.stat().st_mtime_ns == before:
                time.sleep(0.002)
            to_output.append(time.perf_counter() - start)
            _until(lines, "1 executed", 60)
            to_summary.append(time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"n": n, "cold_build": statistics.median(cold), "watch_output": statistics.median(to_output),
            "watch_summary": statistics.median(to_summary)}


def _until(lines: queue.Queue, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            continue
        if text in line:
            return
    raise SystemExit(f"watch never printed {text!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="synthetic DAG sizes (default 1000)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    as_installed()
    with tempfile.TemporaryDirectory(prefix="buildml-watch-bench-") as tmp:
        for n in args.n or [1000]:
            r = measure(n, args.repeat, Path(tmp))
            print(f"N={r['n']}: save -> output {r['watch_output'] * 1000:.0f} ms, save -> summary "
                  f"{r['watch_summary'] * 1000:.0f} ms (watch); the same edit with `buildml build`: "
                  f"{r['cold_build'] * 1000:.0f} ms; ratio {r['watch_summary'] / r['cold_build']:.2f}")


if __name__ == "__main__":
    main()
