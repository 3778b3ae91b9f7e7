"""Generate a synthetic workspace: N `command` targets in a layered random DAG (fixed seed)."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

PER_PACKAGE = 100


def as_installed() -> None:
    """Run buildml as an installed copy runs: with its bytecode compiled. pip compiles what it installs (the peers'
    .pyc are there), but an editable install has none, and under PYTHONDONTWRITEBYTECODE=1 (set on some machines)
    every buildml process would recompile its modules: about 0.1 s of each run, which no user pays."""
    import compileall
    import os

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # for the processes the benchmark starts
    import buildml

    compileall.compile_dir(os.path.dirname(buildml.__file__), quiet=1)


def generate(root: Path, n: int, seed: int = 42, layers: int = 20) -> None:
    """Each target has one small source file and up to 3 deps on earlier layers; its command
    pipes `cat` of its inputs through `cksum` into its out (so outputs stay small)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "buildml.yaml").write_text("")
    per_layer = max(1, n // layers)
    names = [f"t{i}" for i in range(n)]
    packages: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        pkg = f"p{i // PER_PACKAGE}"
        layer = i // per_layer
        deps = []
        if layer > 0:
            lo, hi = max(0, (layer - 1) * per_layer), layer * per_layer
            for j in rng.sample(range(lo, hi), k=min(rng.randint(0, 3), hi - lo)):
                deps.append(f"//p{j // PER_PACKAGE}:t{j}")
        src = root / pkg / f"{name}.txt"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"source of {name}\n")
        dep_list = ", ".join([f"{name}.txt"] + [f'"{d}"' for d in deps])
        ins = " ".join([f"{name}.txt"] + [f"../p{int(d.split(':t')[1]) // PER_PACKAGE}/t{d.split(':t')[1]}.out" for d in deps])
        packages.setdefault(pkg, []).append(
            f"  {name}:\n    command: cat {ins} | cksum > {name}.out\n    deps: [{dep_list}]\n    outs: [{name}.out]\n")
    for pkg, entries in packages.items():
        (root / pkg / "BUILD.yaml").write_text("targets:\n" + "".join(entries))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    generate(args.root, args.n, args.seed)
