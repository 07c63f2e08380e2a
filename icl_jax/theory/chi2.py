r"""χ² divergences, inner products and mutual information of discrete joint laws.

Nichani et al. (docs/nichani-theory.md#population-form): the layer-1 gradient of the reduced model
at initialisation is a χ² inner product between the joint law of two positions and the joint law of an edge,

.. math:: ⟨P, Q⟩_{χ²} = \sum_{a,b} \frac{P(a,b)\,Q(a,b)}{μ_x(a)\,μ_y(b)},
          \qquad I_{χ²}(P) = ⟨P, P⟩_{χ²} - 1 = χ²(P \,\|\, P_x ⊗ P_y).

Every function takes tables ``[..., S_x, S_y]`` and marginals ``[..., S]`` with the same
leading (batch) dimensions, so it works unchanged under ``jax.vmap`` and on stacked
tables. Cells whose reference marginal is zero contribute 0 (never NaN): for a joint law
with that marginal the cell itself is 0, so this is the limit of the formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "safe_inverse",
    "chi2_inner",
    "chi2_divergence",
    "chi2_mutual_information",
    "weighted_chi2_mutual_information",
    "marginals",
]


def safe_inverse(x: jax.Array) -> jax.Array:
    """1/x where x > 0, and 0 where x == 0 (the zero-marginal convention of this module)."""
    x = jnp.asarray(x)
    positive = x > 0
    return jnp.where(positive, 1.0 / jnp.where(positive, x, 1.0), 0.0)


def marginals(p_SxS: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Row and column marginals (P_x, P_y) of joint tables ``[..., S_x, S_y]``."""
    return jnp.sum(p_SxS, axis=-1), jnp.sum(p_SxS, axis=-2)


def chi2_inner(p_SxS: jax.Array, q_SxS: jax.Array, mu_x: jax.Array, mu_y: jax.Array) -> jax.Array:
    r""":math:`⟨P, Q⟩_{χ²} = \sum_{a,b} P(a,b) Q(a,b) / (μ_x(a) μ_y(b))`
    (docs/nichani-theory.md#population-form).

    Args:
      p_SxS, q_SxS: tables ``[..., S_x, S_y]`` (not necessarily normalised).
      mu_x: reference row marginal ``[..., S_x]``.
      mu_y: reference column marginal ``[..., S_y]``.

    Returns:
      ``[...]``; cells with μ_x(a) = 0 or μ_y(b) = 0 contribute 0.
    """
    weight = safe_inverse(mu_x)[..., :, None] * safe_inverse(mu_y)[..., None, :]
    return jnp.sum(p_SxS * q_SxS * weight, axis=(-2, -1))


def chi2_divergence(p_SxS: jax.Array, q_SxS: jax.Array) -> jax.Array:
    r""":math:`χ²(P\|Q) = \sum P²/Q - 1` over cells with Q > 0 (any shape, summed over the last
    two axes). Cells with Q = 0 are skipped (P ≪ Q is the caller's responsibility)."""
    return jnp.sum(p_SxS * p_SxS * safe_inverse(q_SxS), axis=(-2, -1)) - 1.0


def chi2_mutual_information(p_SxS: jax.Array) -> jax.Array:
    r"""χ² mutual information :math:`I_{χ²}(P) = \sum P(x,y)²/(P_x(x) P_y(y)) - 1` of joint
    laws ``[..., S_x, S_y]`` (docs/nichani-theory.md#special-values-and-the-dpi-argument); 0 exactly
    for product laws, NaN-free when a marginal has zeros."""
    px, py = marginals(p_SxS)
    return chi2_inner(p_SxS, p_SxS, px, py) - 1.0


def weighted_chi2_mutual_information(p_ExZ: jax.Array, power: float = 1) -> jax.Array:
    r"""μ(z)^power-weighted χ² information of joint laws ``[..., E, Z]`` (Chen et al.;
    docs/chen-theory.md#modified-chi-square-mutual-information),

    .. math:: \sum_z μ(z)^{w}\, D_{χ²}\big(μ(·|z) \,\|\, μ_E\big)
              = \sum_{e,z} \frac{μ(e,z)^2\, μ(z)^{w-2}}{μ(e)} - \sum_z μ(z)^{w},

    with μ_E, μ_Z the marginals of the first and second axis. ``power=1`` is the standard
    I_χ² (equal to :func:`chi2_mutual_information`, Nichani et al.'s criterion); ``power=2``
    is Chen et al.'s modified Ĩ_χ² = Σ μ(e,z)²/μ(e) − Σ_z μ(z)², whose extra factor μ(z) (a
    collision probability) penalises large conditioning sets (the official
    ``chi_square_mutual_info(joint, power=2)``). Cells with μ(e) = 0 or μ(z) = 0 contribute
    0 (their joint cells are 0), so no NaN.

    Args:
      p_ExZ: joint tables ``[..., E, Z]`` (the conditioned variable e first).
      power: the weight exponent w > 0 (1 standard, 2 modified).
    """
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not (power > 0 and power < float("inf")):
        raise ValueError(f"power must be a finite number > 0 (got {power!r})")
    p = jnp.asarray(p_ExZ)
    pe, pz = marginals(p)
    if power == 1:
        wz = safe_inverse(pz)
    elif power == 2:
        wz = jnp.where(pz > 0, 1.0, 0.0).astype(p.dtype)
    else:
        wz = jnp.where(pz > 0, jnp.where(pz > 0, pz, 1.0) ** (power - 2.0), 0.0)
    first = jnp.sum(p * p * safe_inverse(pe)[..., :, None] * wz[..., None, :], axis=(-2, -1))
    return first - jnp.sum(jnp.where(pz > 0, pz, 0.0) ** power, axis=-1)
