"""Split raw/digits.csv into split/train.csv and split/test.csv (stratified, seeded)."""
import os

import numpy as np
import yaml
from sklearn.model_selection import train_test_split

params = yaml.safe_load(open("params.yaml"))["split"]
with open("raw/digits.csv") as f:
    header = f.readline().strip()
table = np.loadtxt("raw/digits.csv", delimiter=",", skiprows=1, dtype=int)
train, test = train_test_split(table, test_size=params["test_size"], random_state=params["seed"], stratify=table[:, 0])
os.makedirs("split", exist_ok=True)
for name, part in (("train", train), ("test", test)):
    np.savetxt(f"split/{name}.csv", part, fmt="%d", delimiter=",", header=header, comments="")
    print(f"{name}: {len(part)} rows")
