"""Nichani Fig. 8: transformer with value matrices and MLPs; layer-1 attention pattern and loss.

Usage: python scripts/nichani_fig8.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig8-mlp (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (4096 AdamW steps) ~minutes on a GPU."""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(['nichani-fig8-mlp'], sys.argv[1:]))
