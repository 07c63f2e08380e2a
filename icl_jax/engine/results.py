"""What a training run returns and leaves behind: `TrainState`, `TrainResult`,
`NonFiniteLossError`, and the final files of a run folder (`write_outputs`)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

import jax
import numpy as np


class TrainState(NamedTuple):
    """Everything a run carries between steps (and between chunks / checkpoints)."""

    params: Any
    opt_states: tuple  # one optax state per stage, each fresh at its stage's start
    step: jax.Array  # int32 global step


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or ±inf; the run stops at that chunk."""

    def __init__(self, message: str, *, step: int, run: dict, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.run = run
        self.checkpoint = checkpoint


@dataclasses.dataclass
class TrainResult:
    """Outputs of `train` (no leading axes) or `sweep` (leading axes (grid, seed)).

    Attributes:
      params: final parameters.
      state: final TrainState (parameters, optimiser states, step).
      loss: training loss before every update, shape (..., total_steps).
      metrics: the metrics pytree stacked over records, leaves (..., n_records, ...); None
        when no metrics function was given.
      record_steps: global step of each record, shape (n_records,).
      stage_starts: global step at which each stage starts.
      seeds, hparams: what was run (hparams: the grid, leaves (grid,)).
      out_dir: the run folder, if any.
      wall_seconds: host wall-clock time of the training loop (compiles included), summed over
        every call that trained this run folder (a resumed run includes its earlier calls).
      num_devices: devices the run axis was sharded over.
    """

    params: Any
    state: TrainState
    loss: np.ndarray
    metrics: Any
    record_steps: np.ndarray
    stage_starts: tuple[int, ...]
    seeds: tuple[int, ...]
    hparams: dict[str, np.ndarray]
    out_dir: str | None = None
    wall_seconds: float = 0.0
    num_devices: int = 1

    @property
    def final_loss(self) -> np.ndarray:
        return self.loss[..., -1]


def write_outputs(out_dir, result: TrainResult) -> None:
    """Final outputs of a run folder: params.npz, trajectory.npz and metrics.json."""
    if out_dir is None:
        return
    params_arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(result.params)[0]}
    np.savez(os.path.join(out_dir, "params.npz"), **params_arrays)
    traj = {"loss": result.loss, "record_steps": result.record_steps}
    if result.metrics is not None:
        for p, x in jax.tree_util.tree_flatten_with_path(result.metrics)[0]:
            traj["metrics" + jax.tree_util.keystr(p)] = np.asarray(x)
    np.savez(os.path.join(out_dir, "trajectory.npz"), **traj)
    summary = {
        "total_steps": int(result.record_steps[-1]),
        "final_loss": np.asarray(result.final_loss).tolist(),
        "seeds": list(result.seeds),
        "hparams": {k: np.asarray(v).tolist() for k, v in result.hparams.items()},
        "wall_seconds": result.wall_seconds,
        "stage_starts": list(result.stage_starts),
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
