r"""Sufficient-statistics forward of the simplified Chen model (content-free copier).

In the simplified model (docs/models.md#window-statistics) layer-1 attention depends only on
positions, so head h's feature v_l^{(h)} is a function of the *window code* of position l: the tokens at
offsets 1..K (K = ``model.max_offset``), with a pad symbol d where l − k < 1. Hence

.. math:: ŷ_b(e) = \frac{\sum_l n_{bl}\, e^{a\,\mathrm{Sim}[q_b, s_{bl}]}\, 1\{x_{bl} = e\}}
                       {\sum_l n_{bl}\, e^{a\,\mathrm{Sim}[q_b, s_{bl}]}},

with Sim a small table (query codes d^K × window codes (d+1)^K) computed once per step from
W and c, q_b the query's code and s_{bl} the code of position l. A training step then costs
one table build plus a gather over the sequence, instead of O(L·H·K·d) feature work per
sequence. With :func:`compress_window_stats` (host-side, for fixed datasets) equal
(code, token) pairs of a sequence are merged with their count n, so the cost is the number
of *distinct* pairs per sequence (a few tens at α = 0.1, L = 100).

The result equals :func:`icl_jax.models.induction_layers.induction_probs` up to float rounding
(tested). Not available for the full model or a self offset (content-dependent layer 1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.models.induction_layers import masked_softmax, normalise, subset_kernel_sum

__all__ = [
    "WindowStats",
    "window_stats",
    "compress_window_stats",
    "window_similarity_table",
    "induction_probs_from_stats",
    "MAX_TABLE_ENTRIES",
]

# The Sim table has d^K × (d+1)^K entries; beyond this the position-wise forward is cheaper.
MAX_TABLE_ENTRIES = 1 << 22


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WindowStats:
    """Per-sequence window statistics (a pytree: every field is a batch-leading array).

    Attributes:
      query_B: code of the query's window (x_L, …, x_{L+1−K}) in base d.
      code_BxP: row of each entry's window among the reachable codes (tokens at offsets
        1..K in base d+1, digit d = before the sequence start).
      token_BxP: the token x_l voted by each entry.
      count_BxP: multiplicity of each entry (1 per position; 0 for padding).
      label_B, label_probs_BxS: the targets, as in :class:`~icl_jax.tasks.sampling.Batch`.
    """

    query_B: jax.Array
    code_BxP: jax.Array
    token_BxP: jax.Array
    count_BxP: jax.Array
    label_B: jax.Array
    label_probs_BxS: jax.Array


def _check_model(model) -> None:
    if model.full or model.use_self_offset:
        raise ValueError("window statistics need a content-free copier: full=False and no self offset")
    d, k = model.vocab_size, model.max_offset
    if d**k * (d + 1) ** k > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"window statistics: the similarity table would have {d**k * (d + 1) ** k} entries "
            f"(vocab_size={d}, max_offset={k}); at most {MAX_TABLE_ENTRIES}: use induction_probs"
        )


def window_stats(batch, model) -> WindowStats:
    """Window codes of every position and of the query (traceable; P = L, counts 1)."""
    _check_model(model)
    tokens = jnp.asarray(batch.tokens_BxT)
    d, k = model.vocab_size, model.max_offset
    b, n = tokens.shape
    if n < k:
        raise ValueError(f"tokens: the sequence length {n} must be >= max_offset = {k} (the query needs a full window)")
    padded = jnp.concatenate([jnp.full((b, k), d, tokens.dtype), tokens], axis=1)  # pad = d
    code = jnp.zeros((b, n), jnp.int32)
    query = jnp.zeros((b,), jnp.int32)
    for j in range(1, k + 1):  # static loop over offsets
        code = code + padded[:, k - j : k - j + n].astype(jnp.int32) * (d + 1) ** (j - 1)
        query = query + tokens[:, n - j].astype(jnp.int32) * d ** (j - 1)
    code = jnp.asarray(_reachable_codes(model)[1], jnp.int32)[code]
    return WindowStats(query, code, tokens.astype(jnp.int32), jnp.ones((b, n), jnp.float32),
                       jnp.asarray(batch.label_B), jnp.asarray(batch.label_probs_BxS))


def compress_window_stats(stats: WindowStats) -> WindowStats:
    """Merge equal (code, token) entries of each sequence (host-side numpy, once per fixed
    dataset); P becomes the largest number of distinct entries over the batch."""
    code = np.asarray(stats.code_BxP, np.int64)
    tok = np.asarray(stats.token_BxP, np.int64)
    cnt = np.asarray(stats.count_BxP, np.float64)
    b, p = code.shape
    d = int(tok.max()) + 1 if tok.size else 1
    key = np.where(cnt > 0, code * d + tok, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")
    key_s = np.take_along_axis(key, order, axis=1)
    cnt_s = np.take_along_axis(cnt, order, axis=1)
    new = np.ones_like(key_s, bool)
    new[:, 1:] = key_s[:, 1:] != key_s[:, :-1]
    slot = np.cumsum(new, axis=1) - 1
    valid = key_s != np.iinfo(np.int64).max
    width = int((slot * valid).max()) + 1
    out_key = np.zeros((b, width), np.int64)
    out_cnt = np.zeros((b, width), np.float64)
    rows = np.broadcast_to(np.arange(b)[:, None], slot.shape)
    np.add.at(out_cnt, (rows[valid], slot[valid]), cnt_s[valid])
    out_key[rows[valid], slot[valid]] = key_s[valid]
    return WindowStats(
        stats.query_B,
        jnp.asarray(out_key // d, jnp.int32),
        jnp.asarray(out_key % d, jnp.int32),
        jnp.asarray(out_cnt, jnp.float32),
        stats.label_B,
        stats.label_probs_BxS,
    )


def _code_tokens(model, base: int) -> np.ndarray:
    """``int[base^K, K]``: digit j−1 of each code = the token at offset j (d = pad)."""
    k = model.max_offset
    codes = np.arange(base**k)
    return np.stack([(codes // base ** (j - 1)) % base for j in range(1, k + 1)], axis=1)


def _reachable_codes(model):
    """Window codes that occur (pads only beyond the sequence start, i.e. a suffix of the
    offsets): their tokens ``[C, K]`` and the map base-(d+1) code → row (−1 if unreachable)."""
    d = model.vocab_size
    tokens = _code_tokens(model, d + 1)
    pad = tokens == d
    ok = np.all(pad[:, 1:] >= pad[:, :-1], axis=1)  # once padded, padded for larger offsets
    index = np.full(len(tokens), -1, np.int64)
    index[ok] = np.arange(ok.sum())
    return tokens[ok], index


def _code_features(params, model, tokens_CxK: np.ndarray) -> jax.Array:
    """Normalised head features ``[C, H, d]`` of each window (docs/models.md#copier)."""
    d = model.vocab_size
    valid = (tokens_CxK < d)[:, :, None] & model.window_mask()[None]  # [C, K, H]
    w = params["W"]
    attn = masked_softmax(jnp.broadcast_to(w[None], valid.shape), jnp.asarray(valid), axis=1)
    onehot = jax.nn.one_hot(tokens_CxK, d, dtype=w.dtype)  # pad → zero row
    u = sum(attn[:, k, :, None] * onehot[:, k, None, :] for k in range(tokens_CxK.shape[1]))  # [C, H, d]
    return normalise(u, params, model)


def window_similarity_table(params, model) -> jax.Array:
    """Sim ``[d^K, C]``: selector similarity of every query window with every reachable
    position window (C of the (d+1)^K codes, pads a suffix) (docs/models.md#selector, same ReLU and
    exact products as the position-wise model)."""
    _check_model(model)
    d = model.vocab_size
    vq = _code_features(params, model, _code_tokens(model, d))
    vk = _code_features(params, model, _reachable_codes(model)[0])
    # one plain matmul per head (a dot_general batched over h is much slower on CPU)
    ip = [vq[:, h] @ vk[:, h].T for h in range(model.num_heads)]  # H × [d^K, (d+1)^K]
    if model.relu:
        ip = [jax.nn.relu(x) for x in ip]
    return subset_kernel_sum(ip, params["C"], model)


def induction_probs_from_stats(params, stats: WindowStats, model) -> jax.Array:
    """ŷ ``[B, d]`` from window statistics (equal to ``induction_probs`` on the tokens)."""
    table = window_similarity_table(params, model)
    n_codes = table.shape[1]
    sim = jnp.take(table.reshape(-1), stats.query_B[:, None] * n_codes + stats.code_BxP)  # [B, P]
    logits = params["a"] * sim
    present = stats.count_BxP > 0
    peak = jnp.max(jnp.where(present, logits, -jnp.inf), axis=1, keepdims=True)
    w = stats.count_BxP * jnp.exp(jnp.where(present, logits - peak, 0.0))
    # one masked sum per token: a dot_general batched over b is much slower on CPU
    votes = stats.token_BxP[:, :, None] == jnp.arange(model.vocab_size)[None, None, :]
    num = jnp.sum(jnp.where(votes, w[:, :, None], 0.0), axis=1)
    return num / jnp.sum(w, axis=1, keepdims=True)
