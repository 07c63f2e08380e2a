r"""Layer-1 gradient of Nichani et al.'s reduced model at initialisation (docs/nichani-theory.md).

The reduced model (:mod:`icl_jax.models.reduced`, docs/models.md#reduced-model) at A1 = 0, A2 = β0·I_S. Code
positions are 0-based, 0..T−1; the paper's formulas use 1-based i, so the paper's "1/i"
(uniform layer-1 attention over i keys) is ``1/(i+1)`` here. Position T−1 is the query q.

**First order in β0 (finite T, one batch; derived and checked against autodiff).** With
c_i = (1/(i+1)) Σ_{k≤i} 1[x_k = q] and p̂ the token frequencies of all T positions
(query included),

.. math::
    \frac{∂L}{∂A^{(1)}_{ik}} = -\frac{β_0}{T (i+1)}\,
       E\Big[F_i\,\big(1[x_k = q] - c_i\big)\Big] + O(β_0^2), \quad k ≤ i,

    F_i = \frac{Y_{x_i}}{\hat p(x_i) + ε} - \sum_b \frac{Y_b\,\hat p_b}{\hat p_b + ε},

for the ε-floored soft-label loss −Σ_b Y_b log(f_b + ε); the hard-label loss −log(f_y + ε)
is the same with Y = e_y, i.e. F_i = (1[x_i = y] − p̂_y)/(p̂_y + ε), which is the first derivation's
1[x_i = y]/p̂(y) − 1 only at ε = 0. Each row sums to 0 over k ≤ i; entries with k > i are 0.

**Population form (docs/nichani-theory.md#population-form).** Replacing p̂ by μ_π (ε = 0) and
averaging the uniform, independent query gives E[F_i 1[x_k = q]] = g_ik/S with
g_ik = ⟨P_{k,i}, P_edge⟩_χ² − 1 and P_edge(a, b) = μ(a)π(b|a), so

.. math:: \frac{∂L}{∂A^{(1)}_{ik}} ≈ -\frac{β_0}{S\,T\,(i+1)}\Big(\bar g_{ik} - \frac{1}{i+1}\sum_{k'≤i} \bar g_{ik'}\Big),
          \qquad \bar g = E_π[g].

Query row (i = T−1, which the first derivation did not treat; derived here and checked by exact
enumeration): for a context key k the query plays the role of x_k itself, so
g_{T−1,k} = tr π − 1 (as for the self entry k = i), and its own entry is
g_{T−1,T−1} = Σ_a π(a,a)/μ(a) − S. The latter has an infinite prior expectation at small α
(a state a with μ(a) ≈ 0 but π(a, a) of order 1 is common), and at finite T the query's
own token is always in p̂ (p̂(q) ≥ 1/T), so the T → ∞ form says nothing about the query row
of a T = 20 model: :func:`population_g_monte_carlo` and the report leave that row out (NaN /
``null``); :func:`population_g` (one fixed π) keeps the exact limit.

**Layout.** :mod:`~icl_jax.theory.nichani.first_order` (first-order, exact and autodiff
gradients on a batch), :mod:`~icl_jax.theory.nichani.population` (tree joint laws, g and its
Monte-Carlo mean, predicted gradient, argmax/DPI checks),
:mod:`~icl_jax.theory.nichani.enumeration` (exact enumeration, exact population loss and
gradient), :mod:`~icl_jax.theory.nichani.report` (``nichani_gradient_report``). Derivations:
docs/nichani-theory.md#first-order-gradient, docs/nichani-theory.md#population-form.
"""

from icl_jax.theory.nichani.enumeration import (
    MAX_ENUMERATION as MAX_ENUMERATION,
    enumerate_sequences as enumerate_sequences,
    exact_population_gradient as exact_population_gradient,
    exact_population_loss as exact_population_loss,
)
from icl_jax.theory.nichani.first_order import (
    autodiff_gradient as autodiff_gradient,
    exact_gradient_at_init as exact_gradient_at_init,
    first_order_gradient as first_order_gradient,
)
from icl_jax.theory.nichani.population import (
    argmax_recovery as argmax_recovery,
    dpi_parent_is_argmax as dpi_parent_is_argmax,
    edge_chi2_information as edge_chi2_information,
    pairwise_joint_laws as pairwise_joint_laws,
    population_g as population_g,
    population_g_monte_carlo as population_g_monte_carlo,
    predicted_gradient as predicted_gradient,
    tree_pair_structure as tree_pair_structure,
)
from icl_jax.theory.nichani.report import nichani_gradient_report as nichani_gradient_report

__all__ = [
    "first_order_gradient",
    "autodiff_gradient",
    "exact_gradient_at_init",
    "tree_pair_structure",
    "pairwise_joint_laws",
    "population_g",
    "edge_chi2_information",
    "population_g_monte_carlo",
    "predicted_gradient",
    "argmax_recovery",
    "dpi_parent_is_argmax",
    "enumerate_sequences",
    "exact_population_loss",
    "exact_population_gradient",
    "nichani_gradient_report",
    "MAX_ENUMERATION",
]
