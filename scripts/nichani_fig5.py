"""Nichani Figs 5 and 7: two layer-1 heads learn the two parents of the multi-parent DAG; loss with
Bayes / One-NN lines; trained matrices.

Usage: python scripts/nichani_fig5.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-fig5-multiparent (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU); full (2^16 AdamW steps) needs a GPU."""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(['nichani-fig5-multiparent'], sys.argv[1:]))
