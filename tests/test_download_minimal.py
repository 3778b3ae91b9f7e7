"""`--download=minimal` (Bazel's build without the bytes): with a warm remote cache, only the outputs of the targets
asked for are fetched and written; an intermediate result's bytes come only when an action that runs reads them.
moto's S3 server, the real CLI; what is fetched is counted both in the clone's local cache and in the requests the
server answered (moto's request recorder)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from urllib.parse import parse_qs

from conftest import WS, executed

from buildml.hashing import digest_bytes

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


def produce(tmp_path, moto_server, s3_bucket) -> tuple[WS, dict, dict]:
    """CI builds everything into the remote cache: (its workspace, the remote env, {output path: manifest} as the
    server holds them, read before any recording)."""
    producer = WS(tmp_path / "ci", tmp_path / "cache-ci")
    producer.write("buildml.yaml", "")
    producer.write("BUILD.yaml", BUILD)
    remote = {"BUILDML_REMOTE_CACHE": s3_bucket, **moto_server.env}
    producer.run("build", env=producer.env(**remote), check=0)
    fs, root = moto_server.fs(), s3_bucket.split("://", 1)[1]
    manifests = {}
    for path in fs.find(f"{root}/ac"):
        manifest = json.loads(fs.cat_file(path))
        assert manifest["key"] == path.rsplit("/", 1)[1]
        for out in manifest["outputs"]:
            manifests[out] = manifest
    assert sorted(manifests) == ["out/features.bin", "out/model.bin", "out/score.txt"]
    for out, manifest in manifests.items():  # the blob a clone would fetch for each output is named by its digest
        assert manifest["outputs"][out]["digest"] == digest_bytes((producer.root / out).read_bytes())
    return producer, remote, manifests


def clone(producer: WS, tmp_path, name: str) -> WS:
    ws = WS(tmp_path / name, tmp_path / f"cache-{name}")
    shutil.copytree(producer.root, ws.root, ignore=shutil.ignore_patterns(".buildml", "out"))
    return ws


def fetched(requests: list, s3_bucket: str) -> dict[str, Counter]:
    """The objects GET from the cache on the server, by area: {"ac": Counter(keys), "cas": Counter(digests)}.
    A listing under ac/ or cas/ (s3fs's exists() lists a key HEAD did not find, in case it is a directory) carries
    no object's bytes and is left out; any other GET (another area, another bucket) fails the test."""
    bucket, _, cache = s3_bucket.split("://", 1)[1].partition("/")
    prefix = f"/{bucket}/{cache}/"
    out: dict[str, Counter] = {"ac": Counter(), "cas": Counter()}
    for request in requests:
        if request["method"] != "GET":
            continue
        query = parse_qs(request["query"])
        if request["path"] == f"/{bucket}" and query.get("list-type") == ["2"]:
            assert query["prefix"][0].startswith((f"{cache}/ac/", f"{cache}/cas/")), request
            continue
        rel = request["path"].removeprefix(prefix)
        area, _, name = rel.partition("/")
        assert request["path"].startswith(prefix) and area in out and not request["query"], request
        shard, _, name = name.partition("/")
        assert shard == name[:2], request
        out[area][name] += 1
    return out


def test_only_the_asked_outputs_are_fetched(tmp_path, moto_server, s3_bucket):
    producer, remote, manifests = produce(tmp_path, moto_server, s3_bucket)
    features = (producer.root / "out/features.bin").read_bytes()
    model = (producer.root / "out/model.bin").read_bytes()
    score = (producer.root / "out/score.txt").read_bytes()
    logs = {m["log"] for m in manifests.values() if m.get("log")}

    ws = clone(producer, tmp_path, "dev")
    env = ws.env(**remote)
    with moto_server.recording() as requests:
        finished = events(ws, env, "--download=minimal", "//:eval")
    assert {e["target"]: e["status"] for e in finished} == {"//:prep": "cached", "//:train": "cached",
                                                             "//:eval": "cached"}
    assert ws.read("out/score.txt") == producer.read("out/score.txt")
    assert not (ws.root / "out/model.bin").exists() and not (ws.root / "out/features.bin").exists()
    assert digest_bytes(model) not in blobs(ws.cache) and digest_bytes(features) not in blobs(ws.cache)

    # on the server: the three entries are read, eval's output blob once, the (small) logs at most; the bytes of
    # prep's and train's outputs never leave it
    got = fetched(requests, s3_bucket)
    assert set(got["ac"]) == {m["key"] for m in manifests.values()}
    assert digest_bytes(score) in got["cas"]
    assert set(got["cas"]) - {digest_bytes(score)} <= logs, got["cas"]
    assert digest_bytes(features) not in got["cas"] and digest_bytes(model) not in got["cas"], got["cas"]
    assert set(got["cas"].values()) == {1}, got["cas"]  # each blob fetched once

    ws.write("BUILD.yaml", BUILD.replace("wc -c <", "wc -c < out/model.bin && wc -l <"))  # eval must run again
    with moto_server.recording() as requests:
        finished = events(ws, env, "--download=minimal", "//:eval")
    assert executed(finished) == ["//:eval"]
    assert digest_bytes(model) in blobs(ws.cache)  # read by the action that ran: fetched then
    assert digest_bytes(features) not in blobs(ws.cache)  # nobody read it
    assert not (ws.root / "out/model.bin").exists()
    got = fetched(requests, s3_bucket)
    assert got["cas"][digest_bytes(model)] == 1 and digest_bytes(features) not in got["cas"], got["cas"]

    finished = events(ws, env, "//:eval")  # the default downloads everything again
    assert executed(finished) == [] and (ws.root / "out/features.bin").read_bytes() == features


def test_the_default_fetches_every_blob(tmp_path, moto_server, s3_bucket):
    """The control: the same fresh clone without --download=minimal does fetch prep's and train's output blobs from
    the server, so the counts above can fail."""
    producer, remote, manifests = produce(tmp_path, moto_server, s3_bucket)
    ws = clone(producer, tmp_path, "third")
    with moto_server.recording() as requests:
        finished = events(ws, ws.env(**remote), "//:eval")
    assert {e["status"] for e in finished} == {"cached"} and len(finished) == 3
    got = fetched(requests, s3_bucket)
    assert set(got["ac"]) == {m["key"] for m in manifests.values()}
    for out in ("out/features.bin", "out/model.bin", "out/score.txt"):
        digest = digest_bytes((producer.root / out).read_bytes())
        assert digest in got["cas"], (out, got["cas"])
        assert (ws.root / out).read_bytes() == (producer.root / out).read_bytes()
