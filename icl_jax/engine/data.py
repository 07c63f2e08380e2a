"""Where each training step's batch comes from: data sources.

Shipped sources:

(a) `FreshSamples`: a new batch every step, drawn on device inside the compiled step from
    `fold_in(data_key, step)` — the online / population-gradient mode of Nichani's official runs.
(b) `FixedDataset`: one dataset shared by every run; each step is a full-batch gradient step
    on it (empirical risk) — Chen's official runs (9000 training sequences, batch 100 000).
(c) `CommonSamples`: one sample set drawn once per run from that run's data key and reused
    every step (common random numbers): the loss becomes a deterministic function of the
    parameters, which gradient-flow integration needs.
(d) `MinibatchSamples`: minibatch SGD on one fixed dataset; step t takes `batch_size`
    examples drawn from `fold_in(data_key, t)` (without replacement within a minibatch by
    default).

The classes compare by identity (eq=False): reuse one object across calls so `train` and
`sweep` reuse the compiled program instead of compiling again.

Samplers have the signature `sample(key, hparams) -> batch` so a sweep can vary what the data
depends on (α, say) as an array leaf.

Writing your own source
-----------------------
Any object with the members of the `DataSource` protocol is accepted (no base class needed):

    @dataclasses.dataclass(frozen=True, eq=False)   # hashable by identity: programs are cached
    class NoisyDataset:
        dataset: Any          # arrays handed to the compiled program as an argument, or None
        noise: float
        mode = "noisy"        # a short name, stored in the run's fingerprint

        def prepare(self, data_key, hparams, dataset):
            return dataset    # once per run and per compiled chunk; `dataset` is `self.dataset`

        def batch(self, prepared, data_key, step, hparams):
            key = jax.random.fold_in(data_key, step)
            return jax.tree.map(lambda x: x + self.noise * jax.random.normal(key, x.shape), prepared)

`prepare` and `batch` run inside the compiled (and, for sweeps, vmapped) program, so they
must be pure JAX functions of their arguments: `data_key` is the run's data key (see
`run_keys`), `step` a traced int32 global step, `hparams` the run's scalar hyperparameters.
Arrays the source needs belong in `dataset` (the engine passes them to the compiled program
as an argument, broadcast across a sweep's runs, and hashes them into the checkpoint
fingerprint) rather than closed over (closed-over arrays are baked in as constants). A source
may also define `describe() -> dict` of JSON-able settings (e.g. a batch size); they are
added to the fingerprint, so a checkpoint is not resumed under different settings.
`icl_jax.engine.run_data` / `run_batch` give what a run with a given seed trains on.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

Sampler = Callable[[jax.Array, dict], Any]


@runtime_checkable
class DataSource(Protocol):
    """What the engine calls on a data source (see the module docstring for an example)."""

    mode: str  # short name of the source kind, stored in the run's fingerprint

    @property
    def dataset(self) -> Any:
        """Array pytree passed to the compiled program as an argument (or None)."""

    def prepare(self, data_key: jax.Array, hparams: Mapping[str, jax.Array], dataset: Any) -> Any:
        """Per-run data computed once per compiled chunk from the run's data key."""

    def batch(self, prepared: Any, data_key: jax.Array, step: jax.Array, hparams: Mapping[str, jax.Array]) -> Any:
        """The batch `loss(params, batch)` sees at global step `step`."""


@dataclasses.dataclass(frozen=True, eq=False)
class FreshSamples:
    """Mode (a): `sample(fold_in(data_key, step), hparams)` at every step."""

    sample: Sampler
    mode = "fresh"
    dataset = None

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
    dataset = None

    def prepare(self, data_key, hparams, dataset):
        return self.sample(data_key, hparams)

    def batch(self, prepared, data_key, step, hparams):
        return prepared


@dataclasses.dataclass(frozen=True, eq=False)
class MinibatchSamples:
    """Mode (d): minibatch SGD on one fixed dataset (a pytree of arrays with a common leading
    axis N).

    Step t trains on `batch_size` rows drawn with `jax.random.choice(fold_in(data_key, t), N,
    replace=replace)`: distinct rows within a minibatch by default, with replacement if
    `replace=True`. Like `FixedDataset`, the dataset is a program argument shared by a
    sweep's runs; each run (seed) draws its own sequence of minibatches.
    """

    dataset: Any
    batch_size: int
    replace: bool = False
    mode = "minibatch"

    def __post_init__(self):
        leaves = jax.tree.leaves(self.dataset)
        sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
        if not leaves or len(sizes) != 1 or None in sizes:
            raise ValueError(
                "dataset: MinibatchSamples needs a pytree of arrays with a common leading (example) axis, "
                f"got leading sizes {sorted(map(str, sizes))}"
            )
        n = sizes.pop()
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, numbers.Integral) \
                or not 1 <= self.batch_size <= n:
            raise ValueError(f"batch_size: must be an integer in 1..{n} (the dataset size), got {self.batch_size!r}")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "replace", bool(self.replace))

    def prepare(self, data_key, hparams, dataset):
        return dataset

    def batch(self, prepared, data_key, step, hparams):
        n = jax.tree.leaves(prepared)[0].shape[0]
        rows = jax.random.choice(jax.random.fold_in(data_key, step), n, (self.batch_size,), replace=self.replace)
        return jax.tree.map(lambda x: x[rows], prepared)

    def describe(self) -> dict:
        return {"batch_size": self.batch_size, "replace": self.replace}


def check_data(data) -> DataSource:
    """`data` if it satisfies the `DataSource` protocol, else a ValueError saying what is missing."""
    if not isinstance(data, DataSource):
        missing = [m for m in ("mode", "dataset", "prepare", "batch") if not hasattr(data, m)]
        raise ValueError(
            f"data: expected a data source — FreshSamples(sample), FixedDataset(dataset), CommonSamples(sample), "
            f"MinibatchSamples(dataset, batch_size) or an object with `mode`, `dataset`, `prepare(data_key, "
            f"hparams, dataset)` and `batch(prepared, data_key, step, hparams)` — got {type(data).__name__} "
            f"(missing {missing})"
        )
    if not isinstance(data.mode, str):
        raise ValueError(f"data.mode: must be a string naming the source kind, got {data.mode!r}")
    for name in ("prepare", "batch"):
        if not callable(getattr(data, name)):
            raise ValueError(f"data.{name}: must be callable")
    if isinstance(data, (FreshSamples, CommonSamples)) and not callable(data.sample):
        raise ValueError("data.sample: must be a callable sample(key, hparams) -> batch")
    return data
