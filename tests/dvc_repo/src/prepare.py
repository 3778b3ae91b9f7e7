import os
import sys

import yaml

params = yaml.safe_load(open("params.yaml"))["prepare"]
rows = open(sys.argv[1]).read().split()
keep = rows[: int(len(rows) * (1 - params["split"]))]
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with open(sys.argv[2], "w") as f:
    f.write("\n".join(keep) + "\n")
