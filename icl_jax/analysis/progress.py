"""Progress measures of in-context learning: pure ``jnp`` functions of attention maps and
predictions, usable inside the engine's compiled metrics (docs/peer-tasks.md#progress-measures).

Attention maps are ``attn_BxHxTxT`` (row t: the weights position t puts on keys k <= t);
predictions are probabilities ``[B, T, S]`` with row t predicting x_{t+1}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "lag_attention",
    "previous_token_score",
    "repeated_random_tokens",
    "prefix_matching_score",
    "icl_score",
    "kl_to_strategies",
    "per_position_nll",
]


def _check_attention(attn) -> jax.Array:
    attn = jnp.asarray(attn)
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn_BxHxTxT must have shape [B, H, T, T] (got {attn.shape})")
    return attn


def lag_attention(attn_BxHxTxT: jax.Array, lag) -> jax.Array:
    """Mean attention from position t to t − ℓ over t >= ℓ, per head: ``[B, H]``. ``lag`` is an
    int or a per-sequence ``[B]`` array (e.g. the lag of each sequence of the interleaved-lag
    task: the head that attends to the true parent x_{t−ℓ})."""
    attn = _check_attention(attn_BxHxTxT)
    b, _, t, _ = attn.shape
    if not isinstance(lag, jax.core.Tracer):
        lags = np.asarray(lag)
        if lags.dtype == bool or not np.issubdtype(lags.dtype, np.integer) or np.any(lags < 1):
            raise ValueError(f"lag must be an integer >= 1 (or one per sequence; got {lag!r})")
    lag_B = jnp.broadcast_to(jnp.asarray(lag, jnp.int32), (b,))
    pos_T = jnp.arange(t)
    key_BxT = pos_T[None, :] - lag_B[:, None]
    valid_BxT = key_BxT >= 0
    on_BxHxT = jnp.take_along_axis(attn, jnp.maximum(key_BxT, 0)[:, None, :, None], axis=-1)[..., 0]
    count_B = jnp.maximum(jnp.sum(valid_BxT, axis=-1), 1)
    return jnp.sum(jnp.where(valid_BxT[:, None], on_BxHxT, 0.0), axis=-1) / count_B[:, None]


def previous_token_score(attn_BxHxTxT: jax.Array) -> jax.Array:
    """Mean attention from t to t − 1 (t >= 1) per head, averaged over the batch: ``[H]``."""
    return jnp.mean(lag_attention(attn_BxHxTxT, 1), axis=0)


def repeated_random_tokens(key: jax.Array, vocab_size: int, length: int, batch_size: int) -> jax.Array:
    """Uniform random tokens of ``length`` n, repeated once: ``int32[B, 2n]`` (Olsson et al.'s
    prefix-matching probe)."""
    if not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"length must be an integer >= 2 (got {length!r})")
    first = jax.random.randint(key, (batch_size, length), 0, vocab_size, dtype=jnp.int32)
    return jnp.concatenate([first, first], axis=1)


def prefix_matching_score(attn_BxHxTxT: jax.Array, length: int) -> jax.Array:
    """Olsson et al.'s prefix-matching (induction) score on :func:`repeated_random_tokens`: the
    mean attention from each position t of the second copy to t − n + 1, the token that followed
    its earlier occurrence, per head: ``[H]``. With a small vocabulary tokens repeat inside the
    first copy too, so even an exact induction head can split its attention and score below 1."""
    attn = _check_attention(attn_BxHxTxT)
    t = attn.shape[-1]
    if t != 2 * length:
        raise ValueError(f"attn_BxHxTxT covers {t} positions; the probe has 2 × length = {2 * length}")
    rows = jnp.arange(length, t)
    on = attn[:, :, rows, rows - length + 1]  # [B, H, n]
    return jnp.mean(on, axis=(0, 2))


def per_position_nll(probs_BxTxS: jax.Array, labels_BxT: jax.Array, eps: float = 0.0) -> jax.Array:
    """−log p(label) at every position, ``[B, T]`` (``eps`` floors p, for estimators with zeros)."""
    p = jnp.take_along_axis(jnp.asarray(probs_BxTxS), jnp.asarray(labels_BxT, jnp.int32)[..., None], axis=-1)[..., 0]
    return -jnp.log(jnp.maximum(p, eps) if eps else p)


def icl_score(loss_BxT: jax.Array, early: float = 0.1, late: float = 0.9) -> jax.Array:
    """Olsson et al.'s in-context-learning score: the mean loss at position ⌊late·(T−1)⌉ minus
    at ⌊early·(T−1)⌉ (Olsson: token 500 − token 50 of 512; here fractions of T). Negative when
    the model uses its context."""
    if not 0.0 <= early < late <= 1.0:
        raise ValueError(f"early, late must satisfy 0 <= early < late <= 1 (got {early}, {late})")
    loss = jnp.asarray(loss_BxT)
    t = loss.shape[-1]
    i, j = int(np.floor(early * (t - 1) + 0.5)), int(np.floor(late * (t - 1) + 0.5))
    return jnp.mean(loss[..., j]) - jnp.mean(loss[..., i])


def kl_to_strategies(probs_BxTxS: jax.Array, strategies: dict, *, positions=None, eps: float = 1e-12) -> dict:
    """KL(strategy ‖ model) per named strategy, averaged over sequences and ``positions``
    (default all): ``{name: scalar}``. The KL is on the next-token laws at each position
    (Edelman et al.'s stage measure)."""
    q = jnp.maximum(jnp.asarray(probs_BxTxS), eps)
    out = {}
    for name, p in strategies.items():
        p = jnp.asarray(p)
        kl = jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.maximum(p, eps)) - jnp.log(q)), 0.0), axis=-1)
        out[name] = jnp.mean(kl if positions is None else kl[:, positions])
    return out
