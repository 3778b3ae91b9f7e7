"""Model code shared by training, evaluation and the unit tests."""
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def load(path: str):
    """A features CSV -> (X, y)."""
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, 1:], table[:, 0].astype(int)


def fit(X, y, C: float, max_iter: int, seed: int) -> LogisticRegression:
    """Fit the classifier; deterministic for a given seed."""
    return LogisticRegression(C=C, max_iter=max_iter, random_state=seed).fit(X, y)


def score(y, predicted, average: str) -> dict:
    """The tracked metrics, rounded so that the file is stable."""
    return {
        "accuracy": round(float(accuracy_score(y, predicted)), 6),
        "f1": round(float(f1_score(y, predicted, average=average)), 6),
        "test_rows": int(len(y)),
    }
