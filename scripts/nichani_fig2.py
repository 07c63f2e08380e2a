"""Nichani Figs 2 and 6: learned layer-1 graph for the chain, icl and random trees, and the trained
A1/A2/W by stream block.

Usage: python scripts/nichani_fig2.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig2-chain, icl-jax run nichani-fig2-icl, icl-jax run nichani-fig2-random (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (2^17 SGD steps, 4 seeds) needs a GPU."""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(['nichani-fig2-chain', 'nichani-fig2-icl', 'nichani-fig2-random'], sys.argv[1:]))
