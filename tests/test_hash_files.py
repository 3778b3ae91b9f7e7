"""File digests: the one-read path for small files and the mmap path for large ones give xxh3-128 of the bytes."""

import mmap
import os

import pytest
import xxhash

from buildml import hashing
from buildml.hashing import MMAP_MIN, digest_file


@pytest.mark.parametrize("size", [0, 1, 4096, MMAP_MIN - 1, MMAP_MIN, MMAP_MIN + 1, 3 * MMAP_MIN + 17])
def test_digest_is_xxh3_of_the_bytes(tmp_path, size):
    """Whichever path a size takes, the digest is the plain xxh3-128 of the file's bytes."""
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert digest_file(path) == xxhash.xxh3_128_hexdigest(data)


def test_many_mmap_windows(tmp_path, monkeypatch):
    """A file larger than one mapping window is hashed window by window to the same digest."""
    monkeypatch.setattr(hashing, "MMAP_WINDOW", mmap.ALLOCATIONGRANULARITY)
    data = os.urandom(MMAP_MIN + 5 * mmap.ALLOCATIONGRANULARITY + 123)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert digest_file(path) == xxhash.xxh3_128_hexdigest(data)


def test_without_mmap_large_files_are_read(tmp_path, monkeypatch):
    """Where mmap is missing (or fails), large files are read in chunks, same digest."""
    monkeypatch.setattr(hashing, "mmap", None)
    data = os.urandom(3 * MMAP_MIN + 1)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert digest_file(path) == xxhash.xxh3_128_hexdigest(data)


def test_file_that_shrank_after_its_size_was_taken(tmp_path, monkeypatch):
    """A file cut short between fstat and mmap falls back to reading what is there."""
    data = os.urandom(2 * MMAP_MIN)
    path = tmp_path / "f"
    path.write_bytes(data)
    real = hashing._digest_mmap

    def shrink_first(fd, size):
        os.truncate(path, MMAP_MIN // 2)
        return real(fd, size)

    monkeypatch.setattr(hashing, "_digest_mmap", shrink_first)
    assert digest_file(path) == xxhash.xxh3_128_hexdigest(data[: MMAP_MIN // 2])
