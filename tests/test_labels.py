"""Labels and patterns: the small pure module everything names targets with."""

import pytest
from hypothesis import given, strategies as st

from buildml.errors import LabelError
from buildml.labels import Label, parse_label, parse_pattern


@pytest.mark.parametrize("text,package,expected", [
    ("//models:classifier", None, Label("models", "classifier")),
    ("//models/vision:resnet", None, Label("models/vision", "resnet")),
    ("//models", None, Label("models", "models")),
    ("//:root", None, Label("", "root")),
    (":prepare", "data", Label("data", "prepare")),
])
def test_parse_label(text, package, expected):
    """Full, package-default, root and relative labels parse to the same value type."""
    assert parse_label(text, package) == expected


@pytest.mark.parametrize("bad", ["models:x", "//a/../b:c", "//a:", "//:", "//", ":x", "//a:b c", "", "//a//b:c"])
def test_bad_labels_are_rejected(bad):
    """Malformed labels raise LabelError (a user error), never something else."""
    with pytest.raises(LabelError):
        parse_label(bad)


def test_patterns_match():
    """//..., //pkg/..., //pkg:all and single labels select the right targets."""
    a, b, c = Label("models", "x"), Label("models/vision", "y"), Label("data", "z")
    assert all(parse_pattern("//...").matches(l) for l in (a, b, c))
    sub = parse_pattern("//models/...")
    assert sub.matches(a) and sub.matches(b) and not sub.matches(c)
    assert parse_pattern("//models:all").matches(a) and not parse_pattern("//models:all").matches(b)
    assert parse_pattern("models:x").matches(a) and not parse_pattern("models:x").matches(b)
    assert parse_pattern(":z", "data").matches(c)


name = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)
package = st.lists(name.filter(lambda n: n not in (".", "..")), max_size=3).map("/".join)


@given(package, name)
def test_label_round_trips(pkg, nm):
    """str(label) parses back to the same label."""
    label = Label(pkg, nm)
    assert parse_label(str(label)) == label


@given(st.text(max_size=30))
def test_parser_never_crashes(text):
    """Any text either parses or raises LabelError."""
    try:
        parse_label(text, "pkg")
    except LabelError:
        pass
    try:
        parse_pattern(text)
    except LabelError:
        pass
