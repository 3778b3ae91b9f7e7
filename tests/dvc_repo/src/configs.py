import json
import runpy
import os
import sys
import tomllib

import yaml

other = yaml.safe_load(open("other.yaml"))
config = json.load(open("config.json"))
hp = tomllib.load(open("hp.toml", "rb"))
py = runpy.run_path("pyparams.py")
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
with open(sys.argv[1], "w") as f:
    f.write(f"other={json.dumps(other, sort_keys=True)}\n")
    f.write(f"depth={config['model']['depth']}\n")
    f.write(f"momentum={hp['opt']['momentum']}\n")
    f.write(f"batch={py['Train'].batch}\n")
