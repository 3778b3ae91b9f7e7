"""The feature transform, shared by the features dataset and the serving endpoint."""
import numpy as np

N_PIXELS = 64
N_FEATURES = N_PIXELS + 4


def featurize(pixels) -> np.ndarray:
    """Rows of 64 pixel values (0..16) -> rows of 68 features: scaled pixels and 4 quadrant means."""
    X = np.asarray(pixels, dtype=float).reshape(-1, N_PIXELS) / 16.0
    images = X.reshape(-1, 8, 8)
    quadrants = [images[:, r:r + 4, c:c + 4].mean(axis=(1, 2)) for r in (0, 4) for c in (0, 4)]
    return np.column_stack([X, *quadrants])
