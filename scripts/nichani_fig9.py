"""Nichani Fig. 9: 20 random graphs trained in one vmapped call; attention i -> p(i) by position.

Usage: python scripts/nichani_fig9.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig9-many-graphs (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (2^14 steps x 20 graphs) needs a GPU."""

import sys

from icl_jax.cli import main

EXPERIMENTS = ['nichani-fig9-many-graphs']

if __name__ == "__main__":
    args = sys.argv[1:]
    root = "figures"
    if "--out" in args:
        i = args.index("--out")
        root = args[i + 1]
        del args[i : i + 2]
    for name in EXPERIMENTS:
        code = main(["run", name, *args, "--out", f"{root}/{name}"])
        if code:
            sys.exit(code)
