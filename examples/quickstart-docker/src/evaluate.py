"""Score the trained model on the test split and write metrics.json."""
import json
import pickle

import numpy as np
import yaml
from sklearn.metrics import accuracy_score, f1_score


def score(y, predicted, average: str) -> dict:
    """The metrics we track, rounded so that files are stable."""
    return {
        "accuracy": round(float(accuracy_score(y, predicted)), 6),
        "f1": round(float(f1_score(y, predicted, average=average)), 6),
        "test_rows": int(len(y)),
    }


def main() -> None:
    params = yaml.safe_load(open("params.yaml"))["evaluate"]
    table = np.loadtxt("data/prepared/test.csv", delimiter=",")
    y, X = table[:, 0].astype(int), table[:, 1:]
    with open("models/model.pkl", "rb") as f:
        model = pickle.load(f)
    metrics = score(y, model.predict(X), params["average"])
    with open("metrics.json", "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
