"""Per-example losses against soft labels (Nichani spec §4, Chen spec §4).

All functions return one value per example (shape ``[B]``) so callers can report Monte
Carlo standard errors; take ``.mean()`` for the batch loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

__all__ = ["cross_entropy_probs", "cross_entropy_logits", "official_double_softmax_ce", "entropy"]


def cross_entropy_probs(probs_BxS: jax.Array, label_probs_BxS: jax.Array, eps: float = 0.0) -> jax.Array:
    r"""Soft-label cross-entropy of a predicted distribution, :math:`-\sum_b Y_b \log(f_b+ε)`.

    ``eps`` is the documented floor of Nichani §3.3 / Chen §4 for predictors that can put
    zero mass on a possible token (mixture outputs, hard counts); 0 means no floor, so a
    zero where Y_b > 0 gives +inf (never NaN: 0·log 0 counts as 0)."""
    return -jnp.sum(xlogy(label_probs_BxS, probs_BxS + eps), axis=-1)


def cross_entropy_logits(logits_BxS: jax.Array, label_probs_BxS: jax.Array) -> jax.Array:
    """Soft-label cross-entropy from logits via ``log_softmax`` (never log(softmax))."""
    return -jnp.sum(label_probs_BxS * jax.nn.log_softmax(logits_BxS, axis=-1), axis=-1)


def official_double_softmax_ce(probs_BxS: jax.Array, label_probs_BxS: jax.Array) -> jax.Array:
    r"""Chen's official metric: ``CrossEntropyLoss`` applied to probabilities.

    :math:`E_y[-f_y + \log\sum_e e^{f_e}]`; not a proper scoring rule (Chen spec §4)."""
    return cross_entropy_logits(probs_BxS, label_probs_BxS)


def entropy(probs_BxS: jax.Array) -> jax.Array:
    """Shannon entropy (nats) of each row."""
    return -jnp.sum(xlogy(probs_BxS, probs_BxS), axis=-1)
