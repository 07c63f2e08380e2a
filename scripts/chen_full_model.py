"""Chen et al.: chen-full-model (see `icl-jax list`). Usage: python scripts/chen_full_model.py [--quick] [--out DIR] [--seeds N] [--set k=v ...]"""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(["chen-full-model"], sys.argv[1:]))
