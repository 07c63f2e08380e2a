"""Chen et al.: chen-cw-a (see `icl-jax list`). Usage: python scripts/chen_cw_a.py [--quick] [--out DIR] [--seeds N] [--set k=v ...]"""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(["chen-cw-a"], sys.argv[1:]))
