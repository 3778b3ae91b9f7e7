"""Train the classifier on ../features/out/train.csv with the params in params.yaml."""
import os
import pickle

import yaml

from model import fit, load

params = yaml.safe_load(open("params.yaml"))["train"]
X, y = load("../features/out/train.csv")
model = fit(X, y, params["C"], params["max_iter"], params["seed"])
os.makedirs("out", exist_ok=True)
with open("out/model.pkl", "wb") as f:
    pickle.dump(model, f, protocol=4)
print(f"trained on {len(y)} rows (C={params['C']}), train accuracy {model.score(X, y):.4f}")
