"""Train a logistic-regression classifier with the params in params.yaml."""
import os
import pickle

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

params = yaml.safe_load(open("params.yaml"))["train"]
table = np.loadtxt("data/prepared/train.csv", delimiter=",")
y, X = table[:, 0].astype(int), table[:, 1:]

model = make_pipeline(StandardScaler(), LogisticRegression(
    C=params["C"], max_iter=params["max_iter"], random_state=params["seed"]))
model.fit(X, y)

os.makedirs("models", exist_ok=True)
with open("models/model.pkl", "wb") as f:
    pickle.dump(model, f, protocol=4)
print(f"trained on {len(y)} rows, train accuracy {model.score(X, y):.4f}")
