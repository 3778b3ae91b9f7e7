"""Run the reliability suite at its full trial counts and print the figures for tests/RELIABILITY.md.

    python benchmarks/reliability.py            # full counts (about 30-40 minutes on 2 cores)
    python benchmarks/reliability.py --ci       # the CI sizes, as `pytest` runs them
    python benchmarks/reliability.py -k remote  # only the tests whose names match (pytest -k)

Full counts: 20 kill -9 trials, 10 trials per random remote fault, 10 x 3 interrupts of uploads and of `--at`,
10 `docker kill`s, 10,000 targets at -j <cores>, 50 concurrent uploads, 10 minutes of atheris fuzzing.
Each test appends its figures (trials, failures, timings, peak RSS) to a JSON-lines log; the table is printed
at the end and the log kept next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = ["tests/test_crash_safety.py", "tests/test_faults_remote.py", "tests/test_faults_interrupt.py",
         "tests/test_faults_docker.py", "tests/test_load.py", "tests/test_fuzz_loader.py"]
FULL = {"BUILDML_KILL_TRIALS": "20", "BUILDML_CONCURRENT_TRIALS": "15", "BUILDML_FAULT_TRIALS": "10", "BUILDML_INTERRUPT_TRIALS": "10",
        "BUILDML_DOCKER_FAULT_TRIALS": "10", "BUILDML_LOAD_TARGETS": "10000", "BUILDML_LOAD_UPLOADERS": "50",
        "BUILDML_FUZZ_SECONDS": "600"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="the CI sizes instead of the full counts")
    parser.add_argument("-k", dest="keyword", help="only tests matching this pytest -k expression")
    parser.add_argument("--fuzz-seconds", type=int, help="atheris budget (full: 600)")
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp(prefix="buildml-reliability-")) / "figures.jsonl"
    env = {**os.environ, **({} if args.ci else FULL), "BUILDML_RELIABILITY_LOG": str(log)}
    if args.fuzz_seconds:
        env["BUILDML_FUZZ_SECONDS"] = str(args.fuzz_seconds)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", *FILES]
    if args.keyword:
        argv += ["-k", args.keyword]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # started as a background job, SIGINT is ignored
    start = time.monotonic()                                   # and the interrupt tests could not interrupt
    code = subprocess.call(argv, cwd=REPO, env=env)
    print(f"\n{'CI sizes' if args.ci else 'full counts'}: pytest exited {code} after {time.monotonic() - start:.0f} s")
    print_table(log)
    return code


def print_table(log: Path) -> None:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    print("| guarantee | trials | failures | figures |\n| --- | ---: | ---: | --- |")
    for row in rows:
        extra = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("guarantee", "trials", "failures"))
        print(f"| {row['guarantee']} | {row['trials']} | {row['failures']} | {extra} |")
    print(f"(figures log: {log})")


if __name__ == "__main__":
    sys.exit(main())
