"""Nichani Fig. 9: 20 random graphs trained in one vmapped call; attention i -> p(i) by position.

Usage: python scripts/nichani_fig9.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig9-many-graphs (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (2^14 steps x 20 graphs) needs a GPU."""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(['nichani-fig9-many-graphs'], sys.argv[1:]))
