"""Write scikit-learn's bundled digits (no download) as raw/digits.csv: label, p0..p63."""
import os

import numpy as np
from sklearn.datasets import load_digits

X, y = load_digits(return_X_y=True)
os.makedirs("raw", exist_ok=True)
header = ",".join(["label"] + [f"p{i}" for i in range(X.shape[1])])
np.savetxt("raw/digits.csv", np.column_stack([y, X]), fmt="%d", delimiter=",", header=header, comments="")
print(f"raw: {len(y)} rows, {X.shape[1]} pixels")
