"""Time fetching outputs from a warm remote cache (moto S3 on loopback) against a plain fsspec copy.

For N small outputs and one large output, compare:
- buildml: a fresh local store behind the tiered store; look the entry up, then restore every
  output the way the materializer does (verified, batched download into the local store, copy out);
- fsspec: `fs.get([...], [...])` of the same objects from the same server, no verification.

Usage: python benchmarks/remote_fetch.py [--small 500] [--small-size 4096] [--large-mb 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from servers import start_moto  # noqa: E402  (the test suite's moto_server, reused)


def populate(remote, work: Path, small: int, small_size: int, large_mb: int) -> dict:
    """Upload the blobs and one manifest per case; return {case: (key, {path: digest}, bytes)}."""
    from buildml.hashing import digest_file

    cases = {"small": {f"out/s{i:05d}.bin": os.urandom(small_size) for i in range(small)},
             "large": {"out/model.bin": None}}
    src = work / "src"
    src.mkdir()
    made = {}
    for case, files in cases.items():
        outputs, items, total = {}, [], 0
        for rel, data in files.items():
            path = src / rel.replace("/", "_")
            if data is None:
                with open(path, "wb") as f:
                    for _ in range(large_mb):
                        f.write(os.urandom(1 << 20))
            else:
                path.write_bytes(data)
            digest = digest_file(path)
            size = path.stat().st_size
            outputs[rel] = {"digest": digest, "size": size, "exec": False}
            items.append((path, digest))
            total += size
        remote.put_files(items)
        key = f"bench-{case}"
        remote.put_action(key, {"key": key, "exit_code": 0, "outputs": outputs})
        made[case] = (key, outputs, total)
    return made


def fetch_buildml(remote, key: str, work: Path) -> float:
    from buildml.store.local import LocalStore
    from buildml.store.tiered import TieredStore

    dest = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    tiered = TieredStore(LocalStore(dest / "cache"), remote)
    manifest = tiered.get_action(key)
    for rel, meta in manifest["outputs"].items():
        target = dest / "ws" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tiered.fetch_to(meta["digest"], target)
    return time.perf_counter() - start


def fetch_fsspec(remote, outputs: dict, work: Path) -> float:
    dest = Path(tempfile.mkdtemp(dir=work))
    rpaths = [remote.blob_path(m["digest"]) for m in outputs.values()]
    lpaths = [str(dest / rel.replace("/", "_")) for rel in outputs]
    start = time.perf_counter()
    remote.fs.get(rpaths, lpaths)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500, help="number of small outputs")
    parser.add_argument("--small-size", type=int, default=4096, help="bytes per small output")
    parser.add_argument("--large-mb", type=int, default=128, help="size of the large output in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    args = parser.parse_args()

    server = start_moto()
    os.environ.update(server.env)
    try:
        from buildml.store.remote import RemoteStore

        url = server.bucket("bench")
        remote = RemoteStore(url)
        with tempfile.TemporaryDirectory(prefix="buildml-bench-") as tmp:
            work = Path(tmp)
            cases = populate(remote, work, args.small, args.small_size, args.large_mb)
            fetch_buildml(remote, cases["small"][0], work)  # warm the server and the connection pool
            print(f"remote: moto_server on loopback ({url}); median of {args.repeat} runs\n")
            print(f"{'case':<24} {'objects':>8} {'MB':>8} {'buildml s':>10} {'fsspec s':>10} {'ratio':>6}")
            for case, (key, outputs, total) in cases.items():
                ours = statistics.median(fetch_buildml(remote, key, work) for _ in range(args.repeat))
                plain = statistics.median(fetch_fsspec(remote, outputs, work) for _ in range(args.repeat))
                label = f"{len(outputs)} x {args.small_size} B" if case == "small" else f"1 x {args.large_mb} MB"
                print(f"{label:<24} {len(outputs):>8} {total / 1e6:>8.1f} {ours:>10.3f} {plain:>10.3f} {ours / plain:>6.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
