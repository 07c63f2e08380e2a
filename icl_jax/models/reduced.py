r"""The reduced two-layer model of Nichani et al.'s theory (spec §3.3).

Trainable A1 ∈ R^{T×T} (positional attention only) and A2 ∈ R^{S×S}:

* layer 1: s¹_ij = softmax_{j≤i}(A1_ij), v_j = Σ_{k≤j} s¹_jk e_{x_k} (the soft parent token);
* layer 2: σ_j = softmax_{j≤T}(e_{x_T}ᵀ A2 v_j) (the query is position T, all j attend);
* output:  f_θ(X) = Σ_j σ_j e_{x_j} ∈ Δ^S (a mixture of the context tokens, no readout).

The loss is −log f_y, or with soft labels Y and the documented floor ε,
−Σ_b Y_b log(f_b + ε) (spec §3.3 caveat: f_b = 0 whenever b never occurs in the context, so
ε = 0 can give +∞ at small T). Parameters ``{"A1": [T, T], "A2": [S, S]}``; the top-level
keys are the engine's stage groups (Algorithm 1 trains A1, then A2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from icl_jax.losses import cross_entropy_probs

__all__ = ["reduced_init", "reduced_probs", "reduced_loss", "reduced_layer1_attention", "DEFAULT_EPS"]

DEFAULT_EPS = 1e-3
"""Default ε of the floored soft-label loss (spec §3.3 suggests 1e-2 or 1e-3)."""


def reduced_init(seq_len: int, vocab_size: int, beta0=1.0, dtype=jnp.float32) -> dict:
    """A1 = 0, A2 = β0·I_S (the initialisation of Algorithm 1, spec §5.2)."""
    if int(seq_len) != seq_len or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2 (got {seq_len!r})")
    if int(vocab_size) != vocab_size or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2 (got {vocab_size!r})")
    return {"A1": jnp.zeros((seq_len, seq_len), dtype), "A2": beta0 * jnp.eye(vocab_size, dtype=dtype)}


def reduced_layer1_attention(params: dict) -> jax.Array:
    """s¹ = causally masked row softmax of A1 ([T, T]; row i over keys j ≤ i)."""
    a1 = params["A1"]
    t = a1.shape[0]
    mask = jnp.tril(jnp.ones((t, t), bool))
    return jax.nn.softmax(jnp.where(mask, a1, -jnp.inf), axis=-1)


def reduced_probs(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """f_θ(X) = Σ_j σ_j e_{x_j}, shape [B, S]."""
    a1, a2 = params["A1"], params["A2"]
    t, s = a1.shape[0], a2.shape[0]
    if a1.shape != (t, t) or a2.shape != (s, s):
        raise ValueError(f"A1 must be [T, T] and A2 [S, S] (got {a1.shape}, {a2.shape})")
    if tokens_BxT.ndim != 2 or tokens_BxT.shape[1] != t:
        raise ValueError(f"tokens_BxT must have shape [B, {t}] to match A1 (got {tokens_BxT.shape})")
    x_BxTxS = jax.nn.one_hot(tokens_BxT, s, dtype=a1.dtype)
    v_BxTxS = jnp.einsum("jk,bks->bjs", reduced_layer1_attention(params), x_BxTxS)
    score_BxT = jnp.einsum("bs,st,bjt->bj", x_BxTxS[:, -1], a2, v_BxTxS)
    return jnp.einsum("bj,bjs->bs", jax.nn.softmax(score_BxT, axis=-1), x_BxTxS)


def reduced_loss(params: dict, batch, eps=DEFAULT_EPS, labels: str = "soft") -> jax.Array:
    """Batch-mean loss of the reduced model (spec §4).

    Args:
      params: ``{"A1", "A2"}``.
      batch: a :class:`~icl_jax.Batch`.
      eps: floor ε in −Σ_b Y_b log(f_b + ε) (``labels="soft"``) or −log(f_y + ε)
        (``labels="hard"``, y = ``batch.label_B``); 0 gives the unfloored loss.
      labels: ``"soft"`` (the official soft label π(x_T, ·)) or ``"hard"`` (sampled y,
        the paper's convention; same expectation).
    """
    if labels not in ("soft", "hard"):
        raise ValueError(f"labels must be 'soft' or 'hard' (got {labels!r})")
    probs = reduced_probs(params, batch.tokens_BxT)
    if labels == "soft":
        target = batch.label_probs_BxS.astype(probs.dtype)
    else:
        target = jax.nn.one_hot(batch.label_B, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(cross_entropy_probs(probs, target, eps=eps))
