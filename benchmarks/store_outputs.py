"""Cost of storing outputs by copy (what buildml does) vs by rename (the old way), through LocalStore.put_file.

Usage: python benchmarks/store_outputs.py DIR [REPEATS]   (DIR on the cache's file system; needs ~3 GB free)
Each trial writes fresh outputs (not yet synced, as an action leaves them) and stores them into a fresh store:
one 1 GiB file, then 10,000 files of 4 KiB. Prints the median seconds of each way.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time

from buildml.hashing import digest_file
from buildml.store.local import LocalStore


def outputs(root: str, count: int, size: int) -> list[str]:
    os.makedirs(root)
    block = os.urandom(min(size, 1 << 20))
    paths = []
    for i in range(count):
        path = os.path.join(root, f"f{i}")
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.write(os.urandom(16))  # every file distinct
        paths.append(path)
    return paths


def trial(base: str, count: int, size: int, way: str) -> float:
    shutil.rmtree(base, ignore_errors=True)
    store = LocalStore(os.path.join(base, "cache"))
    paths = outputs(os.path.join(base, "out"), count, size)
    start = time.perf_counter()
    for path in paths:
        if way == "rename":
            store.put_file(path, digest_file(path), move=True)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                store.put_file(fd)
            finally:
                os.close(fd)
    took = time.perf_counter() - start
    shutil.rmtree(base)
    return took


def main() -> None:
    base, repeats = os.path.join(sys.argv[1], "store-outputs"), int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for count, size, what in ((1, 1 << 30, "1 GiB file"), (10_000, 4096, "10,000 x 4 KiB")):
        times = {way: [] for way in ("rename", "copy")}
        for _ in range(repeats):
            for way in times:  # interleaved, so drift hits both
                times[way].append(trial(base, count, size, way))
        print(f"{what}: " + ", ".join(f"{w} {statistics.median(t):.2f} s" for w, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
