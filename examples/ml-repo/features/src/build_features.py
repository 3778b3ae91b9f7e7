"""Turn ../data/split/{train,test}.csv into out/{train,test}.csv of label + features."""
import os

import numpy as np

from featurize import N_FEATURES, featurize

os.makedirs("out", exist_ok=True)
header = ",".join(["label"] + [f"f{i}" for i in range(N_FEATURES)])
for name in ("train", "test"):
    table = np.loadtxt(f"../data/split/{name}.csv", delimiter=",", skiprows=1, dtype=int)
    features = featurize(table[:, 1:])
    np.savetxt(f"out/{name}.csv", np.column_stack([table[:, 0], features]), fmt="%.6g", delimiter=",",
               header=header, comments="")
    print(f"{name}: {features.shape[0]} rows x {features.shape[1]} features")
