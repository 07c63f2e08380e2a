r"""Layers of Chen, Sheen, Wang & Yang's induction-head model (Chen et al.;
docs/models.md#chen-induction-model): the relative-position copier, the selector and the
classifier, as pure functions of ``(params, tokens, model)`` where ``model`` is an
:class:`~icl_jax.models.induction.InductionModel` (only its static structure is read).

Layer 1, the **copier** (Chen et al.; docs/models.md#copier): H heads of relative-positional softmax
attention. Head h at position i mixes the earlier tokens x̃_{i−k} over the offsets k of its window with
weights softmax_k(w^{(h)}_k) (content-independent in the simplified model), and the output is
rescaled to unit norm (zero stays zero). The query slot L+1 holds the all-zero token, so
there offset k copies x_{L+1−k}: the target's parents.

The **selector** (docs/models.md#selector, FFN with normalisation) and layer 2, the **classifier**
(docs/models.md#classifier): feature map φ(U) = (c_S ⊗_{h∈S} v^{(h)})_{|S|≤D}, so the query–key similarity is

.. math:: \mathrm{sim}(q, l) = \frac{\sum_S c_S^2 \prod_{h∈S} ⟨v_q^{(h)}, v_l^{(h)}⟩_+}{\sum_S c_S^2},

and the output is ŷ = Σ_l softmax_l(a·sim(q, l)) x_l ∈ Δ_d (values are the raw one-hot
tokens). Products are exact (``where(in S, ip, 1)``), not the official exp(Σ log(ip + 1e−24)).

:func:`copier_features` is banded: one gather of the K shifted copies of X̃ and a masked
softmax over a K×H logit table per position, O(B·L·H·K·d), never an (L+1)×(L+1) matrix; it
equals the official dense design (:func:`icl_jax.models.reference.copier_features_dense`)
up to float rounding (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.models.tokens import check_tokens

__all__ = [
    "copier_attention",
    "copier_features",
    "selector_similarity",
    "subset_kernel_sum",
    "subset_shares",
    "induction_probs",
]


# ----------------------------------------------------------------------------- layer 1
def offsets_and_mask(model):
    """Offsets (0 first when the self offset is on) and the ``bool[K', H]`` window mask."""
    mask = model.window_mask()
    offsets = np.arange(1, model.max_offset + 1)
    if model.use_self_offset:
        offsets = np.concatenate([[0], offsets])
        mask = np.concatenate([np.ones((1, model.num_heads), bool), mask])
    return offsets, mask


def rpe_logits(params, model) -> jax.Array:
    """``[K', H]`` RPE logits, the fixed self logit first when the self offset is on."""
    w = params["W"]
    if model.use_self_offset:
        w = jnp.concatenate([jnp.full((1, model.num_heads), model.self_logit, w.dtype), w])
    return w


def padded_onehot(tokens_BxT, d: int, dtype) -> jax.Array:
    """X̃ ``[B, L+1, d]``: one-hot tokens and the all-zero query slot."""
    x = jax.nn.one_hot(tokens_BxT, d, dtype=dtype)
    return jnp.pad(x, ((0, 0), (0, 1), (0, 0)))


def normalise(u_BxIxHxd, params, model) -> jax.Array:
    if model.norm_kind == "unit":
        # NaN-safe norm: u = 0 (no valid offset) must give v = 0 and a finite gradient
        n2 = jnp.sum(jnp.square(u_BxIxHxd), axis=-1, keepdims=True)
        norm = jnp.where(n2 > 0, jnp.sqrt(jnp.where(n2 > 0, n2, 1.0)), 0.0)
        return u_BxIxHxd / (norm + model.norm_eps)
    mean = jnp.mean(u_BxIxHxd, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(u_BxIxHxd - mean), axis=-1, keepdims=True)
    scale, bias = params["ln_scale"][None, None, None, :], params["ln_bias"][None, None, None, :]
    return (u_BxIxHxd - mean) * jax.lax.rsqrt(var + model.ln_eps) * scale + bias


def masked_softmax(logits, valid, axis):
    """Softmax over ``axis`` restricted to ``valid``; rows with no valid entry give 0
    (the official code turns that NaN row into zeros)."""
    neg = jnp.where(valid, logits, -jnp.inf)
    peak = jnp.max(neg, axis=axis, keepdims=True)
    e = jnp.where(valid, jnp.exp(neg - jnp.where(jnp.isfinite(peak), peak, 0.0)), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def copier_attention(params, model, seq_len: int) -> jax.Array:
    """Content-free attention ``[L+1, K', H]`` of the simplified copier: weight of offset
    ``offsets[k]`` for head h at position i (0-indexed; row L is the query slot). For the
    full model this is the RPE part only (the content logits are added per sequence)."""
    offsets, mask = offsets_and_mask(model)
    pos = np.arange(seq_len + 1)
    valid = (pos[:, None] - offsets[None, :] >= 0)[:, :, None] & mask[None]  # [L+1, K', H]
    logits = jnp.broadcast_to(rpe_logits(params, model)[None], valid.shape)
    return masked_softmax(logits, jnp.asarray(valid), axis=1)


def _shift(x_BxIxd, k: int) -> jax.Array:
    """X̃_{i−k} for every position i (zero rows where i − k < 1): a static pad and slice."""
    if k == 0:
        return x_BxIxd
    return jnp.pad(x_BxIxd, ((0, 0), (k, 0), (0, 0)))[:, : x_BxIxd.shape[1]]


def copier_features(params, tokens_BxT: jax.Array, model) -> jax.Array:
    """Layer-1 head outputs after normalisation, ``v [B, L+1, H, d]`` (banded; docs/models.md#copier).

    Each offset k contributes attn[i, k, h]·X̃_{i−k}: K' shifted copies (static pad and
    slice) weighted by a masked softmax over the ``[L+1, K', H]`` logit table, which in the
    simplified model is content-free and shared by the batch; the full model adds content
    logits x̃_iᵀ Q_h K_hᵀ x̃_{i−k} per sequence. Cost O(B·L·H·K'·d), fused elementwise ops
    (a dot_general with the position as batch axis is ~10× slower on CPU)."""
    d = model.vocab_size
    dtype = params["W"].dtype
    x = padded_onehot(tokens_BxT, d, dtype)  # [B, L+1, d]
    n = x.shape[1]
    offsets, mask = offsets_and_mask(model)
    shifted = [_shift(x, int(k)) for k in offsets]  # K' × [B, L+1, d]
    valid = (np.arange(n)[:, None] - offsets[None, :] >= 0)[:, :, None] & mask[None]  # [L+1, K', H]
    rpe = rpe_logits(params, model)
    if model.full:
        qk = jnp.einsum("hde,hfe->hdf", params["Q"], params["K"])  # Q_h K_hᵀ
        q = jnp.einsum("bid,hdf->bihf", x, qk)  # [B, L+1, H, d]
        content = jnp.stack([jnp.sum(q * s[:, :, None, :], axis=-1) for s in shifted], axis=2)  # [B, L+1, K', H]
        attn = masked_softmax(content + rpe[None, None], jnp.asarray(valid)[None], axis=2)
    else:
        attn = masked_softmax(jnp.broadcast_to(rpe[None], valid.shape), jnp.asarray(valid), axis=1)[None]
    u = sum(attn[:, :, k, :, None] * s[:, :, None, :] for k, s in enumerate(shifted))  # [B, L+1, H, d]
    if model.full:
        u = jnp.einsum("bihd,hde->bihe", u, params["OV"])
    return normalise(u, params, model)


# ------------------------------------------------------------------ selector + layer 2
def _head_inner_products(v_BxIxHxd, model) -> list:
    """Per head ``[B, L]`` the (ReLU'd) ⟨v_q^{(h)}, v_l^{(h)}⟩ (elementwise products and a
    sum over d: a dot_general batched over (b, h) is much slower on CPU)."""
    vq = v_BxIxHxd[:, -1:]  # [B, 1, H, d]
    ip = jnp.sum(vq * v_BxIxHxd[:, :-1], axis=-1)  # [B, L, H]
    if model.relu:
        ip = jax.nn.relu(ip)
    return [ip[..., h] for h in range(model.num_heads)]


def subset_kernel_sum(ip_per_head: list, c, model) -> jax.Array:
    """Σ_S c_S² Π_{h∈S} ip_h / Σ_S c_S² for per-head inner products of any shape. Subsets
    with the raw-token component contribute 0 (its query value is the zero token) but stay
    in the normaliser. Products are exact, not exp(Σ log(ip + 1e−24))."""
    c2 = jnp.square(c)
    total = jnp.zeros_like(ip_per_head[0])
    for s, subset in enumerate(model.subsets()):
        if 0 in subset:
            continue
        term = jnp.ones_like(ip_per_head[0])
        for h in subset:
            term = term * ip_per_head[h - 1]
        total = total + c2[s] * term
    return total / jnp.sum(c2)


def selector_similarity(params, v_BxIxHxd, tokens_BxT, model) -> jax.Array:
    """sim(q, l) = Σ_S c_S² Π_{h∈S} ⟨v_q^h, v_l^h⟩₊ / Σ_S c_S², ``[B, L]`` (docs/models.md#selector)."""
    return subset_kernel_sum(_head_inner_products(v_BxIxHxd, model), params["C"], model)


def subset_shares(params) -> jax.Array:
    """p_S = c_S² / Σ c² (Chen et al.'s plotted shares; docs/chen-theory.md#replicator-flow)."""
    c2 = jnp.square(params["C"])
    return c2 / jnp.sum(c2, axis=-1, keepdims=True)


def induction_probs(params, tokens_BxT: jax.Array, model) -> jax.Array:
    """ŷ ``[B, d]``: the model's distribution of x_{L+1} given x_1..x_L (Chen et al.;
    docs/models.md#classifier). Tokens: integer ids in [0, d−1], ``[B, L]`` with L >= 1
    (:func:`~icl_jax.models.tokens.check_tokens`)."""
    tokens_BxT = jnp.asarray(check_tokens(tokens_BxT, model.vocab_size))
    v = copier_features(params, tokens_BxT, model)
    sim = selector_similarity(params, v, tokens_BxT, model)
    attn = jax.nn.softmax(params["a"] * sim, axis=-1)  # [B, L]
    x = jax.nn.one_hot(tokens_BxT, model.vocab_size, dtype=attn.dtype)
    return jnp.einsum("bl,bld->bd", attn, x)
