"""`--download=minimal` (Bazel's build without the bytes): with a warm remote cache, only the outputs of the targets
asked for are fetched and written; an intermediate result's bytes come only when an action that runs reads them.
moto's S3 server, the real CLI."""

from __future__ import annotations

import json
import shutil

from conftest import WS, executed

BUILD = """\
targets:
  prep:
    command: mkdir -p out && head -c 300000 /dev/urandom > out/features.bin
    outs: [out/features.bin]
  train:
    command: mkdir -p out && (cat out/features.bin; echo model) > out/model.bin
    deps: [out/features.bin]
    outs: [out/model.bin]
  eval:
    command: mkdir -p out && wc -c < out/model.bin > out/score.txt
    deps: [out/model.bin]
    outs: [out/score.txt]
"""


def blobs(cache) -> set:
    return {p.name for p in (cache / "cas").glob("*/*")} if (cache / "cas").is_dir() else set()


def events(ws: WS, env: dict, *args) -> list:
    proc = ws.run("build", "--json", *args, env=env, check=0)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"') and '"finished"' in line]


def test_only_the_asked_outputs_are_fetched(tmp_path, moto_server, s3_bucket):
    producer = WS(tmp_path / "ci", tmp_path / "cache-ci")
    producer.write("buildml.yaml", "")
    producer.write("BUILD.yaml", BUILD)
    remote = {"BUILDML_REMOTE_CACHE": s3_bucket, **moto_server.env}
    producer.run("build", env=producer.env(**remote), check=0)
    features = (producer.root / "out/features.bin").read_bytes()
    model = (producer.root / "out/model.bin").read_bytes()

    ws = WS(tmp_path / "dev", tmp_path / "cache-dev")
    shutil.copytree(producer.root, ws.root, ignore=shutil.ignore_patterns(".buildml", "out"))
    env = ws.env(**remote)
    finished = events(ws, env, "--download=minimal", "//:eval")
    assert {e["target"]: e["status"] for e in finished} == {"//:prep": "cached", "//:train": "cached",
                                                             "//:eval": "cached"}
    assert ws.read("out/score.txt") == producer.read("out/score.txt")
    assert not (ws.root / "out/model.bin").exists() and not (ws.root / "out/features.bin").exists()
    from buildml.hashing import digest_bytes

    assert digest_bytes(model) not in blobs(ws.cache) and digest_bytes(features) not in blobs(ws.cache)

    ws.write("BUILD.yaml", BUILD.replace("wc -c <", "wc -c < out/model.bin && wc -l <"))  # eval must run again
    finished = events(ws, env, "--download=minimal", "//:eval")
    assert executed(finished) == ["//:eval"]
    assert digest_bytes(model) in blobs(ws.cache)  # read by the action that ran: fetched then
    assert digest_bytes(features) not in blobs(ws.cache)  # nobody read it
    assert not (ws.root / "out/model.bin").exists()

    finished = events(ws, env, "//:eval")  # the default downloads everything again
    assert executed(finished) == [] and (ws.root / "out/features.bin").read_bytes() == features
