"""Theory of the papers, checked numerically against autodiff and exact enumeration.

* :mod:`icl_jax.theory.chi2` — χ² inner products, divergences and mutual information of
  discrete joint laws (batched; NaN-free at zero marginals).
* :mod:`icl_jax.theory.nichani` — Nichani et al. §6: the layer-1 gradient of the reduced
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
