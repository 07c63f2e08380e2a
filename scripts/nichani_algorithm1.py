"""Nichani Algorithm 1 (reduced model, stage 1 A1, stage 2 A2): GD over seeds vs exact gradient flow,
analytic vs autodiff layer-1 gradient at init, OOD priors.

Usage: python scripts/nichani_algorithm1.py [--quick] [--out DIR] [--set key=value ...]
Runs: icl-jax run nichani-staged (one sub-folder each under DIR, default figures/).
Runtime: ~1 min quick (CPU)."""

import sys

from _run import run_experiments

if __name__ == "__main__":
    sys.exit(run_experiments(['nichani-staged'], sys.argv[1:]))
