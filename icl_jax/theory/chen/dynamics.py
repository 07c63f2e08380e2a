"""Stage I on the selector coefficients c: the replicator solution for the shares
p_S = c_S²/‖c‖², the selector kernels K_S(l), the first-order coefficients G_S and the
first-order and exact gradients on c (docs/chen-theory.md#stage-i-replicator-dynamics,
docs/chen-theory.md#exact-gradient-on-c, docs/chen-theory.md#first-order-coefficient,
docs/chen-theory.md#replicator-flow). Formulas in the :mod:`icl_jax.theory.chen` docstring."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from icl_jax.losses import DEFAULT_EPS
from icl_jax.models.induction import InductionModel
from icl_jax.models.induction_layers import copier_features, selector_similarity
from icl_jax.theory.chen._checks import _check_eps

__all__ = [
    "replicator_shares",
    "selector_kernels",
    "first_order_g",
    "first_order_c_gradient",
    "exact_c_gradient",
]


# --------------------------------------------------------------------- stage I: replicator
def replicator_shares(
    g_S: jax.Array,
    times_T: jax.Array,
    a,
    c0_S: jax.Array | None = None,
    *,
    p0_S: jax.Array | None = None,
    c_norm2=None,
) -> jax.Array:
    r"""Replicator prediction of stage I: p_S(t) ∝ p_S(0)·exp(κ t G_S), κ = 4a/‖c‖²
    (docs/chen-theory.md#replicator-flow).

    Args:
      g_S: first-order coefficients G_S (:func:`first_order_g`; or Ĩ_χ²(S) as the L → ∞,
        exact-copier proxy), ``[n_subsets]``.
      times_T: gradient-flow times ``[T]``; for GD with learning rate η, t = η × step.
      a: the classifier scale (frozen in stage I).
      c0_S: initial selector coefficients; gives p_S(0) = c_S²/‖c‖² and ‖c‖². Or pass
      p0_S, c_norm2: the initial shares and ‖c‖² directly.

    Returns:
      ``[T, n_subsets]`` shares (rows sum to 1). ‖c‖² is conserved by the first-order flow.
    """
    g = jnp.asarray(g_S)
    if c0_S is not None:
        if p0_S is not None or c_norm2 is not None:
            raise ValueError("pass either c0_S or (p0_S, c_norm2), not both")
        c0 = jnp.asarray(c0_S, g.dtype)
        if c0.shape != g.shape or g.ndim != 1:
            raise ValueError(f"g_S and c0_S must have the same shape [n_subsets] (got {g.shape}, {c0.shape})")
        return _replicator_from_c(g, jnp.atleast_1d(jnp.asarray(times_T, g.dtype)), jnp.asarray(a, g.dtype), c0)
    if p0_S is None or c_norm2 is None:
        raise ValueError("replicator_shares needs c0_S, or both p0_S and c_norm2")
    p0 = jnp.asarray(p0_S, g.dtype)
    if p0.shape != g.shape or g.ndim != 1:
        raise ValueError(f"g_S and p0_S must have the same shape [n_subsets] (got {g.shape}, {p0.shape})")
    t = jnp.atleast_1d(jnp.asarray(times_T, g.dtype))
    return _replicator(g, t, jnp.asarray(a, g.dtype), p0, jnp.asarray(c_norm2, g.dtype))


@jax.jit
def _replicator(g_S, t_T, a, p0_S, c_norm2):
    kappa = 4.0 * a / c_norm2
    log_p0 = jnp.where(p0_S > 0, jnp.log(jnp.where(p0_S > 0, p0_S, 1.0)), -jnp.inf)
    return jax.nn.softmax(log_p0[None, :] + kappa * t_T[:, None] * g_S[None, :], axis=-1)


@jax.jit
def _replicator_from_c(g_S, t_T, a, c0_S):
    c2 = jnp.square(c0_S)
    return _replicator(g_S, t_T, a, c2 / jnp.sum(c2), jnp.sum(c2))


# ------------------------------------------------------------ stage I: gradient on c
def selector_kernels(params, tokens_BxT: jax.Array, model: InductionModel) -> jax.Array:
    """K_S(l) = Π_{h∈S}⟨v_q^{(h)}, v_l^{(h)}⟩₊ for every selector subset, ``[B, L, n_subsets]``
    (docs/models.md#selector), from the model's own copier features at ``params["W"]``: the model's
    similarity with c one-hot on S."""
    v = copier_features(params, tokens_BxT, model)
    eye = jnp.eye(model.num_subsets, dtype=params["C"].dtype)
    one = lambda c: selector_similarity({**params, "C": c}, v, tokens_BxT, model)  # noqa: E731
    return jnp.moveaxis(jax.vmap(one)(eye), 0, -1)


@functools.partial(jax.jit, static_argnames=("model",))
def _g_terms(params, tokens, label, model, eps, a):
    """g_S = mean_b Σ_l σ_l(1[x_l=y] − ŷ_y)K_S(l)/(ŷ_y + ε) with σ = softmax(a·sim): the exact
    coefficient at scale a, and at a = 0 (σ = 1/L, ŷ_y = N(y)/L) exactly the first-order G_S.
    A sequence with ŷ_y + ε = 0 (ε = 0, target absent) contributes 0 (its numerator is 0)."""
    v = copier_features(params, tokens, model)
    sim = selector_similarity(params, v, tokens, model)
    sigma = jax.nn.softmax(a * sim, axis=-1)  # [B, L]
    kern = selector_kernels(params, tokens, model)  # [B, L, n_S]
    hit = (tokens == label[:, None]).astype(sigma.dtype)
    y_hat = jnp.sum(sigma * hit, axis=1)  # ŷ_y
    den = (y_hat + eps)[:, None]
    w = jnp.where(den > 0, sigma * (hit - y_hat[:, None]) / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.mean(jnp.einsum("bl,bls->bs", w, kern), axis=0)


def first_order_g(params, batch, model: InductionModel, *, eps: float = DEFAULT_EPS) -> jax.Array:
    r"""First-order coefficients G_S from a batch (docs/chen-theory.md#first-order-coefficient),
    ``[n_subsets]``:

    G_S = mean_b [Σ_l 1[x_l = y] K_S(l) − (N(y)/L) Σ_l K_S(l)] / (N(y) + Lε),

    with K_S from the model's copier features at ``params["W"]`` (any window, any W) and
    the hard label y = ``batch.label_B``; ε is the floor of ``InductionModel.loss`` (the exact
    a → 0 limit of its hard-label gradient; ε = 0 is the project's first form Σ 1[x_l=y]K_S/N(y) − ΣK_S/L
    with 0 for sequences whose target never occurs). With exact copiers and L → ∞ it
    tends to Ĩ_χ²(S) (positive finite-L bias). Evaluated as the exact coefficient g_S of
    :func:`exact_c_gradient` at a = 0, where it reduces to this formula."""
    _check_eps(eps)
    zero = jnp.zeros((), params["C"].dtype)
    return _g_terms(params, jnp.asarray(batch.tokens_BxT), jnp.asarray(batch.label_B), model, eps, zero)


def _centred_c_gradient(params, g_S):
    c = params["C"]
    c2 = jnp.square(c)
    norm2 = jnp.sum(c2)
    p = c2 / norm2
    return -params["a"] * (2.0 * c / norm2) * (g_S - jnp.sum(p * g_S))


def first_order_c_gradient(params, batch, model: InductionModel, *, eps: float = DEFAULT_EPS) -> jax.Array:
    r"""∂ℓ/∂c ≈ −a·(2c_S/‖c‖²)(G_S − Σ_{S'} p_{S'} G_{S'})
    (docs/chen-theory.md#first-order-coefficient), ``[n_subsets]``: the gradient (not its negative)
    of ``InductionModel.loss(params, batch, ..., loss="prob_ce", labels="hard", eps=eps)`` w.r.t.
    ``params["C"]`` to first order in a (relative error O(a))."""
    return _centred_c_gradient(params, first_order_g(params, batch, model, eps=eps))


def exact_c_gradient(params, batch, model: InductionModel, *, eps: float = DEFAULT_EPS) -> jax.Array:
    r"""Closed-form ∂ℓ/∂c at any a (module docstring): −a(2c_S/‖c‖²)(g_S − Σ p g) with
    g_S = mean_b Σ_l σ_l(1[x_l=y] − ŷ_y)K_S(l)/(ŷ_y + ε). Equals ``jax.grad`` of the hard-label
    ``prob_ce`` loss to rounding error; used to check the derivation of
    :func:`first_order_c_gradient`."""
    _check_eps(eps)
    g = _g_terms(params, jnp.asarray(batch.tokens_BxT), jnp.asarray(batch.label_B), model, eps, params["a"])
    return _centred_c_gradient(params, g)
