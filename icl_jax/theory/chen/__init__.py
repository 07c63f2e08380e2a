r"""Chen, Sheen, Wang & Yang's selection theory (docs/chen-theory.md).

**Exact per-π laws (docs/chen-theory.md#exact-stationary-window-laws).** For one n-gram kernel π
(parents at ``parent_offsets``, K = their largest offset) the stationary law of the window (x_{i−1},
…, x_{i−K}) is one linear solve (:func:`~icl_jax.tasks.priors.ngram_window_stationary`); extending
it forward by π gives the joint law of (x_i, x_{i−1}, …, x_{i−W}) for any W ≥ K, and its marginals the
joint μ(e, z_S) of the current token e = x_i and z_S = (x_{i−s})_{s∈S}. Everything is
batched over a leading axis of kernels (no Python loop over π draws).

**Selection criterion (docs/chen-theory.md#modified-chi-square-mutual-information).** With the
weighted χ² information of :func:`~icl_jax.theory.chi2.weighted_chi2_mutual_information`,

.. math::
    \tilde I_{χ²}(S) = E_π\Big[\sum_{e,z} \frac{μ(e,z)^2}{μ(e)} - \sum_z μ(z)^2\Big]
                     = E_π\Big[\sum_z μ(z)^2 D_{χ²}(μ(·|z)\,\|\,μ)\Big],
    \qquad I_{χ²}(S) = E_π\Big[\sum_z μ(z) D_{χ²}(μ(·|z)\,\|\,μ)\Big],

estimated by vmapped Monte Carlo over the Dirichlet(α) prior, and S* = argmax Ĩ over
S ⊆ [H], |S| ≤ D. Subsets are named by the offsets their heads copy under exact copying
(head h ↔ offset h), in the selector's official order (:meth:`InductionModel.subsets`).

**Stage I (docs/chen-theory.md#exact-gradient-on-c, derived here and checked against ``jax.grad``).** With
p_S = c_S²/‖c‖², K_S(l) = Π_{h∈S}⟨v_q^{(h)}, v_l^{(h)}⟩₊ (K_∅ = 1), σ = softmax_l(a·sim) and
ŷ = Σ_l σ_l x_l, the ε-floored hard-label loss −log((ŷ_y + ε)/(1 + dε)) of
:meth:`InductionModel.loss <icl_jax.models.induction.InductionModel.per_example_loss>` has, **exactly at every a**,

.. math::
    \frac{∂ℓ}{∂c_S} = -a\,\frac{2c_S}{\|c\|^2}\big(g_S - \textstyle\sum_{S'} p_{S'} g_{S'}\big),
    \qquad g_S = \frac{\sum_l σ_l\,(1[x_l = y] - ŷ_y)\,K_S(l)}{ŷ_y + ε}.

At a → 0 (σ_l = 1/L, ŷ_y = N(y)/L) this gives the first-order coefficient

.. math:: G_S = E\Big[\frac{\sum_l 1[x_l = y] K_S(l) - (N(y)/L)\sum_l K_S(l)}{N(y) + Lε}\Big],

the project's first form Σ_l 1[x_l=y]K_S(l)/N(y) − (1/L)Σ_l K_S(l) at ε = 0 (and exactly 0 for a
sequence whose target never occurs, instead of 0/0). So ∂ℓ/∂c_S = −a(2c_S/‖c‖²)(G_S − Σ p G)
+ O(a²) (relative error O(a); the constant factor 1/(1 + dε) drops out of the gradient).
Gradient flow then conserves ‖c‖² at first order and the shares follow the replicator
solution p_S(t) ∝ p_S(0)·exp(κ t G_S), κ = 4a/‖c‖² (:func:`replicator_shares`; for GD,
t = learning rate × steps).

**Stage III (docs/chen-theory.md#stage-iii-classifier-scale).** With S fixed, exact copying and L → ∞,
ŷ_a(e) = [e^a μ(e,z) + μ(e) − μ(e,z)]/[e^a μ(z) + 1 − μ(z)] and
ℓ_∞(a) = −E_π Σ_{e,z} μ(e,z) log ŷ_a(e), decreasing from H(X_0) at a = 0 to the
conditional entropy E_π H_μ(X_0 | X_{−S}) as a → ∞ (:func:`asymptotic_loss`).

**Layout.** :mod:`~icl_jax.theory.chen.window_laws` (window and subset laws, Ĩ_χ² / I_χ² per
subset, prior Monte Carlo, S*), :mod:`~icl_jax.theory.chen.dynamics` (stage I: replicator
shares, selector kernels, G_S, gradients on c), :mod:`~icl_jax.theory.chen.asymptotic`
(stage III: ℓ_∞(a)), :mod:`~icl_jax.theory.chen.report` (``chen_selection_report``).
Derivations: docs/chen-theory.md#modified-chi-square-mutual-information,
docs/chen-theory.md#stage-i-replicator-dynamics, docs/chen-theory.md#stage-iii-classifier-scale.
"""

from icl_jax.theory.chen.asymptotic import (
    asymptotic_loss as asymptotic_loss,
    asymptotic_loss_monte_carlo as asymptotic_loss_monte_carlo,
)
from icl_jax.theory.chen.dynamics import (
    exact_c_gradient as exact_c_gradient,
    first_order_c_gradient as first_order_c_gradient,
    first_order_g as first_order_g,
    replicator_shares as replicator_shares,
    selector_kernels as selector_kernels,
)
from icl_jax.theory.chen.report import chen_selection_report as chen_selection_report
from icl_jax.theory.chen.window_laws import (
    MAX_JOINT_CELLS as MAX_JOINT_CELLS,
    MAX_WINDOW_STATES as MAX_WINDOW_STATES,
    chen_subsets as chen_subsets,
    selection_monte_carlo as selection_monte_carlo,
    subset_information as subset_information,
    subset_joint_law as subset_joint_law,
    window_joint_law as window_joint_law,
)

__all__ = [
    "MAX_JOINT_CELLS",
    "MAX_WINDOW_STATES",
    "chen_subsets",
    "window_joint_law",
    "subset_joint_law",
    "subset_information",
    "selection_monte_carlo",
    "replicator_shares",
    "selector_kernels",
    "first_order_g",
    "first_order_c_gradient",
    "exact_c_gradient",
    "asymptotic_loss",
    "asymptotic_loss_monte_carlo",
    "chen_selection_report",
]
