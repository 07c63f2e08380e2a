"""Nichani Fig. 8: transformer with value matrices and MLPs; layer-1 attention pattern and loss.

Usage: python scripts/nichani_fig8.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig8-mlp (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (4096 AdamW steps) ~minutes on a GPU."""

import sys

from icl_jax.cli import main

EXPERIMENTS = ['nichani-fig8-mlp']

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
