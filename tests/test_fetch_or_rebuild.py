"""Fetch or rebuild by cost: a remote hit whose download would take far longer than its recorded run is rebuilt here,
a small one is fetched, one that needs a GPU this machine lacks is always fetched; each decision with its figures
in `explain`. moto's S3 server behind a loopback proxy limiting blob downloads to 1 MB/s, the real CLI."""

from __future__ import annotations

import json
import shutil

from conftest import WS, executed
from fault_proxy import FaultProxy, blob_reads, s3_env

BUILD = """\
targets:
  warm:
    command: head -c 1000000 /dev/urandom > warm.bin
    outs: [warm.bin]
    cache: {prefer: fetch}
  big:
    command: head -c 6000000 /dev/urandom > big.bin
    outs: [big.bin]
  small:
    command: sleep 1.5 && head -c 10000 /dev/urandom > small.bin
    outs: [small.bin]
  gpu:
    command: head -c 6000000 /dev/urandom > gpu.bin
    outs: [gpu.bin]
    resources: {gpus: 1}
"""


def explain(ws: WS, target: str, env: dict) -> dict:
    proc = ws.run("explain", "--json", target, env=env, check=0)
    return json.loads(proc.stdout.splitlines()[-1])


def test_large_cheap_rebuilt_small_fetched_gpu_fetched(tmp_path, moto_server, s3_bucket):
    producer = WS(tmp_path / "producer", tmp_path / "cache-producer")
    producer.write("buildml.yaml", "")
    producer.write("BUILD.yaml", BUILD)
    direct = {"BUILDML_REMOTE_CACHE": s3_bucket, **moto_server.env}
    for _ in range(3):  # a GPU box fills the cache; its targets upload the same (empty) log blob at once
        shutil.rmtree(producer.cache, ignore_errors=True)
        shutil.rmtree(producer.root / ".buildml", ignore_errors=True)
        made = producer.run("build", "-j", "4", env=producer.env(CUDA_VISIBLE_DEVICES="0", **direct), check=0)
        assert "continuing with the local cache only" not in made.stdout + made.stderr  # a lost race is no outage

    ws = WS(tmp_path / "here", tmp_path / "cache-here")
    shutil.copytree(producer.root, ws.root, ignore=shutil.ignore_patterns(".buildml", "*.bin"))
    with FaultProxy(moto_server.endpoint, "throttle", match=blob_reads, bytes_per_s=1e6) as proxy:
        env = ws.env(**{**direct, **s3_env(proxy, moto_server.env)})
        env.pop("CUDA_VISIBLE_DEVICES", None)
        proc = ws.run("build", "--json", "//:warm", env=env, check=0)  # cache.prefer: fetch; measures the link
        assert '"executed": 0' in proc.stdout.splitlines()[-1]
        assert "bandwidth.json" in {p.name for p in ws.cache.iterdir()}

        big, small, gpu = (explain(ws, t, env) for t in ("//:big", "//:small", "//:gpu"))
        assert big["status"] == "stale", big
        assert any("runs here instead of fetching: fetching 6.0 MB at" in r and "its recorded run" in r
                   for r in big["reasons"]), big
        assert any(r.startswith("fetched from the remote cache: fetching 10000 bytes") for r in small["reasons"]), small
        assert any("cannot run here" in r and "gpus" in r for r in gpu["reasons"]), gpu

        proc = ws.run("build", "--json", "//...", env=env, check=0)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        finished = [e for e in lines if e.get("event") == "finished"]
        assert executed(finished) == ["//:big"], finished
        assert {e["target"]: e["status"] for e in finished}["//:gpu"] == "cached"
    assert (ws.root / "gpu.bin").read_bytes() == (producer.root / "gpu.bin").read_bytes()
    assert (ws.root / "small.bin").read_bytes() == (producer.root / "small.bin").read_bytes()
