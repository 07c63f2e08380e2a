"""`train`: one run (one seed, scalar hyperparameters) in compiled, staged chunks.

`icl_jax.engine.sweep` runs a grid of seeds × hyperparameters through the same program under
`vmap` (and shards it over devices); both go through `icl_jax.engine.execute`. This module is
not called `train`, so `icl_jax.engine.train` is always the function (never a module).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from icl_jax.engine.data import DataSource
from icl_jax.engine.execute import RunLayout, run_layout
from icl_jax.engine.program import LossFn, make_program
from icl_jax.engine.results import TrainResult
from icl_jax.engine.runs import scalar_hparams
from icl_jax.engine.stages import LabelFn, Stage, top_level_labels


def train(
    loss_fn: LossFn,
    init,
    stages: Sequence[Stage],
    data: DataSource,
    *,
    seed: int = 0,
    hparams: Mapping[str, Any] | None = None,
    metrics: Callable | None = None,
    record_every: int = 1,
    label_fn: LabelFn = top_level_labels,
    chunk_steps: int | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    progress: bool = True,
    config: Mapping | None = None,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train one run (one seed, scalar hyperparameters).

    Args:
      loss_fn: pure `loss(params, batch) -> scalar`.
      init: `init(key, hparams) -> params`, or a fixed parameter pytree.
      stages: list of `Stage`s run in order.
      data: a data source: `FreshSamples`, `FixedDataset`, `CommonSamples`, `MinibatchSamples`
        or any object satisfying the `DataSource` protocol.
      seed: the run's key is `jax.random.key(seed)`, split into (init key, data key) by
        `run_keys(seed)`; a sweep member with the same seed and hyperparameters reproduces this
        run, and `run_data` / `run_batch` give the data it trains on.
      hparams: scalar hyperparameters, referenced by name from stages / init / samplers.
      metrics: `metrics(params, step)` or `metrics(params, step, hparams)` → pytree, recorded at
        each stage start, every `record_every` steps, and after the last step.
      chunk_steps: steps per compiled call (the host's granularity for progress/checkpoints).
      out_dir: run folder: config.json, checkpoint.npz (every `checkpoint_every` chunks),
        params.npz, trajectory.npz, metrics.json.
      resume: continue from `out_dir/checkpoint.npz` if present (bit-identical to an
        uninterrupted run).
      progress: show a tqdm bar (appears only for runs longer than ~2 s).
      callback: called on the host after every chunk with a dict (chunk, step, loss, ...).

    Raises:
      NonFiniteLossError: a loss went NaN/inf (reports step, run and last finite checkpoint).
    """
    hp = scalar_hparams(hparams)
    program = make_program(loss_fn, init, stages, data, metrics=metrics, label_fn=label_fn,
                           record_every=record_every, chunk_steps=chunk_steps, hparams_example=hp)
    seed = int(seed)
    layout = RunLayout(
        keys=jax.random.key(seed), hparams=hp, batched=False, n_real=1,
        describe_run=lambda i: {"seed": seed, **{k: float(v) for k, v in hp.items()}},
        meta={"seeds": [seed], "hparams": {k: np.asarray(v).tolist() for k, v in hp.items()}},
    )
    return run_layout(program, layout, seeds=(seed,), hparams=hp, out_dir=out_dir, resume=resume,
                      checkpoint_every=checkpoint_every, progress=progress, config=config, callback=callback)
