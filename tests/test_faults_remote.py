"""Remote-cache faults, one case each, through a fault-injecting proxy in front of moto: the build completes
locally with one warning, and nothing corrupt enters the local or the remote store."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import WS
from fault_proxy import FaultProxy, blob_reads, record_figures, s3_env
from servers import free_port

TRIALS = int(os.environ.get("BUILDML_FAULT_TRIALS", "2"))  # benchmarks/reliability.py runs more
FAST_TIMEOUTS = "cache:\n  storage_options: {config_kwargs: {connect_timeout: 1, read_timeout: 1, retries: {max_attempts: 1}}}\n"

BUILD = """\
targets:
  data:
    command: python -c "open('data.txt', 'w').write('d' * 5000)"
    outs: [data.txt]
  model:
    command: python -c "open('model.bin', 'wb').write(open('data.txt', 'rb').read() * 3)"
    deps: [data.txt]
    outs: [model.bin]
"""
EXTRA = """\
  fresh:
    command: python -c "open('fresh.txt', 'w').write('{text}' * 300)"
    deps: [model.bin]
    outs: [fresh.txt]
"""


def workspace(tmp_path, name: str, url: str, env: dict, extra: str = "", settings: str = "") -> WS:
    """A small workspace with its own empty local cache, talking to url with env (a proxy's or the server's)."""
    root = tmp_path / name
    root.mkdir()
    (root / "buildml.yaml").write_text(settings)
    (root / "BUILD.yaml").write_text(BUILD + (EXTRA.format(text=extra) if extra else ""))
    ws = WS(root, tmp_path / f"cache-{name}")
    base = ws.env
    ws.env = lambda **more: base(**{"BUILDML_REMOTE_CACHE": url, **env, **more})
    return ws


def build(ws) -> tuple[dict, dict, list, float]:
    """Build with --json: (summary, {target: (status, source)}, warnings, seconds)."""
    start = time.monotonic()
    proc = ws.run("build", "--json", check=0)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    finished = {l["target"]: (l["status"], l.get("source")) for l in lines if l.get("event") == "finished"}
    warned = [l["message"] for l in lines if l.get("event") == "warning"]
    return lines[-1], finished, warned, time.monotonic() - start


def assert_stores_clean(ws, server, url: str) -> None:
    """`buildml cache verify` finds nothing corrupt locally, nor (--remote, straight to the server) remotely."""
    assert "no corrupt entries" in ws.run("cache", "verify", check=0).stdout
    direct = ws.env(**server.env)
    proc = ws.run("cache", "verify", "--remote", env=direct, check=0)
    assert "no corrupt entries" in proc.stdout, proc.stdout


def assert_outputs(ws, extra: str = "") -> None:
    assert ws.read("model.bin") == "d" * 15000
    if extra:
        assert ws.read("fresh.txt") == extra * 300


def seeded(tmp_path, moto_server) -> str:
    """A new bucket holding the results of //:data and //:model (uploaded without faults)."""
    url = moto_server.bucket()
    summary, _, warned, _ = build(workspace(tmp_path, "seed", url, moto_server.env))
    assert summary["executed"] == 2 and not warned
    return url


def remote_names(server, url: str) -> list:
    fs = server.fs()
    path = url.split("://", 1)[1]
    return sorted(fs.find(path)) if fs.exists(path) else []


# -- one case per fault ------------------------------------------------------------------------------
# (fault, requests it hits, buildml.yaml, words the one warning must hold)
CASES = {
    "500 on every request": ("500", None, "", "Internal Server Error"),
    "stall on every request (default timeouts)": ("stall", None, "", "no answer in time"),
    "stall on blob downloads (default timeouts)": ("stall", blob_reads, "", "no answer in time"),
    "truncated body, connection closed": ("truncate", blob_reads, "", "payload is not completed"),
    "flipped byte (checksum header kept)": ("flip", blob_reads, "", "checksum"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_costs_one_warning_and_corrupts_nothing(tmp_path, moto_server, case):
    """Each fault on the remote: the build completes (new work uploaded where possible), one warning, both stores verify."""
    fault, match, settings, words = CASES[case]
    url = seeded(tmp_path, moto_server)
    with FaultProxy(moto_server.endpoint, fault, match=match) as proxy:
        ws = workspace(tmp_path, "faulty", url, s3_env(proxy, moto_server.env), extra="f", settings=settings)
        summary, finished, warned, seconds = build(ws)
    assert summary["failed"] == 0 and proxy.injected > 0, (summary, proxy.log)
    assert len(warned) == 1 and words in warned[0] and "continuing with the local cache" in warned[0], warned
    assert seconds < 60  # a stall costs at most LOOKUP_TIMEOUT_S (30 s) once, not retries x read_timeout
    assert_outputs(ws, "f")
    assert_stores_clean(ws, moto_server, url)


def test_refused_connection(tmp_path, moto_server):
    """Nothing listens at the endpoint: one warning naming the endpoint, the build runs everything locally."""
    url = moto_server.bucket()
    env = {**moto_server.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    ws = workspace(tmp_path, "refused", url, env, extra="r")
    summary, finished, warned, seconds = build(ws)
    assert summary["executed"] == 3 and summary["failed"] == 0
    assert len(warned) == 1 and "Could not connect to the endpoint URL" in warned[0], warned
    assert seconds < 60
    assert_outputs(ws, "r")
    assert_stores_clean(ws, moto_server, url)
    assert remote_names(moto_server, url) == []


def test_403_on_write_keeps_reading(tmp_path, moto_server):
    """Writes refused (a read-only credential): remote hits still restore, one warning, nothing is written."""
    url = seeded(tmp_path, moto_server)
    before = remote_names(moto_server, url)
    with FaultProxy(moto_server.endpoint, "deny-write") as proxy:
        ws = workspace(tmp_path, "reader", url, s3_env(proxy, moto_server.env), extra="w")
        summary, finished, warned, _ = build(ws)
    assert finished == {"//:data": ("cached", "remote"), "//:model": ("cached", "remote"), "//:fresh": ("executed", "local")}
    assert proxy.injected >= 1
    assert len(warned) == 1 and "will not be uploaded" in warned[0], warned
    assert remote_names(moto_server, url) == before
    assert_outputs(ws, "w")
    assert_stores_clean(ws, moto_server, url)
    with FaultProxy(moto_server.endpoint, "deny-write") as proxy:  # an explicit push is refused the same way
        proc = ws.run("cache", "push", env=ws.env(**s3_env(proxy, moto_server.env)))
    assert proc.returncode == 1 and "not pushed: //:fresh (the remote cache failed or refused it" in proc.stdout, \
        proc.stdout + proc.stderr
    assert remote_names(moto_server, url) == before


@pytest.mark.parametrize("fault", ["short", "flip"])
def test_damage_invisible_to_http_is_caught_by_the_digest(tmp_path, moto_server, fault):
    """A short or flipped body whose checksum header is gone (servers without checksums): buildml's own digest check
    rejects it, the targets run locally, the good remote copy stays."""
    url = seeded(tmp_path, moto_server)
    with FaultProxy(moto_server.endpoint, fault, match=blob_reads, strip_checksums=True) as proxy:
        ws = workspace(tmp_path, "damaged", url, s3_env(proxy, moto_server.env))
        summary, finished, warned, _ = build(ws)
    assert proxy.injected > 0 and summary["failed"] == 0
    assert all(status == "executed" for status, _ in finished.values()), finished
    assert warned and all("corrupt (digest mismatch)" in w for w in warned), warned
    assert len(warned) <= 3  # one per damaged blob of the batch, each named; never a failed build
    assert_outputs(ws)
    assert_stores_clean(ws, moto_server, url)


@pytest.mark.parametrize("fault", ["500", "truncate", "flip", "stall"])
def test_intermittent_faults(tmp_path, moto_server, fault):
    """A fault on a random half of the requests, TRIALS seeds: never a failed build, at most one outage warning,
    nothing corrupt in either store, and what was uploaded is complete."""
    url = seeded(tmp_path, moto_server)
    failures, injected = [], 0
    settings = FAST_TIMEOUTS if fault == "stall" else ""
    for trial in range(TRIALS):
        with FaultProxy(moto_server.endpoint, fault, rate=0.5, seed=trial) as proxy:
            ws = workspace(tmp_path, f"t{trial}", url, s3_env(proxy, moto_server.env), extra=f"t{trial}", settings=settings)
            summary, finished, warned, _ = build(ws)
        if summary["failed"] or len(warned) > 1:
            failures.append((trial, summary, warned, proxy.log))
        assert_outputs(ws, f"t{trial}")
        assert_stores_clean(ws, moto_server, url)
        injected += proxy.injected
    record_figures(f"remote: intermittent {fault} (rate 0.5)", trials=TRIALS, failures=len(failures), faults_injected=injected)
    assert failures == [], failures
    assert injected > 0


def test_planted_secret_reaches_no_remote_object(tmp_path, moto_server):
    """A declared secret used by an uploaded action is in no remote object, local blob, manifest or state file."""
    secret = "Remote-Planted-Secret-5e1f"
    url = moto_server.bucket()
    ws = workspace(tmp_path, "secret", url, {**moto_server.env, "API_TOKEN": secret})
    (ws.root / "BUILD.yaml").write_text(BUILD + """\
  uses_token:
    command: 'echo "token $API_TOKEN"; test ${#API_TOKEN} -gt 10 && echo ok > ok.txt'
    secrets: [API_TOKEN]
    outs: [ok.txt]
""")
    summary, _, warned, _ = build(ws)
    assert summary["executed"] == 3 and not warned and ws.read("ok.txt") == "ok\n"
    fs = moto_server.fs()
    objects = remote_names(moto_server, url)
    assert len(objects) >= 6
    leaked = [o for o in objects if secret.encode() in fs.cat(o)]
    leaked += [str(p) for base in (ws.root, ws.cache) for p in base.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == [], leaked
    assert any(b"token ***" in fs.cat(o) for o in objects if "/cas/" in o), "the masked log was uploaded"


def test_threat_model_is_documented():
    """cache/README.md says who may write, why xxh3-128 is not enough against untrusted writers, and about a
    cryptographic digest setting (there is none: access control is the defence), and how to audit the remote."""
    from conftest import REPO

    text = (REPO / "cache" / "README.md").read_text()
    section = " ".join(text.split("## Threat model", 1)[1].split("\n## ", 1)[0].split())
    for words in ("write access only to trusted builders", "xxh3-128", "not collision-resistant", "no setting", "cryptographic digest",
                  "--no-remote-upload", "read-only credentials", "buildml cache verify --remote", "secrets"):
        assert words in section, words


def test_verify_remote_finds_damage_and_needs_a_remote(tmp_path, moto_server):
    """`cache verify --remote` re-hashes remote blobs: a damaged one is named (exit 1); without a remote, or with
    --repair, it is a usage error (exit 2)."""
    url = seeded(tmp_path, moto_server)
    ws = workspace(tmp_path, "audit", url, moto_server.env)
    assert "no corrupt entries" in ws.run("cache", "verify", "--remote", check=0).stdout
    fs = moto_server.fs()
    blob = next(o for o in remote_names(moto_server, url) if "/cas/" in o and len(fs.cat(o)) == 5000)
    fs.pipe(blob, b"e" * 5000)
    proc = ws.run("cache", "verify", "--remote", check=1)
    assert f"corrupt blob {blob.rsplit('/', 1)[1]}" in proc.stdout
    assert "--repair works on the local cache only" in ws.run("cache", "verify", "--remote", "--repair", check=2).stderr
    local = WS(ws.root, ws.cache)
    assert "no remote cache configured" in local.run("cache", "verify", "--remote", check=2).stderr
