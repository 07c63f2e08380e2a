"""Per-example losses shared by every model and baseline (docs/models.md#losses).

Every loss returns one value per example (shape ``[B]``) so callers can report Monte Carlo
standard errors; a model's ``loss`` is the batch mean of its ``per_example_loss``.

One label convention for the whole library (:data:`LABELS`):

* ``labels="soft"`` — score against the true next-token law ``batch.label_probs_BxS``
  (Nichani's official training target; lower variance, same expectation);
* ``labels="hard"`` — score against the sampled token ``batch.label_B`` (the papers' and
  Chen's official convention).

One floor for every predictor that can put zero mass on a possible token (mixture outputs,
hard counts, GIH): :data:`DEFAULT_EPS`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

__all__ = [
    "DEFAULT_EPS",
    "LABELS",
    "check_labels",
    "targets",
    "sequence_targets",
    "cross_entropy_probs",
    "cross_entropy_logits",
    "floored_probs",
    "official_double_softmax_ce",
    "entropy",
    "chunked_mean_fn",
]

DEFAULT_EPS = 1e-3
"""The library's one ε: probabilities are scored as the proper mixture (p + ε)/(1 + Sε)
(baselines, Chen's model) or as −Σ_b Y_b log(f_b + ε) (Nichani's reduced model). Mixture
outputs put exactly zero mass on a token absent from the context, so ε = 0 gives +∞ on a
small fraction of sequences (docs/models.md#the-epsilon-floor)."""

LABELS = ("soft", "hard")


def check_labels(labels: str) -> str:
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS} (got {labels!r})")
    return labels


def targets(batch, labels: str, vocab_size: int, dtype=jnp.float32) -> jax.Array:
    """``[B, S]`` target distributions of ``batch`` under the label convention ``labels``:
    the true law ``label_probs_BxS`` ("soft") or the one-hot sampled ``label_B`` ("hard")."""
    if check_labels(labels) == "soft":
        return jnp.asarray(batch.label_probs_BxS).astype(dtype)
    return jax.nn.one_hot(batch.label_B, vocab_size, dtype=dtype)


def sequence_targets(batch, labels: str, vocab_size: int, dtype=jnp.float32) -> jax.Array:
    """``[B, T, S]`` targets of a :class:`~icl_jax.tasks.sampling.SequenceBatch` at every position:
    ``label_probs_BxTxS`` ("soft") or the one-hot next tokens ``labels_BxT`` ("hard")."""
    if check_labels(labels) == "soft":
        return jnp.asarray(batch.label_probs_BxTxS).astype(dtype)
    return jax.nn.one_hot(batch.labels_BxT, vocab_size, dtype=dtype)


def cross_entropy_probs(probs_BxS: jax.Array, label_probs_BxS: jax.Array, eps: float = 0.0) -> jax.Array:
    r"""Cross-entropy of a predicted distribution, :math:`-\sum_b Y_b \log(f_b+ε)`.

    ``eps`` is the floor (docs/models.md#the-epsilon-floor) for predictors that can put zero mass on a
    possible token; 0 means no floor, so a zero where Y_b > 0 gives +inf (never NaN:
    0·log 0 counts as 0)."""
    return -jnp.sum(xlogy(label_probs_BxS, probs_BxS + eps), axis=-1)


def floored_probs(probs_BxS: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """The proper distribution (p + ε)/(1 + Sε): how zero-mass estimators are scored."""
    return (probs_BxS + eps) / (1.0 + probs_BxS.shape[-1] * eps)


def cross_entropy_logits(logits_BxS: jax.Array, label_probs_BxS: jax.Array) -> jax.Array:
    """Cross-entropy from logits via ``log_softmax`` (never log(softmax))."""
    return -jnp.sum(label_probs_BxS * jax.nn.log_softmax(logits_BxS, axis=-1), axis=-1)


def official_double_softmax_ce(probs_BxS: jax.Array, label_probs_BxS: jax.Array) -> jax.Array:
    r"""Chen's official metric: ``CrossEntropyLoss`` applied to probabilities.

    :math:`E_y[-f_y + \log\sum_e e^{f_e}]`; not a proper scoring rule
    (docs/quirks.md#chen-quirk-1)."""
    return cross_entropy_logits(probs_BxS, label_probs_BxS)


def entropy(probs_BxS: jax.Array) -> jax.Array:
    """Shannon entropy (nats) of each row."""
    return -jnp.sum(xlogy(probs_BxS, probs_BxS), axis=-1)


def chunked_mean_fn(per_example: Callable, batch, chunk_size: int = 8192) -> Callable:
    """``params → mean over every example of per_example(params, chunk)``, in chunks.

    ``per_example(params, batch_chunk) -> [C]`` is evaluated with ``lax.map`` over chunks of
    ``chunk_size`` examples, so a large test set never materialises its activations at once.
    The last chunk is padded with copies of example 0 that are masked out, so the mean
    covers **every** example of ``batch`` (a pytree with a common leading axis) exactly once.
    The chunks are laid out once, on the host, when this function is called.
    """
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (got {chunk_size!r})")
    n = jax.tree.leaves(batch)[0].shape[0]
    chunk = min(int(chunk_size), n)
    k = -(-n // chunk)
    index = np.arange(k * chunk)
    valid = jnp.asarray((index < n).reshape(k, chunk))
    index = np.where(index < n, index, 0)
    chunks = jax.tree.map(lambda x: jnp.asarray(x)[index].reshape((k, chunk) + x.shape[1:]), batch)

    def mean(params):
        def chunk_sum(args):
            part, ok = args
            return jnp.sum(jnp.where(ok, per_example(params, part), 0.0))

        return jnp.sum(jax.lax.map(chunk_sum, (chunks, valid))) / n

    return mean
