"""Score out/model.pkl on ../features/out/test.csv into out/metrics.json."""
import json
import pickle

import yaml

from model import load, score

params = yaml.safe_load(open("params.yaml"))["evaluate"]
X, y = load("../features/out/test.csv")
with open("out/model.pkl", "rb") as f:
    model = pickle.load(f)
metrics = score(y, model.predict(X), params["average"])
with open("out/metrics.json", "w") as f:
    json.dump(metrics, f, indent=2, sort_keys=True)
print(json.dumps(metrics))
