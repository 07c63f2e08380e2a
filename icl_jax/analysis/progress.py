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
    "parent_attention",
    "lag_match_attention",
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


def _check_lags(lag) -> None:
    """A concrete lag (an int or one per sequence) must be integers >= 1; a traced one is used
    as it is."""
    if isinstance(lag, jax.core.Tracer):
        return
    lags = np.asarray(lag)
    if lags.dtype == bool or not np.issubdtype(lags.dtype, np.integer) or np.any(lags < 1):
        raise ValueError(f"lag must be an integer >= 1 (or one per sequence; got {lag!r})")


def _offset_attention(attn: jax.Array, offset_B: jax.Array, first_row: int = 0) -> jax.Array:
    """Mean over rows t >= max(d, first_row) of attn[t, t − d], per head: ``[B, H]`` (d =
    ``offset_B``, one per sequence, >= 0; a sequence with no such row scores 0)."""
    b, _, t, _ = attn.shape
    pos_T = jnp.arange(t)
    key_BxT = pos_T[None, :] - offset_B[:, None]
    valid_BxT = (key_BxT >= 0) & (pos_T >= first_row)[None, :]
    on_BxHxT = jnp.take_along_axis(attn, jnp.maximum(key_BxT, 0)[:, None, :, None], axis=-1)[..., 0]
    count_B = jnp.maximum(jnp.sum(valid_BxT, axis=-1), 1)
    return jnp.sum(jnp.where(valid_BxT[:, None], on_BxHxT, 0.0), axis=-1) / count_B[:, None]


def lag_attention(attn_BxHxTxT: jax.Array, lag) -> jax.Array:
    """Mean attention from position t to t − ℓ over t >= ℓ, per head: ``[B, H]``. ``lag`` is an
    int or a per-sequence ``[B]`` array (e.g. the lag of each sequence of the interleaved-lag
    task: the head that attends to the true parent x_{t−ℓ})."""
    attn = _check_attention(attn_BxHxTxT)
    _check_lags(lag)
    return _offset_attention(attn, jnp.broadcast_to(jnp.asarray(lag, jnp.int32), (attn.shape[0],)))


def parent_attention(attn_BxHxTxT: jax.Array, lag, first_row: int = 0) -> jax.Array:
    """Mean attention from row t to the lag-ℓ parent of the token it predicts, per head:
    ``[B, H]`` (docs/peer-tasks.md#interleaved-lags).

    Row t predicts x_{t+1}, which lag ℓ draws given x_{t+1−ℓ}; the score of a sequence is

        mean over rows t >= max(ℓ − 1, first_row) of  attn[t, t + 1 − ℓ],

    i.e. :func:`lag_attention` at offset ℓ − 1 (at ℓ = 1 the parent is x_t itself, the query's
    own position). With a known kernel P a head that attends to that parent and reads P's row
    predicts x_{t+1} without copying from matching keys. ``lag`` is an int or a per-sequence
    ``[B]`` array; evaluated at every candidate ℓ' and split by each sequence's true lag it gives
    the [true lag × candidate lag] parent-selection matrix. Comparing candidates, score them on
    the same rows, ``first_row = max(lags) − 1``: a causal row t has only t + 1 keys (row 0 puts
    all its mass on itself, the lag-1 parent), so the early rows would favour small lags."""
    attn = _check_attention(attn_BxHxTxT)
    _check_lags(lag)
    t = attn.shape[-1]
    if not isinstance(first_row, (int, np.integer)) or isinstance(first_row, bool) or not 0 <= first_row < t:
        raise ValueError(f"first_row must be an integer in [0, T − 1] = [0, {t - 1}] (got {first_row!r})")
    return _offset_attention(attn, jnp.broadcast_to(jnp.asarray(lag, jnp.int32), (attn.shape[0],)) - 1,
                             int(first_row))


def lag_match_attention(attn_BxHxTxT: jax.Array, tokens_BxT: jax.Array, lag, rows_BxT=None) -> jax.Array:
    """Selective-induction score: the attention mass on the keys whose lag-ℓ context matches
    the context of the token being predicted, per head: ``[B, H]``
    (docs/peer-tasks.md#interleaved-lags).

    Row t predicts x_{t+1}; under lag ℓ that token was drawn given x_{t+1−ℓ}. A key s >= ℓ
    *matches* when x_{s−ℓ} == x_{t+1−ℓ} (and s <= t): x_s followed the same lag-ℓ context, so
    a lag-ℓ induction head copies from exactly these keys. The score of a sequence is

        mean over rows t with at least one matching key of  Σ_{s matching} attn[t, s];

    rows without a matching key are left out (no head could score there), so a head that puts
    all of every row on matching keys scores exactly 1, and a sequence with no such row
    scores 0. ``lag`` is an int or a per-sequence ``[B]`` array (as in :func:`lag_attention`).
    Evaluated at every candidate ℓ' and split by each sequence's true lag, it gives the
    [true lag × candidate lag] selection matrix: a selective head is diagonal-dominant.

    Args:
      attn_BxHxTxT: attention maps (row t: weights on keys s <= t).
      tokens_BxT: the integer tokens x_0..x_{T−1} the maps were computed on.
      lag: ℓ >= 1, an int or one per sequence.
      rows_BxT: optional boolean mask of the rows to score (e.g. the trigger task's induction
        positions, where ℓ = 1 gives the induction head's attention on the successors of the
        earlier occurrences of x_t); None scores every row.
    """
    attn = _check_attention(attn_BxHxTxT)
    b, _, t, _ = attn.shape
    tokens_BxT = jnp.asarray(tokens_BxT)
    if tokens_BxT.shape != (b, t) or not jnp.issubdtype(tokens_BxT.dtype, jnp.integer):
        raise ValueError(f"tokens_BxT must be integer tokens of shape [B, T] = {(b, t)} matching attn_BxHxTxT "
                         f"(got {tokens_BxT.dtype}{tuple(tokens_BxT.shape)})")
    _check_lags(lag)
    lag_B = jnp.broadcast_to(jnp.asarray(lag, jnp.int32), (b,))
    pos_T = jnp.arange(t)
    # query t's context x_{t+1−ℓ} (exists for t >= ℓ−1); key s's context x_{s−ℓ} (exists for s >= ℓ)
    q_at_BxT = pos_T[None, :] + 1 - lag_B[:, None]
    k_at_BxT = pos_T[None, :] - lag_B[:, None]
    q_ctx_BxT = jnp.take_along_axis(tokens_BxT, jnp.clip(q_at_BxT, 0, t - 1), axis=1)
    k_ctx_BxT = jnp.take_along_axis(tokens_BxT, jnp.maximum(k_at_BxT, 0), axis=1)
    match_BxTxT = ((q_ctx_BxT[:, :, None] == k_ctx_BxT[:, None, :]) & (q_at_BxT >= 0)[:, :, None]
                   & (k_at_BxT >= 0)[:, None, :] & (pos_T[None, :] <= pos_T[:, None])[None])
    mass_BxHxT = jnp.sum(jnp.where(match_BxTxT[:, None], attn, 0.0), axis=-1)
    scored_BxT = jnp.any(match_BxTxT, axis=-1)
    if rows_BxT is not None:
        rows_BxT = jnp.asarray(rows_BxT)
        if rows_BxT.shape != (b, t) or rows_BxT.dtype != jnp.bool_:
            raise ValueError(f"rows_BxT must be a boolean mask of shape [B, T] = {(b, t)} "
                             f"(got {rows_BxT.dtype}{tuple(rows_BxT.shape)})")
        scored_BxT = scored_BxT & rows_BxT
    count_B = jnp.maximum(jnp.sum(scored_BxT, axis=-1), 1)
    return jnp.sum(jnp.where(scored_BxT[:, None], mass_BxHxT, 0.0), axis=-1) / count_B[:, None]


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
