"""Data figure: sampler marginals vs μ_π and every baseline's loss (icl-jax run data-baselines).

Usage: python scripts/data_baselines.py [--quick] [--out figures/data-baselines]
Runtime: ~10 s quick, ~30 s full on a 2-core CPU."""

import sys

from icl_jax.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", "figures/data-baselines"]
    sys.exit(main(["run", "data-baselines", *args]))
