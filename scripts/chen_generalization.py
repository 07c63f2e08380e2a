"""Chen et al.: chen-generalization (see `icl-jax list`). Usage: python scripts/chen_generalization.py [--quick] [--out DIR] [--seeds N] [--set k=v ...]"""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(["chen-generalization"], sys.argv[1:]))
