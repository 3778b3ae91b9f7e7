"""`.dockerignore` semantics (Docker's, not .gitignore's) on pathspec, and the image rule's analysis."""

import pytest

from buildml.executors.docker.dockerignore import biggest, filter_context, matcher, to_gitwildmatch


@pytest.mark.parametrize("patterns,path,excluded", [
    (["data"], "data/x.csv", True),                 # a directory pattern excludes everything under it
    (["data"], "sub/data/x.csv", False),            # patterns are anchored at the context root
    (["*.pyc"], "a.pyc", True),
    (["*.pyc"], "pkg/a.pyc", False),                # unlike .gitignore: no match at any depth
    (["**/*.pyc"], "pkg/deep/a.pyc", True),
    (["**/*.pyc"], "a.pyc", True),                  # ** matches zero directories
    (["data", "!data/keep.txt"], "data/keep.txt", False),  # re-include under an excluded directory
    (["data", "!data/keep.txt"], "data/other.txt", True),
    (["!a.txt", "*.txt"], "a.txt", True),           # the last matching line wins
    (["/secrets/"], "secrets/token", True),        # leading / and trailing / are cleaned away
    (["./build/../out"], "out/model.bin", True),    # patterns are filepath.Clean'ed
    (["# comment", "", "  "], "# comment", False),
    (["data?"], "data1", True),
    (["data?"], "data/1", False),                   # ? never matches /
])
def test_docker_semantics(patterns, path, excluded):
    """Each case is one documented rule of Docker's .dockerignore matching."""
    assert matcher(patterns)(path) is excluded


def test_translation_is_anchored():
    """Every pattern becomes an anchored gitwildmatch pattern; blanks and comments vanish."""
    assert to_gitwildmatch("*.md") == "/*.md"
    assert to_gitwildmatch("!keep.md") == "!/keep.md"
    assert to_gitwildmatch("# note") is None and to_gitwildmatch(".") is None


def test_filter_context_keeps_dockerfile_and_outside_files(tmp_path):
    """Files outside the context are untouched; the Dockerfile and .dockerignore are always kept."""
    (tmp_path / "img").mkdir()
    (tmp_path / "img/.dockerignore").write_text("*\n!app.py\n")
    files = ["img/Dockerfile", "img/.dockerignore", "img/app.py", "img/junk.bin", "other/x.py"]
    assert filter_context(str(tmp_path), "img", "img/.dockerignore", files) == \
        ["img/Dockerfile", "img/.dockerignore", "img/app.py", "other/x.py"]


def test_biggest_groups_by_top_level_entry():
    """The size warning names top-level directories by their total size, biggest first."""
    sizes = {"data/a": 5, "data/b": 6, "model.bin": 10, "src/x.py": 1}
    assert biggest(sizes, 2) == [("data/", 11), ("model.bin", 10)]
