"""Where each training step's batch comes from (issue 3, "data modes").

(a) `FreshSamples`: a new batch every step, drawn on device inside the compiled step from
    `fold_in(data_key, step)` — the online / population-gradient mode of Nichani's official runs.
(b) `FixedDataset`: one dataset shared by every run; each step is a full-batch gradient step
    on it (empirical risk) — Chen's official runs (9000 training sequences, batch 100 000).
(c) `CommonSamples`: one sample set drawn once per run from that run's data key and reused
    every step (common random numbers): the loss becomes a deterministic function of the
    parameters, which gradient-flow integration needs.

The classes compare by identity (eq=False): reuse one object across calls so `train` and
`sweep` reuse the compiled program instead of compiling again.

Samplers have the signature `sample(key, hparams) -> batch` so a sweep can vary what the data
depends on (α, say) as an array leaf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

Sampler = Callable[[jax.Array, dict], Any]


@dataclasses.dataclass(frozen=True, eq=False)
class FreshSamples:
    """Mode (a): `sample(fold_in(data_key, step), hparams)` at every step."""

    sample: Sampler
    mode = "fresh"

    def prepare(self, data_key, hparams, dataset):
        return None

    def batch(self, prepared, data_key, step, hparams):
        return self.sample(jax.random.fold_in(data_key, step), hparams)


@dataclasses.dataclass(frozen=True, eq=False)
class FixedDataset:
    """Mode (b): full-batch gradient descent on one fixed dataset (a pytree of arrays).

    The dataset is passed to the compiled program as an argument (not baked in as a
    constant) and broadcast across the runs of a sweep.
    """

    dataset: Any
    mode = "fixed"

    def prepare(self, data_key, hparams, dataset):
        return dataset

    def batch(self, prepared, data_key, step, hparams):
        return prepared


@dataclasses.dataclass(frozen=True, eq=False)
class CommonSamples:
    """Mode (c): `sample(data_key, hparams)` once per run, reused at every step."""

    sample: Sampler
    mode = "common"

    def prepare(self, data_key, hparams, dataset):
        return self.sample(data_key, hparams)

    def batch(self, prepared, data_key, step, hparams):
        return prepared


DataSource = FreshSamples | FixedDataset | CommonSamples


def check_data(data) -> DataSource:
    if not isinstance(data, (FreshSamples, FixedDataset, CommonSamples)):
        raise ValueError(
            f"data: expected FreshSamples(sample), FixedDataset(dataset) or CommonSamples(sample), "
            f"got {type(data).__name__}"
        )
    if isinstance(data, (FreshSamples, CommonSamples)) and not callable(data.sample):
        raise ValueError("data.sample: must be a callable sample(key, hparams) -> batch")
    return data


def dataset_arg(data: DataSource):
    """The array argument the compiled program receives (None unless mode (b))."""
    return data.dataset if isinstance(data, FixedDataset) else None
