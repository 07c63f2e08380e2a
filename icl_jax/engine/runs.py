"""What one run sees: its keys, its hyperparameters and its data.

Run `seed` starts from `jax.random.key(seed)`, split once by `run_keys` into an init key
(passed to `init(key, hparams)`) and a data key (passed to the data source). The engine
derives both from this one function, and `run_data` / `run_batch` rebuild from it what a
run trained on, so experiments never re-derive the split themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.engine.data import DataSource, check_data


def run_keys(seed_or_key) -> tuple[jax.Array, jax.Array]:
    """`(init_key, data_key)` of the run with this integer seed (or typed PRNG key).

    `train(..., seed=s)` and every sweep member with seed `s` initialise their parameters
    from `init_key` and draw their data from `data_key`.
    """
    key = seed_or_key
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        pass
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    else:
        raise ValueError(f"seed_or_key: expected an integer seed or a typed key from jax.random.key, got {key!r}")
    init_key, data_key = jax.random.split(key)
    return init_key, data_key


def numeric_hparam(name: str, value) -> jax.Array:
    """A hyperparameter as a JAX array; only numbers and booleans can be sweep leaves."""
    try:
        arr = jnp.asarray(value)
    except TypeError:
        raise ValueError(f"hparams[{name!r}]: must be numeric, got {value!r}") from None
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise ValueError(f"hparams[{name!r}]: must be numeric, got dtype {arr.dtype}")
    return arr


def scalar_hparams(hparams: Mapping | None) -> dict[str, jax.Array]:
    """A single run's hyperparameters as scalar arrays (as the compiled program sees them)."""
    out = {}
    for name, value in (hparams or {}).items():
        arr = numeric_hparam(name, value)
        if arr.ndim != 0:
            raise ValueError(
                f"hparams[{name!r}]: a single run takes scalar hyperparameters, got shape {arr.shape}; "
                "use icl_jax.engine.sweep for a grid"
            )
        out[name] = arr
    return out


def _run_batch_impl(data, data_key, hparams, dataset, step):
    prepared = data.prepare(data_key, hparams, dataset)
    return prepared if step is None else data.batch(prepared, data_key, step, hparams)


@functools.lru_cache(maxsize=16)
def _compiled_batch(data):
    return jax.jit(functools.partial(_run_batch_impl, data))


def _evaluate(data, seed, hparams, step):
    data = check_data(data)
    _, data_key = run_keys(seed)
    args = (data_key, scalar_hparams(hparams), data.dataset, None if step is None else jnp.asarray(step, jnp.int32))
    try:
        fn = _compiled_batch(data)
    except TypeError:  # an unhashable source: compile without caching
        fn = jax.jit(functools.partial(_run_batch_impl, data))
    return fn(*args)


def run_data(data: DataSource, seed, hparams: Mapping[str, Any] | None = None) -> Any:
    """What the run with this seed trains on: `data.prepare(data_key, hparams, data.dataset)`.

    `CommonSamples`: the sample set drawn once for the run (the batch of every step).
    `FixedDataset`: the dataset. `MinibatchSamples`: the dataset the minibatches are drawn
    from (see `run_batch` for a step's minibatch).

    Raises:
      ValueError: the source prepares nothing per run (`FreshSamples`: the data changes at
        every step, drawn from `fold_in(data_key, step)`); use `run_batch`.
    """
    prepared = _evaluate(data, seed, hparams, None)
    if prepared is None:
        raise ValueError(
            f"run_data: this source (mode {data.mode!r}) draws new data at every step, so a run has no single "
            "data set; use run_batch(data, seed, step, hparams) for the batch of one step"
        )
    return prepared


def run_batch(data: DataSource, seed, step: int, hparams: Mapping[str, Any] | None = None) -> Any:
    """The exact batch the run with this seed trains on at global step `step` (any source)."""
    return _evaluate(data, seed, hparams, step)
