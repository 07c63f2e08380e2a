"""Layer-1 gradient ∂L/∂A1 of the reduced model at A1 = 0, A2 = β0·I_S on one batch: the
first-order (in β0) formula, the exact all-orders closed form, and ``jax.grad`` itself
(docs/nichani-theory.md#first-order-gradient,
docs/nichani-theory.md#correction-the-epsilon-floored-hard-label-factor). The formulas
and the 0-based convention are in the :mod:`icl_jax.theory.nichani` docstring."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from icl_jax.losses import DEFAULT_EPS, check_labels, cross_entropy_probs, targets
from icl_jax.models.reduced import ReducedModel, reduced_probs
from icl_jax.tasks.sampling import Batch
from icl_jax.theory.chi2 import safe_inverse
from icl_jax.theory.nichani._checks import _check_beta0, _check_eps

__all__ = ["first_order_gradient", "autodiff_gradient", "exact_gradient_at_init"]


def _normalised_weights(weights_B, b: int, dtype) -> jax.Array:
    if weights_B is None:
        return jnp.full((b,), 1.0 / b, dtype)
    w = jnp.asarray(weights_B, dtype)
    if w.shape != (b,):
        raise ValueError(f"weights_B must have shape ({b},) (got {w.shape})")
    return w / jnp.sum(w)


# ----------------------------------------------------------------- first-order gradient
@functools.partial(jax.jit, static_argnames=("vocab_size",))
def _first_order_core(tokens_BxT, target_BxS, freq_BxS, w_B, eps, vocab_size):
    r"""E_w[F_i (1[x_k = q] − c_i)] as a [T, T] matrix (lower triangle), no prefactor.

    ``freq_BxS`` is the frequency used in F (p̂ for the batch formula; μ for the population
    check)."""
    t = tokens_BxT.shape[1]
    dtype = target_BxS.dtype
    x_BxTxS = jax.nn.one_hot(tokens_BxT, vocab_size, dtype=dtype)
    match_BxT = (tokens_BxT == tokens_BxT[:, -1:]).astype(dtype)
    c_BxT = jnp.cumsum(match_BxT, axis=1) / jnp.arange(1, t + 1, dtype=dtype)[None, :]
    ratio_BxS = target_BxS * safe_inverse(freq_BxS + eps)
    f_BxT = jnp.einsum("bts,bs->bt", x_BxTxS, ratio_BxS) - jnp.sum(ratio_BxS * freq_BxS, axis=-1, keepdims=True)
    fm_TxT = jnp.einsum("b,bi,bk->ik", w_B, f_BxT, match_BxT)
    fc_T = jnp.einsum("b,bi,bi->i", w_B, f_BxT, c_BxT)
    mask = jnp.tril(jnp.ones((t, t), bool))
    return jnp.where(mask, fm_TxT - fc_T[:, None], 0.0)


def _row_prefactor(t: int, dtype) -> jax.Array:
    """1/(T·(i+1)) for the 0-based row i (1/(T·i) with a 1-based i)."""
    return 1.0 / (t * jnp.arange(1, t + 1, dtype=dtype))


def first_order_gradient(
    batch: Batch,
    beta0: float,
    eps: float = DEFAULT_EPS,
    labels: str = "soft",
    weights_B=None,
    chunk_size: int = 16384,
    *,
    frequencies=None,
) -> jax.Array:
    r"""First-order (in β0) estimate of ∂L/∂A1 at A1 = 0, A2 = β0·I_S from a batch
    (docs/nichani-theory.md#first-order-gradient).

    Args:
      batch: tokens ``[B, T]`` (query last) and labels.
      beta0: the scale of A2 at initialisation.
      eps: the loss floor ε of :meth:`~icl_jax.models.reduced.ReducedModel.loss`.
      labels: ``"soft"`` (Y = π(x_T, ·)) or ``"hard"`` (Y = e_y, y = ``batch.label_B``).
      weights_B: optional non-negative weights (normalised here); default the batch mean.
        Exact enumeration passes the sequence probabilities.
      chunk_size: sequences per chunk (memory only; the result does not depend on it).
      frequencies: replace p̂ in F_i by these token frequencies (``[S]`` or ``[B, S]``),
        e.g. μ_π: with ε = 0 and the exact weights of :func:`enumerate_sequences` this is
        exactly the population form −β0/(S·T·(i+1))·(g − row mean) of one fixed π.

    Returns:
      ``[T, T]`` gradient ∂L/∂A1 (not its negative), zero above the diagonal, rows sum to
      0. It matches ``jax.grad`` of ``ReducedModel.loss`` with relative error O(β0).
    """
    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    tokens = jnp.asarray(batch.tokens_BxT)
    b, t = tokens.shape
    s = batch.label_probs_BxS.shape[-1]
    dtype = jnp.result_type(float)
    w = _normalised_weights(weights_B, b, dtype)
    core = jnp.zeros((t, t), dtype)
    for start in range(0, b, chunk_size):
        sl = slice(start, start + chunk_size)
        part = jax.tree.map(lambda a: a[sl], batch)
        target = targets(part, labels, s, dtype)
        if frequencies is None:
            freq_BxS = jnp.mean(jax.nn.one_hot(tokens[sl], s, dtype=dtype), axis=1)
        else:
            freq_BxS = jnp.broadcast_to(jnp.asarray(frequencies, dtype), (b, s))[sl]
        core = core + _first_order_core(tokens[sl], target, freq_BxS, w[sl], eps, s)
    return -beta0 * _row_prefactor(t, dtype)[:, None] * core


# -------------------------------------------------------------------------- autodiff
@functools.partial(jax.jit, static_argnames=("labels",))
def _weighted_grad_a1(params, tokens_BxT, label_probs_BxS, label_B, w_B, eps, labels):
    def loss(a1):
        probs = reduced_probs({"A1": a1, "A2": params["A2"]}, tokens_BxT)
        s = probs.shape[-1]
        target = targets(Batch(tokens_BxT, label_probs_BxS, label_B), labels, s, probs.dtype)
        return jnp.sum(w_B * cross_entropy_probs(probs, target, eps=eps))

    return jax.grad(loss)(params["A1"])


@functools.partial(jax.jit, static_argnames=("labels",))
def _mean_grad_a1(params, batch, eps, labels):
    s, t = params["A2"].shape[0], params["A1"].shape[0]
    model = ReducedModel(s, t)
    return jax.grad(lambda a1: model.loss({"A1": a1, "A2": params["A2"]}, batch, labels=labels, eps=eps))(params["A1"])


def autodiff_gradient(
    batch: Batch,
    beta0: float,
    eps: float = DEFAULT_EPS,
    labels: str = "soft",
    weights_B=None,
    chunk_size: int = 16384,
) -> jax.Array:
    """``jax.grad`` of the reduced model's loss w.r.t. A1 at A1 = 0, A2 = β0·I_S.

    Without weights this is exactly ``jax.grad(ReducedModel.loss)`` of the batch mean
    (evaluated in chunks of ``chunk_size`` sequences, averaged with their sizes); with
    ``weights_B`` it is the gradient of Σ_n w_n ℓ_n / Σ_n w_n with the same per-sequence
    loss. Runs in the default float dtype (enable x64 for comparisons at small β0).
    """
    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    tokens = jnp.asarray(batch.tokens_BxT)
    b, t = tokens.shape
    s = batch.label_probs_BxS.shape[-1]
    dtype = jnp.result_type(float)
    params = ReducedModel(s, t).init(beta0=beta0, dtype=dtype)
    total = jnp.zeros((t, t), dtype)
    if weights_B is None:
        for start in range(0, b, chunk_size):
            part = jax.tree.map(lambda a: a[start : start + chunk_size], batch)
            n = part.tokens_BxT.shape[0]
            total = total + (n / b) * _mean_grad_a1(params, part, eps, labels)
        return total
    w = _normalised_weights(weights_B, b, dtype)
    for start in range(0, b, chunk_size):
        sl = slice(start, start + chunk_size)
        total = total + _weighted_grad_a1(
            params, tokens[sl], batch.label_probs_BxS[sl], batch.label_B[sl], w[sl], eps, labels
        )
    return total


def exact_gradient_at_init(
    batch: Batch, beta0: float, eps: float = DEFAULT_EPS, labels: str = "soft", weights_B=None
) -> jax.Array:
    r"""The exact (all orders in β0) closed-form ∂L/∂A1 at A1 = 0, A2 = β0·I_S.

    ∂L/∂A1_ik = −E[σ_i F^σ_i β0 (1[x_k = q] − c_i)/(i+1)] with σ = softmax(β0 c) the
    layer-2 attention and F^σ_i = Y_{x_i}/(f_{x_i}+ε) − Σ_b Y_b f_b/(f_b+ε), f = Σ_j σ_j e_{x_j}.
    At β0 → 0, σ_i → 1/T and f → p̂, which gives :func:`first_order_gradient`. Used to
    check the derivation to rounding error.
    """
    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    b = batch.tokens_BxT.shape[0]
    return _exact_at_init(batch, beta0, eps, labels, _normalised_weights(weights_B, b, jnp.result_type(float)))


@functools.partial(jax.jit, static_argnames=("labels",))
def _exact_at_init(batch, beta0, eps, labels, w):
    tokens = jnp.asarray(batch.tokens_BxT)
    t = tokens.shape[1]
    s = batch.label_probs_BxS.shape[-1]
    dtype = w.dtype
    target = targets(batch, labels, s, dtype)
    x_BxTxS = jax.nn.one_hot(tokens, s, dtype=dtype)
    match_BxT = (tokens == tokens[:, -1:]).astype(dtype)
    c_BxT = jnp.cumsum(match_BxT, axis=1) / jnp.arange(1, t + 1, dtype=dtype)[None, :]
    sigma_BxT = jax.nn.softmax(beta0 * c_BxT, axis=-1)
    f_BxS = jnp.einsum("bt,bts->bs", sigma_BxT, x_BxTxS)
    ratio_BxS = target * safe_inverse(f_BxS + eps)
    big_f_BxT = jnp.einsum("bts,bs->bt", x_BxTxS, ratio_BxS) - jnp.sum(ratio_BxS * f_BxS, axis=-1, keepdims=True)
    coef_BxT = w[:, None] * sigma_BxT * big_f_BxT
    fm = jnp.einsum("bi,bk->ik", coef_BxT, match_BxT)
    fc = jnp.sum(coef_BxT * c_BxT, axis=0)
    mask = jnp.tril(jnp.ones((t, t), bool))
    inv = 1.0 / jnp.arange(1, t + 1, dtype=dtype)
    return -beta0 * inv[:, None] * jnp.where(mask, fm - fc[:, None], 0.0)
