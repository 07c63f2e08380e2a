"""Registered experiments (docs/experiments.md): typed configs with official / quick presets,
validated before anything runs; each run writes DIR/config.json, DIR/metrics.json, figures
and (when it trains) the engine's resumable run folder DIR/run."""

from icl_jax.experiments.config import ExperimentConfig, option  # noqa: F401
from icl_jax.experiments.loading import LoadedRun, load_run  # noqa: F401
from icl_jax.experiments.registry import (  # noqa: F401
    Experiment,
    RunContext,
    Setup,
    check_out,
    get_experiment,
    list_experiments,
    read_run_config,
    register,
    resume_experiment,
    run_experiment,
)
from icl_jax.experiments import data as _data  # noqa: F401,E402  (registers data-baselines)
from icl_jax.experiments import nichani as _nichani  # noqa: F401,E402  (registers nichani-*)
from icl_jax.experiments import chen as _chen  # noqa: F401,E402  (registers chen-*)
from icl_jax.experiments import peers as _peers  # noqa: F401,E402  (registers the peer experiments)
