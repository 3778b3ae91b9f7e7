"""External data deps by URL: pinned in buildml.lock, bytes kept in the store, drift stops the build."""

import shutil

import yaml

from conftest import executed
from test_history import commit, init_repo, short

BUILD = """\
targets:
  concat:
    command: cat {stage}/*.csv > all.csv
    deps: ["{url}"]
    outs: [all.csv]
"""


def _lock(ws) -> dict:
    return yaml.safe_load(ws.read("buildml.lock"))["deps"]


def test_file_urls_pinned_then_drift_stops_the_build(ws, tmp_path):
    """A file:// glob is pinned on first build; an edit stops the next build naming the URL; --update-lock and lock re-pin."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("1,2\n")
    url = f"file://{raw}/*.csv"
    ws.write("BUILD.yaml", BUILD.format(stage=f"external/file{raw}", url=url))
    summary, events = ws.build_json()
    assert executed(events) == ["//:concat"] and ws.read("all.csv") == "1,2\n"
    pins = _lock(ws)[url]
    assert [p["url"] for p in pins] == [f"file://{raw}/a.csv"] and pins[0]["size"] == 4
    summary, _ = ws.build_json()
    assert summary["executed"] == 0
    (raw / "a.csv").touch()
    assert ws.build_json()[0]["executed"] == 0  # touching is not a change

    (raw / "a.csv").write_text("9,9\n")
    proc = ws.run("build", check=2)
    assert f"external data drifted from buildml.lock: file://{raw}/a.csv changed" in proc.stdout
    assert "buildml lock" in proc.stdout and ws.read("all.csv") == "1,2\n"
    assert f"file://{raw}/a.csv changed" in ws.run("status", check=0).stdout

    summary, events = ws.build_json("--update-lock")
    assert executed(events) == ["//:concat"] and ws.read("all.csv") == "9,9\n"
    assert _lock(ws)[url][0]["digest"] != pins[0]["digest"]

    (raw / "b.csv").write_text("3,4\n")
    assert f"file://{raw}/b.csv is new" in ws.run("build", check=2).stdout
    assert ws.run("lock", check=0).stdout.split() == ["updated", url]
    assert [p["url"] for p in _lock(ws)[url]] == [f"file://{raw}/a.csv", f"file://{raw}/b.csv"]
    assert ws.build_json()[0]["executed"] == 1 and ws.read("all.csv") == "9,9\n3,4\n"


def test_unused_pins_are_dropped_and_missing_urls_reported(ws, tmp_path):
    """`buildml lock` drops pins no target reads; a URL that does not exist is a clear error."""
    data = tmp_path / "d.csv"
    data.write_text("x\n")
    ws.write("BUILD.yaml", BUILD.format(stage=f"external/file{tmp_path}", url=f"file://{data}"))
    assert ws.run("lock", check=0).stdout.split() == ["pinned", f"file://{data}"]
    ws.write("BUILD.yaml", BUILD.format(stage="x", url=f"file://{tmp_path}/missing.csv"))
    proc = ws.run("build", check=2)
    assert f"external dep file://{tmp_path}/missing.csv does not exist" in proc.stdout
    ws.write("BUILD.yaml", "targets:\n  t:\n    command: echo > t\n    outs: [t]\n")
    assert ws.run("lock", check=0).stdout.split() == ["removed", f"file://{data}"]
    assert _lock(ws) == {}


def test_s3_drift_names_the_url_and_old_commits_build_from_pinned_bytes(ws, moto_server):
    """Changing the object behind a pinned s3:// URL stops the build; --at the old commit still builds from the store."""
    fs = moto_server.fs()
    bucket = moto_server.bucket("raw").split("://", 1)[1]
    fs.pipe(f"{bucket}/train.csv", b"a,b\n1,2\n")
    url = f"s3://{bucket}/train.csv"
    env = ws.env(**moto_server.env)
    init_repo(ws.root)
    ws.write("BUILD.yaml", f"""\
        targets:
          rows:
            command: wc -l < external/s3/{bucket}/train.csv > rows.txt
            deps: ["{url}"]
            outs: [rows.txt]
    """)
    proc = ws.run("build", env=env, check=0)
    assert "pinned" in proc.stdout and ws.read("rows.txt").strip() == "2"
    pin = _lock(ws)[url][0]
    assert pin["etag"] and pin["size"] == 8
    old = commit(ws.root, "pinned")

    fs.pipe(f"{bucket}/train.csv", b"a,b\n1,2\n3,4\n")
    proc = ws.run("build", env=env, check=2)
    assert f"external data drifted from buildml.lock: {url} changed (size 8 -> 12, etag {pin['etag']} -> " in proc.stdout

    proc = ws.run("build", "--json", "--at", old, env=env, check=0)
    assert '"executed": 0' in proc.stdout
    shutil.rmtree(ws.cache)
    proc = ws.run("build", "--at", old, env=env, check=2)  # no cache, and the bucket no longer has the pinned bytes
    assert f"the bytes buildml.lock pins for {url} are not in the cache" in proc.stdout

    ws.run("build", "--update-lock", env=env, check=0)
    assert ws.read("rows.txt").strip() == "3"
    fs.pipe(f"{bucket}/train.csv", b"a,b\n1,2\n")  # the old object is back (e.g. restored from versioning)
    shutil.rmtree(ws.root / "buildml-out")
    summary = ws.run("build", "--json", "--at", old, env=env, check=0).stdout
    assert '"executed": 1' in summary
    assert (ws.root / "buildml-out" / f"@{short(ws.root, old)}" / "rows.txt").read_text().strip() == "2"


def test_a_broken_lock_file_is_a_clear_error(ws, tmp_path):
    """A lock file that is not buildml's format (e.g. a merge conflict) stops the build with a hint."""
    data = tmp_path / "d.csv"
    data.write_text("x\n")
    ws.write("BUILD.yaml", BUILD.format(stage=f"external/file{tmp_path}", url=f"file://{data}"))
    ws.write("buildml.lock", "<<<<<<< HEAD\nversion: 1\n")
    proc = ws.run("build", check=2)
    assert "buildml.lock" in proc.stdout + proc.stderr and "buildml lock" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_pinned_bytes_travel_through_the_remote_cache(ws, moto_server, s3_bucket):
    """External bytes go to the remote cache, so --at an old commit works with no local store after the bucket changed."""
    fs = moto_server.fs()
    data = moto_server.bucket("raw").split("://", 1)[1]
    fs.pipe(f"{data}/x.csv", b"1\n2\n3\n")
    env = ws.env(BUILDML_REMOTE_CACHE=s3_bucket, **moto_server.env)
    init_repo(ws.root)
    ws.write("BUILD.yaml", f"""\
        targets:
          rows:
            command: wc -l < external/s3/{data}/x.csv > rows.txt
            deps: ["s3://{data}/x.csv"]
            outs: [rows.txt]
    """)
    ws.run("build", env=env, check=0)
    old = commit(ws.root, "pinned")
    fs.pipe(f"{data}/x.csv", b"changed\n")
    shutil.rmtree(ws.cache)
    summary = ws.run("build", "--json", "--at", old, env=env, check=0).stdout
    assert '"executed": 0' in summary
    assert (ws.root / "buildml-out" / f"@{short(ws.root, old)}" / "rows.txt").read_text().strip() == "3"
