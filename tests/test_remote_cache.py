"""The shared remote cache through the real CLI, against real S3 servers (moto, SeaweedFS) and a GCS emulator."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from conftest import BIN, EXAMPLES, WS, executed
from servers import start_moto

TINY_BUILD = """\
targets:
  data:
    command: python -c "import os; os.makedirs('out', exist_ok=True); open('out/data.txt', 'w').write('x' * 1000)"
    outs: [out/data.txt]
  model:
    command: python -c "import time; time.sleep(SLEEP); open('out/model.bin', 'wb').write(open('out/data.txt', 'rb').read() * 3)"
    deps: [out/data.txt]
    outs: [out/model.bin]
"""


def clone(tmp_path, name: str, remote: str, server, example: bool = True, sleep: float = 0) -> WS:
    """A fresh copy of the quickstart (or a tiny two-step workspace) with its own empty local cache."""
    root = tmp_path / name
    if example:
        shutil.copytree(EXAMPLES / "quickstart", root,
                        ignore=shutil.ignore_patterns(".buildml", "data", "models", "metrics.json"))
    else:
        root.mkdir()
        (root / "buildml.yaml").write_text("")
        (root / "BUILD.yaml").write_text(TINY_BUILD.replace("SLEEP", str(sleep)))
    ws = WS(root, tmp_path / f"cache-{name}")
    base = ws.env
    ws.env = lambda **extra: base(BUILDML_REMOTE_CACHE=remote, **server.env, **extra)
    return ws


def warnings(proc) -> list:
    return [json.loads(l)["message"] for l in proc.stdout.splitlines() if l.startswith('{"event": "warning"')]


def build(ws, *args, check=0):
    """Build with --json; (summary, finished events, warning messages)."""
    proc = ws.run("build", "--json", *args, check=check)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    return lines[-1], [l for l in lines if l.get("event") == "finished"], warnings(proc)


def outputs(ws, paths) -> dict:
    return {p: (ws.root / p).read_bytes() for p in paths}


def remote_objects(server, url: str) -> list:
    fs = server.fs()
    path = url.split("://", 1)[1]
    return sorted(fs.find(path)) if fs.exists(path) else []


class Env:
    """Client environment without a server of ours (a plain directory, a stub, or no remote at all)."""

    def __init__(self, **env):
        self.env = env


QUICKSTART_OUTS = ["data/prepared/train.csv", "data/prepared/test.csv", "models/model.pkl", "metrics.json"]


def test_done_when_scenario(tmp_path, moto_server, s3_bucket):
    """A builds and uploads; fresh B executes nothing with identical bytes; C builds with the server down; a flipped byte never reaches outputs."""
    a = clone(tmp_path, "a", s3_bucket, moto_server)
    summary, events, warned = build(a, "//...")
    assert summary["failed"] == 0 and summary["executed"] >= 3 and not warned
    built = outputs(a, QUICKSTART_OUTS)

    b = clone(tmp_path, "b", s3_bucket, moto_server)
    summary, events, warned = build(b, "//...")
    assert summary["executed"] == 0 and not warned
    assert {e["source"] for e in events if e["status"] == "cached"} == {"remote"}
    assert outputs(b, ["data/prepared/train.csv", "data/prepared/test.csv", "models/model.pkl"]) == \
        {p: built[p] for p in ["data/prepared/train.csv", "data/prepared/test.csv", "models/model.pkl"]}
    assert json.loads(b.read("metrics.json")) == json.loads(built["metrics.json"].decode())

    dead = start_moto()
    dead.stop()
    c = clone(tmp_path, "c", "s3://gone/cache", dead)
    started = time.monotonic()
    summary, events, warned = build(c, "//...")
    assert summary["failed"] == 0 and summary["cached"] == 0 and summary["executed"] >= 3
    assert len(warned) == 1 and "continuing with the local cache" in warned[0], warned
    assert time.monotonic() - started < 120

    fs = moto_server.fs()
    key = json.loads(b.run("explain", "--json", ":train", check=0).stdout)["key"]
    manifest = json.loads(fs.cat(f"{s3_bucket.split('://')[1]}/ac/{key[:2]}/{key}"))
    blob = manifest["outputs"]["models/model.pkl"]["digest"]
    path = f"{s3_bucket.split('://')[1]}/cas/{blob[:2]}/{blob}"
    data = bytearray(fs.cat(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe(path, bytes(data))
    d = clone(tmp_path, "d", s3_bucket, moto_server)
    summary, events, warned = build(d, "//...")
    status = {e["target"]: e["status"] for e in events}
    assert status["//:train"] == "executed" and status["//:prepare"] == "cached"
    assert any("corrupt" in w for w in warned), warned
    assert (d.root / "models/model.pkl").read_bytes() != bytes(data)
    assert (d.root / "models/model.pkl").read_bytes() == built["models/model.pkl"]
    assert fs.cat(path) == built["models/model.pkl"]  # the good copy replaced the corrupt one


def test_server_killed_mid_build(tmp_path):
    """The remote dies while an action runs: the build completes locally with exactly one warning."""
    server = start_moto()
    try:
        url = server.bucket()
        ws = clone(tmp_path, "k", url, server, example=False, sleep=3)
        proc = subprocess.Popen([str(BIN / "buildml"), "build", "--json"], cwd=ws.root, env=ws.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        server.stop()
        out, err = proc.communicate(timeout=180)
    finally:
        server.stop()
    assert proc.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["executed"] == 2 and summary["failed"] == 0
    assert len(warnings(subprocess.CompletedProcess([], 0, out))) == 1
    assert (ws.root / "out/model.bin").read_bytes() == b"x" * 3000


def test_read_only_mode_writes_nothing(tmp_path, moto_server, s3_bucket):
    """--no-remote-upload and cache.upload: false read the remote but never write to it."""
    ws = clone(tmp_path, "ro", s3_bucket, moto_server, example=False)
    summary, _, warned = build(ws, "--no-remote-upload")
    assert summary["executed"] == 2 and not warned
    assert remote_objects(moto_server, s3_bucket) == []

    other = clone(tmp_path, "ro2", s3_bucket, moto_server, example=False)
    (other.root / "buildml.yaml").write_text("cache:\n  upload: false\n")
    build(other)
    assert remote_objects(moto_server, s3_bucket) == []
    summary, _, _ = build(clone(tmp_path, "rw", s3_bucket, moto_server, example=False), "--remote-upload")
    assert len(remote_objects(moto_server, s3_bucket)) == 5  # 2 manifests; blobs: data, model, the empty log both share


def test_a_bucket_that_does_not_exist_costs_one_warning(tmp_path, moto_server):
    """A remote cache URL naming a missing bucket: the build succeeds with one warning naming it (never
    `FAILED ... I/O error`), and so does every later build."""
    ws = clone(tmp_path, "nobucket", "s3://no-such-bucket-here/cache", moto_server, example=False)
    summary, _, warned = build(ws)
    assert summary["executed"] == 2 and summary["failed"] == 0, summary
    assert len(warned) == 1 and "bucket does not exist" in warned[0], warned
    ws.write("BUILD.yaml", TINY_BUILD.replace("SLEEP", "0.1"))
    summary, _, _ = build(ws)
    assert summary["failed"] == 0 and summary["executed"] >= 1, summary


def test_concurrent_builds_upload_the_same_entry(tmp_path, moto_server, s3_bucket):
    """Two clones building at once both succeed; a third gets everything from the remote."""
    first, second = (clone(tmp_path, n, s3_bucket, moto_server, example=False, sleep=1) for n in ("p", "q"))
    procs = [subprocess.Popen([str(BIN / "buildml"), "build", "--json"], cwd=w.root, env=w.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (first, second)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert all(not warnings(subprocess.CompletedProcess([], 0, out)) for out, _ in results)
    third = clone(tmp_path, "r", s3_bucket, moto_server, example=False, sleep=1)
    summary, events, _ = build(third)
    assert summary["executed"] == 0 and {e["source"] for e in events} == {"remote"}
    assert (third.root / "out/model.bin").read_bytes() == b"x" * 3000


def _round_trip(tmp_path, server):
    url = server.bucket()
    first = clone(tmp_path, "one", url, server, example=False)
    summary, _, warned = build(first)
    assert summary["executed"] == 2 and not warned
    second = clone(tmp_path, "two", url, server, example=False)
    summary, events, warned = build(second)
    assert summary["executed"] == 0 and not warned and executed(events) == []
    assert {e["source"] for e in events} == {"remote"}
    assert (second.root / "out/model.bin").read_bytes() == (first.root / "out/model.bin").read_bytes()


def test_seaweedfs_round_trip_and_remote_hit(tmp_path, seaweedfs_server):
    """Against SeaweedFS, a real S3 server: upload, then a remote hit in a clone with an empty local store."""
    _round_trip(tmp_path, seaweedfs_server)


def test_read_only_credentials_warn_once_and_still_read(tmp_path, seaweedfs_server):
    """With SeaweedFS read-only credentials: remote hits still restore, a refused upload warns once, the build succeeds."""
    url = seaweedfs_server.bucket()
    build(clone(tmp_path, "ci", url, seaweedfs_server, example=False))
    before = remote_objects(seaweedfs_server, url)
    reader = Env(**seaweedfs_server.reader_env)
    dev = clone(tmp_path, "dev", url, reader, example=False, sleep=0.1)
    summary, events, warned = build(dev)
    assert {e["target"]: (e["status"], e["source"]) for e in events} == \
        {"//:data": ("cached", "remote"), "//:model": ("executed", "local")}
    assert len(warned) == 1 and "will not be uploaded" in warned[0], warned
    assert remote_objects(seaweedfs_server, url) == before


def test_gcs_round_trip_and_remote_hit(tmp_path, gcs_emulator):
    """Against the GCS emulator through gcsfs: upload, then a remote hit in a clone with an empty local store."""
    _round_trip(tmp_path, gcs_emulator)


def test_file_url_round_trip(tmp_path):
    """A plain directory (file://) works as a shared cache too, configured by env or by cache.remote."""
    url = f"file://{tmp_path / 'shared'}"
    first = clone(tmp_path, "one", url, Env(), example=False)
    build(first)
    second = clone(tmp_path, "two", "", Env(), example=False)
    (second.root / "buildml.yaml").write_text(f"cache:\n  remote: {url}\n")  # the setting instead of the env
    summary, events, _ = build(second)
    assert summary["executed"] == 0 and {e["source"] for e in events} == {"remote"}


def test_push_pull_stats_and_gc(tmp_path, moto_server, s3_bucket):
    """push uploads a read-only build's results, pull fills an empty local cache, stats counts, gc shrinks."""
    ws = clone(tmp_path, "x", s3_bucket, moto_server, example=False)
    build(ws, "--no-remote-upload")
    assert remote_objects(moto_server, s3_bucket) == []
    assert "pushed 2 targets" in ws.run("cache", "push", check=0).stdout
    assert len(remote_objects(moto_server, s3_bucket)) == 5

    other = clone(tmp_path, "y", s3_bucket, moto_server, example=False)
    assert "pulled 2 targets" in other.run("cache", "pull", "//:model", check=0).stdout
    stats = other.run("cache", "stats", check=0).stdout
    assert "3 blobs" in stats and "2 action-cache entries" in stats
    summary, events, _ = build(other)
    assert summary["cached"] == 2 and {e["source"] for e in events} == {"local"}
    assert "hit rate 100%" in other.run("cache", "stats", check=0).stdout

    out = other.run("cache", "gc", "--max-size", "3KB", check=0).stdout
    assert "removed 1 entries" in out, out
    assert "removed 1 entries" in other.run("cache", "gc", "--max-size", "0", check=0).stdout
    assert "0 blobs" in other.run("cache", "stats", check=0).stdout


def test_gc_waits_for_no_running_build(tmp_path):
    """gc refuses while a build holds the cache, then trims once it is done."""
    ws = clone(tmp_path, "g", "", Env(), example=False, sleep=4)
    proc = subprocess.Popen([str(BIN / "buildml"), "build"], cwd=ws.root, env=ws.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    refused = ws.run("cache", "gc", "--max-size", "0", check=1)
    assert "a build is using the cache" in refused.stderr
    assert proc.wait(timeout=60) == 0
    assert "removed 2 entries" in ws.run("cache", "gc", "--max-size", "0", check=0).stdout
    assert "0 blobs" in ws.run("cache", "stats", check=0).stdout


def test_erroring_server_costs_one_warning(tmp_path):
    """A server answering every request with 503 gives one warning; the build executes and succeeds."""
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = do_POST = _fail

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": f"http://127.0.0.1:{httpd.server_address[1]}"}
        ws = clone(tmp_path, "e", "s3://bucket/cache", Env(**env), example=False)
        summary, _, warned = build(ws)
    finally:
        httpd.shutdown()
    assert summary["executed"] == 2 and summary["failed"] == 0
    assert len(warned) == 1 and "Service Unavailable" in warned[0], warned


def test_unusable_url_warns_and_push_needs_a_remote(tmp_path):
    """An unknown URL scheme is one warning, not a failed build; push without any remote is a user error."""
    ws = clone(tmp_path, "u", "", Env(), example=False)
    summary, _, warned = build(ws, "--remote-cache", "nosuch://bucket/cache")
    assert summary["executed"] == 2 and len(warned) == 1 and "Protocol not known" in warned[0], warned
    proc = ws.run("cache", "push", check=2)
    assert "no remote cache configured" in proc.stderr


def test_ci_second_clone_runs_no_test(tmp_path, moto_server, s3_bucket):
    """CI on an unchanged tree: a fresh clone with an empty local store runs no test and builds nothing."""
    a = clone(tmp_path, "ci-a", s3_bucket, moto_server)
    a.run("test", "//...", check=0)
    b = clone(tmp_path, "ci-b", s3_bucket, moto_server)
    proc = b.run("test", "//...", "--json", check=0)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert lines[-1]["executed"] == 0 and lines[-1]["failed"] == 0
    tests = [l for l in lines if l.get("event") == "finished" and l["target"] in ("//:unit_tests", "//:quality_gate")]
    assert len(tests) == 2 and all(t["status"] == "cached" and t["source"] == "remote" for t in tests)
    proc = b.run("test", "//...", check=0)
    assert "every test result came from the cache: nothing ran" in proc.stdout


def test_remote_downloads_report_byte_progress(tmp_path, moto_server, s3_bucket):
    """Restoring from the remote reports byte progress that ends at the total size of what was fetched."""
    a = clone(tmp_path, "p-a", s3_bucket, moto_server)
    build(a, "//...")
    b = clone(tmp_path, "p-b", s3_bucket, moto_server)
    proc = b.run("build", "--json", "//...", check=0)
    transfers = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{"done"') or '"transfer"' in l]
    assert transfers, proc.stdout
    model = (b.root / "models/model.pkl").stat().st_size
    assert any(t["done"] == t["total"] and t["done"] >= model for t in transfers), transfers  # bytes counted by fsspec
    assert all("remote cache" in t["what"] and (t["total"] is None or t["done"] <= t["total"]) for t in transfers)


def test_pull_request_tests_read_but_never_write(tmp_path, moto_server, s3_bucket):
    """`buildml test --no-remote-upload` (CI on a pull request) uses remote hits and uploads nothing."""
    pr = clone(tmp_path, "pr", s3_bucket + "/pr", moto_server)
    pr.run("test", "//...", "--no-remote-upload", check=0)
    assert remote_objects(moto_server, s3_bucket + "/pr") == []
    main = clone(tmp_path, "main", s3_bucket + "/pr", moto_server)
    main.run("test", "//...", "--remote-upload", check=0)
    assert remote_objects(moto_server, s3_bucket + "/pr") != []
    pr2 = clone(tmp_path, "pr2", s3_bucket + "/pr", moto_server)
    proc = pr2.run("test", "//...", "--no-remote-upload", check=0)
    assert "every test result came from the cache" in proc.stdout
