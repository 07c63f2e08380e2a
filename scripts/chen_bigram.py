"""Chen et al.: chen-bigram (see `icl-jax list`). Usage: python scripts/chen_bigram.py [--quick] [--out DIR] [--seeds N] [--set k=v ...]"""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(["chen-bigram"], sys.argv[1:]))
