"""Helpers shared by the experiment packages (Nichani, Chen, the peers): the seed list, the
held-out test set (one ``fold_in`` stream independent of every run key), a baseline's mean ±
s.e., per-seed summaries, and the ``record_every <= steps`` rule.

Paper-specific helpers live in :mod:`icl_jax.experiments.nichani.common` and
:mod:`icl_jax.experiments.chen.common`; the recipes they serve are listed in
``docs/nichani-theory.md#official-recipes`` and ``docs/chen-theory.md#official-recipes``.
"""

from __future__ import annotations

import jax
import numpy as np

from icl_jax.tasks.sampling import Batch, SequenceBatch

TEST_STREAM = 10_000_019  # fold_in index of the test set: independent of every run key


def _seeds(config) -> list[int]:
    return [config.seed + i for i in range(config.seeds)]


def _test_key(config) -> jax.Array:
    return jax.random.fold_in(jax.random.key(config.seed), TEST_STREAM)


def _test_set(task, config, size=None) -> Batch:
    return task.sample(_test_key(config), size or config.test_size)


def _test_sequences(task, config) -> SequenceBatch:
    """The held-out set with a target at every position (the peers' experiments)."""
    return task.sample_sequences(_test_key(config), config.test_size)


def _loss_stat(values) -> dict:
    """A per-example loss array as its mean and standard error (a baseline's entry)."""
    v = np.asarray(values, np.float64)
    return {"loss": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(v.size))}


def _per_seed(values) -> dict:
    v = np.asarray(values, np.float64).reshape(-1)
    return {"mean": float(v.mean()), "sd": float(v.std()), "per_seed": v.tolist()}


def _mean_sd(stat: dict, digits: int = 4) -> str:
    """A :func:`_per_seed` summary as ``mean ± sd`` (the peers' summary rows)."""
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _check_record_every(config) -> None:
    """A config's ``record_every`` must not exceed its ``steps`` (``ValueError`` naming both)."""
    if config.record_every > config.steps:
        raise ValueError(f"record_every ({config.record_every}) must be <= steps ({config.steps})")
