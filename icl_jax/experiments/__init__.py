"""Registered experiments (each writes DIR/config.json, DIR/metrics.json and figures)."""

from icl_jax.experiments.registry import (  # noqa: F401
    Experiment,
    get_experiment,
    list_experiments,
    parse_overrides,
    register,
    run_experiment,
)
from icl_jax.experiments import data as _data  # noqa: F401  (registers data-baselines)
from icl_jax.experiments import nichani as _nichani  # noqa: F401,E402  (registers nichani-*)
from icl_jax.experiments import chen as _chen  # noqa: F401,E402  (registers chen-*)
