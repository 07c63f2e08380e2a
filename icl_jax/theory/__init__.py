"""Theory of the papers, checked numerically against autodiff and exact enumeration.

* :mod:`icl_jax.theory.chi2` — χ² inner products, divergences and mutual information of
  discrete joint laws (batched; NaN-free at zero marginals).
* :mod:`icl_jax.theory.chen` — Chen et al. (docs/chen-theory.md): exact stationary joint laws of n-gram
  windows, the modified (Ĩ_χ²) and standard (I_χ²) χ² selection criteria over head subsets
  by vmapped Monte Carlo (S* = argmax Ĩ), the stage-I first-order gradient on c and its
  replicator solution, the stage-III loss ℓ_∞(a), and the report behind
  ``icl-jax theory chen-selection``.
* :mod:`icl_jax.theory.nichani` — Nichani et al. (docs/nichani-theory.md): the layer-1 gradient of the reduced
  model at initialisation (first order in β0, exact closed form, autodiff), exact pairwise
  joint laws of tree tasks, the χ² population prediction and its DPI argmax, exact
  enumeration of tiny tasks, and the report behind ``icl-jax theory nichani-gradient``.

The public surface is what this file lists.
"""

from icl_jax.theory.chi2 import (
    chi2_divergence as chi2_divergence,
    chi2_inner as chi2_inner,
    chi2_mutual_information as chi2_mutual_information,
    marginals as marginals,
    safe_inverse as safe_inverse,
    weighted_chi2_mutual_information as weighted_chi2_mutual_information,
)
from icl_jax.theory.chen import (
    asymptotic_loss as asymptotic_loss,
    asymptotic_loss_monte_carlo as asymptotic_loss_monte_carlo,
    chen_selection_report as chen_selection_report,
    chen_subsets as chen_subsets,
    exact_c_gradient as exact_c_gradient,
    first_order_c_gradient as first_order_c_gradient,
    first_order_g as first_order_g,
    replicator_shares as replicator_shares,
    selection_monte_carlo as selection_monte_carlo,
    selector_kernels as selector_kernels,
    subset_information as subset_information,
    subset_joint_law as subset_joint_law,
    window_joint_law as window_joint_law,
)
from icl_jax.theory.nichani import (
    MAX_ENUMERATION as MAX_ENUMERATION,
    argmax_recovery as argmax_recovery,
    autodiff_gradient as autodiff_gradient,
    dpi_parent_is_argmax as dpi_parent_is_argmax,
    edge_chi2_information as edge_chi2_information,
    enumerate_sequences as enumerate_sequences,
    exact_gradient_at_init as exact_gradient_at_init,
    exact_population_gradient as exact_population_gradient,
    exact_population_loss as exact_population_loss,
    first_order_gradient as first_order_gradient,
    nichani_gradient_report as nichani_gradient_report,
    pairwise_joint_laws as pairwise_joint_laws,
    population_g as population_g,
    population_g_monte_carlo as population_g_monte_carlo,
    predicted_gradient as predicted_gradient,
    tree_pair_structure as tree_pair_structure,
)
