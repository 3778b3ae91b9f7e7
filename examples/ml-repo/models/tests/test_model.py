"""Unit tests of models/src/model.py on tiny synthetic data (fast, no pipeline outputs needed)."""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from model import fit, score  # noqa: E402


class ModelTest(unittest.TestCase):
    def test_score_counts_hits(self):
        self.assertEqual(score([1, 2, 3, 3], [1, 2, 3, 0], "macro")["accuracy"], 0.75)

    def test_fit_is_deterministic_and_learns_separable_data(self):
        rng = np.random.default_rng(0)
        X = np.vstack([rng.normal(-2, 1, (50, 3)), rng.normal(2, 1, (50, 3))])
        y = np.array([0] * 50 + [1] * 50)
        a, b = fit(X, y, 1.0, 200, 7), fit(X, y, 1.0, 200, 7)
        self.assertTrue((a.coef_ == b.coef_).all())
        self.assertGreater(a.score(X, y), 0.95)


if __name__ == "__main__":
    unittest.main()
