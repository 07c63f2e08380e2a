"""Chen et al.: chen-cwa (see `icl-jax list`). Usage: python scripts/chen_cwa.py [--quick] [--out DIR] [--seeds N] [--set k=v ...]"""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(["chen-cwa"], sys.argv[1:]))
