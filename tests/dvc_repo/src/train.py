import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--lr", type=float)
parser.add_argument("--epochs", type=int)
parser.add_argument("out")
args = parser.parse_args()
rows = open("out/prepared.txt").read().split()
os.makedirs(os.path.dirname(args.out), exist_ok=True)
with open(args.out, "w") as f:
    f.write(f"{args.model} lr={args.lr} epochs={args.epochs} rows={len(rows)}\n")
