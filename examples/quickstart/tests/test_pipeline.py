"""Unit tests of the pipeline code (run by `buildml test //:unit_tests`)."""
import sys

sys.path.insert(0, "src")

from evaluate import score  # noqa: E402
from prepare import split  # noqa: E402


def test_split_is_stratified_and_sized():
    X_train, X_test, y_train, y_test = split(0.25, seed=1)
    assert len(X_test) == len(y_test) and abs(len(y_test) / (len(y_train) + len(y_test)) - 0.25) < 0.01
    assert set(y_test) == set(range(10))


def test_score_counts_rows_and_accuracy():
    metrics = score([1, 2, 3, 3], [1, 2, 3, 0], "macro")
    assert metrics["accuracy"] == 0.75 and metrics["test_rows"] == 4
