"""`.dockerignore` semantics (Docker's, not .gitignore's), checked against docker-py, and the image rule's analysis."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildml.executors.docker.dockerignore import Pattern, biggest, clean, filter_context, matcher


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
    (["data/*"], "data/raw/x.csv", True),           # a pattern matching a parent directory excludes below it
    (["*", "!src"], "data/raw/x.csv", True),
    (["*", "!src"], "src/deep/a.py", False),
    (["*/raw"], "data/raw/x.csv", True),
    (["**/x"], "a/b/x/f", True),                    # Docker never walks into an excluded directory
])
def test_docker_semantics(patterns, path, excluded):
    """Each case is one documented rule of Docker's .dockerignore matching."""
    assert matcher(patterns)(path) is excluded


def test_clean_follows_docker():
    """Lines are cleaned as Docker does; blanks, comments and '.' vanish."""
    assert clean(" /a/./b/ ") == Pattern("a/b", negate=False)
    assert clean("!x/../keep.md") == Pattern("keep.md", negate=True)
    assert clean("../../a") == Pattern("a", negate=False)
    assert clean("# note") is None and clean(".") is None and clean("/") is None


_NAMES = st.sampled_from(["a", "b", "data", "raw", "x.csv", "a.py"])
_TREES = st.lists(st.lists(_NAMES, min_size=1, max_size=4).map("/".join), min_size=1, max_size=8)
_PARTS = st.sampled_from(["a", "b", "data", "raw", "*", "**", "?", "*.csv", "a*", "[ab]", ".", ".."])
_LINES = st.builds(lambda neg, parts, slash: ("!" if neg else "") + ("/" if slash else "") + "/".join(parts),
                   st.booleans(), st.lists(_PARTS, min_size=1, max_size=3), st.booleans())


def _make_tree(root, paths):
    """Write the files of `paths` under root (a path that is already a directory, or under a file, is skipped)."""
    files = []
    for path in paths:
        target = os.path.join(root, path)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                open(target, "w").close()
                files.append(path)
        except (NotADirectoryError, FileExistsError, IsADirectoryError):
            continue
    return [f for f in files if os.path.isfile(os.path.join(root, f))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(paths=_TREES, lines=st.lists(_LINES, max_size=4))
def test_agrees_with_docker_py(tmp_path_factory, paths, lines):
    """Over generated trees and pattern sets, the files we keep are those docker-py's PatternMatcher sends."""
    from docker.utils.build import PatternMatcher

    root = str(tmp_path_factory.mktemp("ctx"))
    files = _make_tree(root, paths)
    sent = set(PatternMatcher(lines).walk(root))
    excluded = matcher(lines)
    assert {f for f in files if not excluded(f)} == {f for f in files if f in sent}, lines


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


_ENGINE_CASES = [
    ["*", "!src"],
    ["data/*", "!data/keep.txt"],
    ["*/raw", "**/*.pyc"],
    ["data", "!data/raw/x.csv"],
]


@pytest.mark.docker
@pytest.mark.parametrize("lines", _ENGINE_CASES)
def test_agrees_with_the_engine(tmp_path, lines):
    """The files we keep are the files the real engine copies into an image (FROM the local busybox base)."""
    import subprocess
    import uuid

    from conftest import REPO

    subprocess.run([str(REPO / "tools/base-images.sh"), "busybox"], check=True, capture_output=True)
    files = ["src/a.py", "src/deep/b.pyc", "data/raw/x.csv", "data/keep.txt", "data/y.csv", "top.pyc", "notes.md"]
    for path in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    (tmp_path / "Dockerfile").write_text("FROM buildml-base/busybox:1\nCOPY . /ctx\n")
    (tmp_path / ".dockerignore").write_text("\n".join(lines) + "\n")
    tag = f"buildml-test-dockerignore:{uuid.uuid4().hex[:12]}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(tmp_path)], check=True, capture_output=True)
    try:
        listing = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "find", "/ctx", "-type", "f"],
                                 check=True, capture_output=True, text=True).stdout.split()
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
    in_image = {p.removeprefix("/ctx/") for p in listing} - {"Dockerfile", ".dockerignore"}
    excluded = matcher(lines)
    assert in_image == {f for f in files if not excluded(f)}
