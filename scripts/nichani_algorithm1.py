"""Nichani Algorithm 1 (reduced model, stage 1 A1, stage 2 A2): GD over seeds vs exact gradient flow,
analytic vs autodiff layer-1 gradient at init, OOD priors.

Usage: python scripts/nichani_algorithm1.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-staged (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU)."""

import sys

from icl_jax.cli import main

EXPERIMENTS = ['nichani-staged']

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
