r"""Sufficient-statistics forward of the Chen model: window codes and a similarity table
(docs/models.md#window-statistics).

Layer 1 is banded: head h at position l reads only the tokens at the offsets of its window,
1..K (K = ``model.max_offset``), plus offset 0 when the self offset is on; offsets before the
sequence start are masked out of the softmax. So head h's feature v_l^{(h)} is a function of

* the *window code* of l: the tokens at offsets 1..K, with a pad symbol d where l − k < 1
  (an invalid offset), and
* x_l itself, when layer 1 reads it: the self offset copies x_l, and the Appendix-B full
  model's content logits x̃_lᵀ Q_h K_hᵀ x̃_{l−k} depend on it (docs/models.md#appendix-b-full-model).
  The code then has one more digit, x_l. The query slot L+1 holds the all-zero token: its
  offset 0 is valid with a zero value and content logit 0 (logit = ``self_logit``), the same
  for every query, so query codes need no such digit.

OV_h and the normalisation (unit norm or LayerNorm) act on each position's attention output
alone, so they are functions of the code too. Hence

.. math:: ŷ_b(e) = \frac{\sum_l n_{bl}\, e^{a\,\mathrm{Sim}[q_b, s_{bl}]}\, 1\{x_{bl} = e\}}
                       {\sum_l n_{bl}\, e^{a\,\mathrm{Sim}[q_b, s_{bl}]}},

with Sim a small table (query codes d^K × position codes (d+1)^K, times d with the x_l digit)
computed once per step from the parameters, q_b the query's code and s_{bl} the code of
position l. A training step then costs one table build plus a gather over the sequence,
instead of O(L·H·K·d) feature work per sequence. With :func:`compress_window_stats`
(host-side, for fixed datasets) equal (code, token) pairs of a sequence are merged with their
count n, so the cost is the number of *distinct* pairs per sequence (a few tens at α = 0.1,
L = 100). A sequence shorter than K has pads in its query window too; query codes then cover
the K − pads offsets inside the sequence (``WindowStats.query_pads``, static).

The result equals :func:`icl_jax.models.induction_layers.induction_probs` up to float rounding,
values and gradients, for the simplified and the full model (tested in float64). For large
batches the gather's gradient is accumulated over copies of the table (``_gather``), which
keeps the float32 gradients as accurate as the position-wise forward's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.models.induction_layers import masked_softmax, normalise, offsets_and_mask, rpe_logits, subset_kernel_sum

__all__ = [
    "WindowStats",
    "window_stats",
    "compress_window_stats",
    "compress_window_stats_to",
    "compressed_width",
    "window_similarity_table",
    "induction_probs_from_stats",
    "table_entries",
    "MAX_TABLE_ENTRIES",
]

# The Sim table has table_entries(model) entries; beyond this the position-wise forward is cheaper.
MAX_TABLE_ENTRIES = 1 << 22


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WindowStats:
    """Per-sequence window statistics (a pytree: every array field is batch-leading).

    Attributes:
      query_B: code of the query's window (x_L, …, x_{L+1−K'}) in base d, K' = K − query_pads.
      code_BxP: column of each entry in the similarity table: the row of its window among
        the reachable codes (tokens at offsets 1..K in base d+1, digit d = before the
        sequence start), plus x_l × (number of reachable codes) when layer 1 reads x_l
        (full model or self offset).
      token_BxP: the token x_l voted by each entry.
      count_BxP: multiplicity of each entry (1 per position; 0 for padding).
      label_B, label_probs_BxS: the targets, as in :class:`~icl_jax.tasks.sampling.Batch`.
      query_pads: static; the query's offsets before the sequence start, max(0, K − L).
    """

    query_B: jax.Array
    code_BxP: jax.Array
    token_BxP: jax.Array
    count_BxP: jax.Array
    label_B: jax.Array
    label_probs_BxS: jax.Array
    query_pads: int = dataclasses.field(default=0, metadata=dict(static=True))


def _reads_own_token(model) -> bool:
    """Whether position l's layer-1 output depends on x_l itself: through the self offset's
    value, or through the full model's content logits x̃_lᵀ Q_h K_hᵀ x̃_{l−k}."""
    return model.full or model.use_self_offset


def table_entries(model) -> int:
    """Entries of the Sim table: d^K query codes × (d+1)^K window codes, × d for the x_l
    digit when layer 1 reads x_l (an upper bound: only windows padded as a suffix occur)."""
    d, k = model.vocab_size, model.max_offset
    return d**k * (d + 1) ** k * (d if _reads_own_token(model) else 1)


def _check_model(model) -> None:
    n = table_entries(model)
    if n > MAX_TABLE_ENTRIES:
        raise ValueError(
            f"window statistics: the similarity table would have {n} entries (vocab_size={model.vocab_size}, "
            f"max_offset={model.max_offset}, full={model.full}, self offset={model.use_self_offset}); "
            f"at most {MAX_TABLE_ENTRIES}: use induction_probs"
        )


def window_stats(batch, model) -> WindowStats:
    """Window codes of every position and of the query (traceable; P = L, counts 1)."""
    _check_model(model)
    tokens = jnp.asarray(batch.tokens_BxT)
    d, k = model.vocab_size, model.max_offset
    b, n = tokens.shape
    pads = max(0, k - n)  # query offsets before the sequence start (static: n is a shape)
    padded = jnp.concatenate([jnp.full((b, k), d, tokens.dtype), tokens], axis=1)  # pad = d
    code = jnp.zeros((b, n), jnp.int32)
    query = jnp.zeros((b,), jnp.int32)
    for j in range(1, k + 1):  # static loop over offsets
        code = code + padded[:, k - j : k - j + n].astype(jnp.int32) * (d + 1) ** (j - 1)
    for j in range(1, k - pads + 1):
        query = query + tokens[:, n - j].astype(jnp.int32) * d ** (j - 1)
    reach, index = _reachable_codes(model)
    code = jnp.asarray(index, jnp.int32)[code]
    if _reads_own_token(model):
        code = code + tokens.astype(jnp.int32) * len(reach)  # the x_l digit, most significant
    return WindowStats(query, code, tokens.astype(jnp.int32), jnp.ones((b, n), jnp.float32),
                       jnp.asarray(batch.label_B), jnp.asarray(batch.label_probs_BxS), pads)


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
        stats.query_pads,
    )


def compressed_width(stats: WindowStats) -> int:
    """The largest number of distinct (code, token) entries of one sequence (host-side): the
    ``width`` :func:`compress_window_stats_to` needs for these statistics, i.e. the width of
    :func:`compress_window_stats`."""
    return int(compress_window_stats(stats).code_BxP.shape[1])


def compress_window_stats_to(stats: WindowStats, width: int, vocab_size: int) -> WindowStats:
    """:func:`compress_window_stats` inside a compiled program (a fixed dataset drawn on
    device): equal (code, token) entries of each sequence merged into ``width`` static slots,
    in the same order as the host version. The step then costs the distinct entries, not L
    (at α = 0.1, L = 100: at most ~40, ~14 on average).

    ``width`` must be at least :func:`compressed_width` of the same statistics (a host pass
    over the same data). If a sequence has more distinct entries, its counts become NaN, so a
    loss on them is NaN and training stops, instead of silently dropping entries."""
    code, tok, cnt = stats.code_BxP, stats.token_BxP, stats.count_BxP
    b, p = code.shape
    top = jnp.iinfo(jnp.int32).max
    key = jnp.where(cnt > 0, code * vocab_size + tok, top)
    order = jnp.argsort(key, axis=1, stable=True)
    key_s = jnp.take_along_axis(key, order, axis=1)
    cnt_s = jnp.take_along_axis(cnt, order, axis=1)
    new = jnp.concatenate([jnp.ones((b, 1), bool), key_s[:, 1:] != key_s[:, :-1]], axis=1)
    valid = key_s != top
    slot = jnp.where(valid, jnp.cumsum(new, axis=1) - 1, width)  # slot `width` is dropped
    rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, p))
    out_cnt = jnp.zeros((b, width), cnt.dtype).at[rows, slot].add(cnt_s, mode="drop")
    out_key = jnp.zeros((b, width), key.dtype).at[rows, slot].max(jnp.where(valid, key_s, 0), mode="drop")
    lost = jnp.sum(cnt, axis=1, keepdims=True) != jnp.sum(out_cnt, axis=1, keepdims=True)
    return dataclasses.replace(stats, code_BxP=out_key // vocab_size, token_BxP=out_key % vocab_size,
                               count_BxP=jnp.where(lost, jnp.nan, out_cnt))


def _code_tokens(model, base: int) -> np.ndarray:
    """``int[base^K, K]``: digit j−1 of each code = the token at offset j (d = pad)."""
    k = model.max_offset
    codes = np.arange(base**k)
    return np.stack([(codes // base ** (j - 1)) % base for j in range(1, k + 1)], axis=1)


def _query_tokens(model, pads: int) -> np.ndarray:
    """``int[d^(K−pads), K]``: the query windows, base-d codes over offsets 1..K−pads (inside
    the sequence) and the pad d at the last ``pads`` offsets (before the sequence start)."""
    d, k = model.vocab_size, model.max_offset
    codes = np.arange(d ** (k - pads))
    digits = [(codes // d ** (j - 1)) % d for j in range(1, k - pads + 1)]
    return np.stack(digits + [np.full_like(codes, d)] * pads, axis=1)


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


def _position_tokens(model) -> tuple[np.ndarray, np.ndarray]:
    """Own token ``[C']`` and window ``[C', K]`` of every table column (the column order of
    ``WindowStats.code_BxP``). Without the x_l digit the own token is d (never read)."""
    reach = _reachable_codes(model)[0]
    d = model.vocab_size
    if not _reads_own_token(model):
        return np.full(len(reach), d), reach
    return np.repeat(np.arange(d), len(reach)), np.tile(reach, (d, 1))


def _code_features(params, model, own_C: np.ndarray, window_CxK: np.ndarray) -> jax.Array:
    """Layer-1 head outputs after OV and normalisation, ``[C, H, d]``, of positions with own
    token ``own_C`` and window ``window_CxK`` (the same computation as
    :func:`~icl_jax.models.induction_layers.copier_features` at one position;
    docs/models.md#copier, docs/models.md#appendix-b-full-model).

    Token d is the zero vector: a pad in the window (an invalid offset, masked from the
    softmax) or the query's all-zero own token (a valid self offset with value 0 and content
    logit 0)."""
    d = model.vocab_size
    w = params["W"]
    offsets, mask = offsets_and_mask(model)  # offset 0 first when the self offset is on
    if model.use_self_offset:
        tok = np.concatenate([own_C[:, None], window_CxK], axis=1)  # [C, K'], column j = offsets[j]
        tok_ok = np.concatenate([np.ones((len(own_C), 1), bool), window_CxK < d], axis=1)
    else:
        tok, tok_ok = window_CxK, window_CxK < d
    valid = jnp.asarray(tok_ok[:, :, None] & mask[None])  # [C, K', H]
    onehot = jax.nn.one_hot(tok, d, dtype=w.dtype)  # token d → zero row
    rpe = rpe_logits(params, model)  # [K', H]
    if model.full:
        qk = jnp.einsum("hde,hfe->hdf", params["Q"], params["K"])  # Q_h K_hᵀ
        q = jnp.einsum("cd,hdf->chf", jax.nn.one_hot(own_C, d, dtype=w.dtype), qk)  # [C, H, d]
        logits = jnp.einsum("chf,ckf->ckh", q, onehot) + rpe[None]
    else:
        logits = jnp.broadcast_to(rpe[None], valid.shape)
    attn = masked_softmax(logits, valid, axis=1)
    u = sum(attn[:, j, :, None] * onehot[:, j, None, :] for j in range(tok.shape[1]))  # [C, H, d]
    if model.full:
        u = jnp.einsum("chd,hde->che", u, params["OV"])
    return normalise(u[None], params, model)[0]  # normalise broadcasts over [B, I, H, d]


def window_similarity_table(params, model, query_pads: int = 0) -> jax.Array:
    """Sim ``[d^(K−query_pads), C']``: selector similarity of every query window with every
    position code (C' columns: the reachable windows, pads a suffix, times the d values of
    x_l when layer 1 reads it) (docs/models.md#selector, same ReLU and exact products as the
    position-wise model)."""
    _check_model(model)
    d = model.vocab_size
    query_win = _query_tokens(model, query_pads)
    vq = _code_features(params, model, np.full(len(query_win), d), query_win)  # own token: the zero query slot
    vk = _code_features(params, model, *_position_tokens(model))
    # one plain matmul per head (a dot_general batched over h is much slower on CPU)
    ip = [vq[:, h] @ vk[:, h].T for h in range(model.num_heads)]  # H × [d^K, C']
    if model.relu:
        ip = [jax.nn.relu(x) for x in ip]
    return subset_kernel_sum(ip, params["C"], model)


# Copies of the table that the gather's gradient scatters into (see _gather): at most this
# many, and none unless at least MIN_GRADIENT_COPIES fit.
MAX_GRADIENT_COPIES = 128
MIN_GRADIENT_COPIES = 8


def _gather(table, index_BxP) -> jax.Array:
    """``table.reshape(-1)[index_BxP]``, with a better-conditioned gradient.

    The gradient of a gather is a scatter-add, which XLA:CPU accumulates in sequence. At
    α = 0.1 a few cells (the windows of long constant runs) collect tens of thousands of the
    B·L raw entries, and the gradient then cancels to a much smaller value (a softmax
    Jacobian): in float32 the full model's gradient of C at init was off by ~3e−3 (relative,
    9000 × 100 raw entries), 100× worse than on compressed statistics. So sequence b reads
    copy b mod G of the table: each copy collects ~1/G of the entries, and the copies' cotangents
    are summed by a reduction (the transpose of the broadcast; the error above drops to
    1.5e−5). G = B·P / (2·table size), at most MAX_GRADIENT_COPIES: two entries per cell of
    the copies on average, so the copies are no larger than the gathered array (measured:
    within the noise of a few % per step on the paper-window tables). G = 1 when fewer than
    MIN_GRADIENT_COPIES fit: a large table has few entries per cell (little to gain), and
    there 2–4 copies cost 5–20 % of the step (the official-window simplified table, 88k cells).
    The value is the plain gather's."""
    b, p = index_BxP.shape
    copies = min(MAX_GRADIENT_COPIES, b * p // (2 * table.size), b)
    flat = table.reshape(-1)
    if copies < MIN_GRADIENT_COPIES:
        return jnp.take(flat, index_BxP)
    tiled = jnp.broadcast_to(flat[None], (copies, flat.size)).reshape(-1)
    return jnp.take(tiled, (jnp.arange(b) % copies)[:, None] * flat.size + index_BxP)


def induction_probs_from_stats(params, stats: WindowStats, model) -> jax.Array:
    """ŷ ``[B, d]`` from window statistics (equal to ``induction_probs`` on the tokens)."""
    table = window_similarity_table(params, model, stats.query_pads)
    sim = _gather(table, stats.query_B[:, None] * table.shape[1] + stats.code_BxP)  # [B, P]
    logits = params["a"] * sim
    present = stats.count_BxP > 0
    peak = jnp.max(jnp.where(present, logits, -jnp.inf), axis=1, keepdims=True)
    w = stats.count_BxP * jnp.exp(jnp.where(present, logits - peak, 0.0))
    # one masked sum per token: a dot_general batched over b is much slower on CPU
    votes = stats.token_BxP[:, :, None] == jnp.arange(model.vocab_size)[None, None, :]
    num = jnp.sum(jnp.where(votes, w[:, :, None], 0.0), axis=1)
    return num / jnp.sum(w, axis=1, keepdims=True)
