"""Split scikit-learn's bundled digits dataset (no download) into train/test CSVs."""
import os

import numpy as np
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

params = yaml.safe_load(open("params.yaml"))["prepare"]
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=params["test_size"], random_state=params["seed"], stratify=y)

os.makedirs("data/prepared", exist_ok=True)
for name, X_part, y_part in (("train", X_train, y_train), ("test", X_test, y_test)):
    table = np.column_stack([y_part, X_part])
    np.savetxt(f"data/prepared/{name}.csv", table, fmt="%d", delimiter=",")
    print(f"{name}: {len(y_part)} rows")
