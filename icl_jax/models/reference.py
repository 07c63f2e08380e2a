"""Naive reference forwards, for tests and benchmarks only (not re-exported by
:mod:`icl_jax.models`).

Each computes a model's output the way the official code does — full attention at every
position in every layer, dense relative-position matrices — so the efficient forwards of
the models can be checked against them (float64 equality) and timed against them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import numpy as np

from icl_jax.models.catformer import _check_shapes, _split, attend_all, catformer_embed
from icl_jax.models.induction_layers import masked_softmax, normalise, offsets_and_mask, padded_onehot, rpe_logits

__all__ = ["catformer_stream", "catformer_logits_naive", "copier_features_dense"]


def catformer_stream(params: dict, h0_BxTxD: jax.Array) -> jax.Array:
    """CatFormer's full stream h^(L) at every position (the official design).

    ``h0_BxTxD`` is any embedding of width d_0 (usually
    :func:`~icl_jax.models.catformer.catformer_embed`; continuous ones for causality tests)."""
    layers, _ = _split(params)
    h = h0_BxTxD
    for a in layers:
        h, _ = attend_all(h, a)
    return h


def catformer_logits_naive(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """Logits Wᵀ h^(L)_{T−1} through :func:`catformer_stream`."""
    s, _ = _check_shapes(params, tokens_BxT)
    w = params["W"]
    h = catformer_stream(params, catformer_embed(tokens_BxT, s, w.dtype))
    return h[:, -1] @ w


def copier_features_dense(params, tokens_BxT: jax.Array, model) -> jax.Array:
    """Reference layer 1 in the official design: per head a dense ``[L+1, L+1]`` matrix of
    RPE logits w_{i−j} (plus content logits for the full model), masked to the window,
    softmaxed per row and multiplied with X̃. O(B·H·L²·d); for tests and benchmarks."""
    d = model.vocab_size
    dtype = params["W"].dtype
    x = padded_onehot(tokens_BxT, d, dtype)
    n = x.shape[1]
    offsets, mask = offsets_and_mask(model)
    rpe = rpe_logits(params, model)  # [K', H]
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]  # i − j
    slot = np.full((n, n), -1)
    for k, o in enumerate(offsets):
        slot[lag == o] = k
    valid = (slot >= 0)[:, :, None] & mask[np.maximum(slot, 0)]  # [L+1, L+1, H]
    logits = rpe[np.maximum(slot, 0)]  # [L+1, L+1, H]
    if model.full:
        qk = jnp.einsum("hde,hfe->hdf", params["Q"], params["K"])
        content = jnp.einsum("bid,hdf,bjf->bijh", x, qk, x)
        attn = masked_softmax(logits[None] + content, jnp.asarray(valid)[None], axis=2)
        u = jnp.einsum("bijh,bjd->bihd", attn, x)
        u = jnp.einsum("bihd,hde->bihe", u, params["OV"])
    else:
        attn = masked_softmax(logits, jnp.asarray(valid), axis=1)
        u = jnp.einsum("ijh,bjd->bihd", attn, x)
    return normalise(u, params, model)
