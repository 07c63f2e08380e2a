"""Nichani Figs 5 and 7: two layer-1 heads learn the two parents of the multi-parent DAG; loss with
Bayes / One-NN lines; trained matrices.

Usage: python scripts/nichani_fig5.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig5-multiparent (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (2^16 AdamW steps) needs a GPU."""

import sys

from icl_jax.cli import main

EXPERIMENTS = ['nichani-fig5-multiparent']

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
