"""Nichani Figs 2 and 6: learned layer-1 graph for the chain, icl and random trees, and the trained
A1/A2/W by stream block.

Usage: python scripts/nichani_fig2.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig2-chain, icl-jax run nichani-fig2-icl, icl-jax run nichani-fig2-random (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (2^17 SGD steps, 4 seeds) needs a GPU."""

import sys

from icl_jax.cli import main

EXPERIMENTS = ['nichani-fig2-chain', 'nichani-fig2-icl', 'nichani-fig2-random']

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
