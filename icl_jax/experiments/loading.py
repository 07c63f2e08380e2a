"""Reload a finished (or killed) run folder: :func:`load_run` (``docs/experiments.md#reloading-a-run``).

A run folder written by ``icl-jax run NAME --out DIR`` holds ``config.json`` (experiment,
preset, typed config), ``metrics.json`` (the reported numbers) and, for trained
experiments, the engine's ``run/`` folder: ``params.npz`` (final parameters, leaves with
leading axes (grid, seed)), ``trajectory.npz`` (training loss and recorded metrics) and
``checkpoint.npz``. :func:`load_run` rebuilds the experiment's task and model from the
stored config and gives the parameters back with the model's real pytree structure.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from icl_jax.experiments.config import ExperimentConfig
from icl_jax.experiments.registry import read_run_config

__all__ = ["LoadedRun", "load_run"]

AXES = ("grid", "seed")
_DICT_KEY = re.compile(r"\['([^']*)'\]")


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A stored run.

    Attributes:
      path: the run folder.
      experiment: registry name.
      preset: "official" or "quick" (the preset the config started from).
      config: the typed config the run used.
      task, model: rebuilt from ``config`` by the experiment's ``build`` (Fig. 9: one task per
        graph, a tuple; the data checks: no model).
      params: final parameters with the model's structure; every leaf has leading axes
        ``axes`` = (grid, seed) (grid = the sweep's hyperparameter points, e.g. Fig. 9's
        graphs; one point for most experiments). None when the experiment trains nothing or
        the run did not finish.
      seeds: the seed of each index on the seed axis.
      grid: the sweep's hyperparameters, one array entry per grid point ({} when none).
      trajectories: ``{"steps": record steps, "loss": training loss [G, N, steps], "metrics":
        {name: [G, N, records, ...]}}`` (None when absent).
      metrics: the contents of ``metrics.json`` (None if the run did not finish).
    """

    path: Path
    experiment: str
    preset: str
    config: ExperimentConfig
    task: Any
    model: Any
    params: Any
    seeds: tuple[int, ...]
    grid: dict[str, np.ndarray]
    trajectories: dict | None
    metrics: dict | None
    axes: tuple[str, str] = AXES

    def params_of(self, seed_index: int = 0, grid_index: int = 0):
        """The parameters of one run (no leading axes): seed ``seeds[seed_index]`` at grid point
        ``grid_index``."""
        if self.params is None:
            raise ValueError(f"{self.path}: this run has no stored parameters")
        n_grid, n_seed = np.shape(jax.tree.leaves(self.params)[0])[:2]
        if not (0 <= seed_index < n_seed and 0 <= grid_index < n_grid):
            raise ValueError(f"params_of: seed_index must be in [0, {n_seed - 1}] and grid_index in [0, {n_grid - 1}] "
                             f"(got {seed_index}, {grid_index})")
        return jax.tree.map(lambda x: x[grid_index, seed_index], self.params)


def _nested(flat: dict[str, np.ndarray], prefix: str) -> dict:
    """``{"metrics['a']['b']": x}`` → ``{"a": {"b": x}}`` (dict-keyed paths only)."""
    out: dict = {}
    for name, value in flat.items():
        if not name.startswith(prefix):
            continue
        keys = _DICT_KEY.findall(name[len(prefix):])
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1] if keys else name] = value
    return out


def _params(model, arrays: dict[str, np.ndarray]):
    """The stored leaves placed into the model's parameter structure (from ``model.init``)."""
    template = jax.eval_shape(model.init, jax.random.key(0))
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        name = jax.tree_util.keystr(path)
        if name not in arrays:
            raise ValueError(f"params.npz has no parameter {name} that {type(model).__name__} expects "
                             f"(stored: {', '.join(sorted(arrays))})")
        value = arrays[name]
        if value.shape[2:] != leaf.shape:
            raise ValueError(f"params.npz: {name} has shape {value.shape[2:]} after the (grid, seed) axes; "
                             f"{type(model).__name__} expects {leaf.shape}")
        leaves.append(value)
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def load_run(path: str | Path) -> LoadedRun:
    """Load a run folder written by ``icl-jax run`` / :func:`icl_jax.experiments.run_experiment`.

    Example::

        run = icl_jax.load_run("runs/chain")
        params = run.params_of(seed_index=0)
        batch = run.task.sample(jax.random.key(1), 4096)
        loss = run.model.loss(params, batch)
    """
    path = Path(path)
    exp, preset, config = read_run_config(path)
    setup = exp.build(config)
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    run_dir = path / "run"
    params, trajectories, seeds, grid = None, None, (), {}
    if (run_dir / "metrics.json").is_file():
        summary = json.loads((run_dir / "metrics.json").read_text())
        seeds = tuple(summary["seeds"])
        grid = {k: np.asarray(v) for k, v in summary["hparams"].items()}
    if (run_dir / "params.npz").is_file() and setup.model is not None:
        with np.load(run_dir / "params.npz") as f:
            params = _params(setup.model, {k: f[k] for k in f.files})
    if (run_dir / "trajectory.npz").is_file():
        with np.load(run_dir / "trajectory.npz") as f:
            flat = {k: f[k] for k in f.files}
        trajectories = {"steps": flat["record_steps"], "loss": flat["loss"], "metrics": _nested(flat, "metrics")}
    return LoadedRun(path, exp.name, preset, config, setup.task, setup.model, params, seeds, grid, trajectories, metrics)
