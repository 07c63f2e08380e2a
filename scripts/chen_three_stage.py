"""Chen et al.: chen-three-stage-d2,chen-three-stage-d3 (see `icl-jax list`). Usage: python scripts/chen_three_stage.py [--quick] [--out DIR] [--seeds N] [--set k=v ...]"""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(["chen-three-stage-d2","chen-three-stage-d3"], sys.argv[1:]))
