"""Split scikit-learn's bundled digits dataset (no download) into train/test CSVs."""
import os

import numpy as np
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def split(test_size: float, seed: int):
    """Stratified train/test split of the digits data: (X_train, X_test, y_train, y_test)."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def main() -> None:
    params = yaml.safe_load(open("params.yaml"))["prepare"]
    X_train, X_test, y_train, y_test = split(params["test_size"], params["seed"])
    os.makedirs("data/prepared", exist_ok=True)
    for name, X_part, y_part in (("train", X_train, y_train), ("test", X_test, y_test)):
        np.savetxt(f"data/prepared/{name}.csv", np.column_stack([y_part, X_part]), fmt="%d", delimiter=",")
        print(f"{name}: {len(y_part)} rows")


if __name__ == "__main__":
    main()
