"""RemoteStore and TieredStore in-process, against a real moto S3 server on loopback."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from buildml.errors import CacheCorruption
from buildml.hashing import digest_bytes, digest_file
from buildml.store.remote import RemoteStore
from buildml.store.local import LocalStore
from buildml.store.tiered import TieredStore
from servers import start_moto


@pytest.fixture
def remote(moto_server, s3_bucket, monkeypatch) -> RemoteStore:
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    return RemoteStore(s3_bucket)


def _file(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path, digest_bytes(data)


K, K1, K2, K3, K4 = ("%02x" % i * 16 for i in range(5))  # action keys are digests: anything else is refused


def _manifest(key: str, **outputs) -> dict:
    return {"key": key, "exit_code": 0, "outputs": {p: {"digest": d, "size": 1, "exec": False} for p, d in outputs.items()}}


def test_large_blob_round_trip_is_multipart_and_verified(tmp_path, remote):
    """A 20 MB blob goes up in parts and comes back byte-identical through a verified streaming download."""
    data = os.urandom(20 << 20)
    path, digest = _file(tmp_path, "big", data)
    remote.put_file(path, digest)
    assert remote.has_blob(digest) and remote.missing_blobs([digest, "0" * 32]) == {"0" * 32}
    remote.fetch_to(digest, tmp_path / "back")
    assert digest_file(tmp_path / "back") == digest


def test_corrupt_remote_blob_is_refused(tmp_path, remote):
    """A flipped byte on the server is detected on read and on download; the destination is left alone."""
    path, digest = _file(tmp_path, "f", b"good bytes")
    remote.put_file(path, digest)
    remote.fs.pipe(remote.blob_path(digest), b"evil bytes")
    with pytest.raises(CacheCorruption):
        remote.read_bytes(digest)
    (tmp_path / "dest").write_bytes(b"old")
    with pytest.raises(CacheCorruption):
        remote.fetch_to(digest, tmp_path / "dest")
    assert (tmp_path / "dest").read_bytes() == b"old"


def test_manifest_put_if_absent_and_malformed_entries(remote):
    """The first manifest for a key wins (conditional put); private keys are never stored; junk reads as a miss."""
    remote.put_action(K1, {**_manifest(K1), "who": "first", "_source": "remote"})
    remote.put_action(K1, {**_manifest(K1), "who": "second"})
    assert remote.get_action(K1) == {**_manifest(K1), "who": "first"}
    remote.fs.pipe(remote.action_path(K2), b"{not json")
    remote.fs.pipe(remote.action_path(K3), b'{"key": "other"}')
    assert remote.get_action(K2) is None and remote.get_action(K3) is None and remote.get_action(K4) is None


def test_remote_hit_fills_the_local_store(tmp_path, remote):
    """A remote entry restores through the tiered store and lands, blobs and manifest, in the local store."""
    path, digest = _file(tmp_path, "out", b"model bytes")
    remote.put_file(path, digest)
    remote.put_action(K, _manifest(K, **{"m.bin": digest}))
    local = LocalStore(tmp_path / "local")
    tiered = TieredStore(local, remote)
    found = tiered.get_action(K)
    assert found is not None and tiered.tier_of(K) == "remote" and local.get_action(K) is None
    tiered.fetch_to(digest, tmp_path / "m.bin")
    assert (tmp_path / "m.bin").read_bytes() == b"model bytes"
    assert local.has_blob(digest) and local.get_action(K) == _manifest(K, **{"m.bin": digest})
    assert tiered.get_action(K) is not None and tiered.tier_of(K) == "local"


def test_upload_skips_blobs_already_remote_and_repairs_corrupt_ones(tmp_path, remote):
    """Blobs the remote has are not re-sent; a blob found corrupt is overwritten by the next upload."""
    local = LocalStore(tmp_path / "local")
    warned = []
    tiered = TieredStore(local, remote, warn=warned.append)
    path, digest = _file(tmp_path, "out", b"the real output")
    local.put_file(path, digest)
    remote.fs.pipe(remote.blob_path(digest), b"stand-in")
    tiered.put_action(K, _manifest(K, **{"o": digest}))
    assert remote.fs.cat(remote.blob_path(digest)) == b"stand-in"  # not re-uploaded

    fresh = TieredStore(LocalStore(tmp_path / "fresh"), remote, warn=warned.append)
    assert fresh.get_action(K) is not None
    with pytest.raises(CacheCorruption):
        fresh.fetch_to(digest, tmp_path / "o")
    assert not (tmp_path / "o").exists() and not fresh.local.has_blob(digest)
    assert fresh.get_action(K) is None and len(warned) == 1 and "corrupt" in warned[0]
    fresh.local.put_file(path, digest)
    fresh.put_action(K2, _manifest(K2, **{"o": digest}))
    assert remote.fs.cat(remote.blob_path(digest)) == b"the real output"


def test_batch_download_with_one_missing_blob(tmp_path, remote):
    """A batch naming a blob the remote lacks still returns every blob it has, intact."""
    items = [_file(tmp_path, f"f{i}", bytes([i]) * 1000) for i in range(5)]
    remote.put_files(items)
    got = remote.download([d for _, d in items] + ["cd" * 16], tmp_path / "dl")
    assert sorted(got) == sorted(d for _, d in items)
    assert all(digest_file(p) == d for d, p in got.items())


def test_entry_with_a_missing_blob_is_not_offered_again(tmp_path, remote):
    """A remote manifest whose blob vanished gives BlobMissing once, then counts as a miss."""
    from buildml.store.local import BlobMissing

    remote.put_action(K, _manifest(K, **{"gone.bin": "ab" * 16}))
    tiered = TieredStore(LocalStore(tmp_path / "local"), remote)
    assert tiered.get_action(K) is not None and tiered.has_blob("ab" * 16)
    with pytest.raises(BlobMissing):
        tiered.fetch_to("ab" * 16, tmp_path / "gone.bin")
    assert tiered.get_action(K) is None and not tiered.has_blob("ab" * 16) and tiered.remote_ok


def test_outage_warns_once_across_threads(tmp_path, monkeypatch):
    """Sixteen concurrent lookups against a stopped server produce one warning and plain misses."""
    server = start_moto()
    server.stop()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    warned = []
    tiered = TieredStore(LocalStore(tmp_path / "local"), RemoteStore("s3://gone/cache"), warn=warned.append)
    with ThreadPoolExecutor(16) as pool:
        found = list(pool.map(tiered.get_action, ["%032x" % i for i in range(16)]))
    assert found == [None] * 16 and len(warned) == 1 and not tiered.remote_ok


def test_file_url_store_writes_atomically(tmp_path):
    """On a plain directory, blobs and manifests appear under their final names with no leftovers."""
    remote = RemoteStore(f"file://{tmp_path / 'shared'}")
    path, digest = _file(tmp_path, "f", b"abc")
    remote.put_file(path, digest)
    remote.put_action(K, {"key": K})
    names = sorted(p.name for p in (tmp_path / "shared").rglob("*") if p.is_file())
    assert names == sorted([digest, K]) and remote.read_bytes(digest) == b"abc"

