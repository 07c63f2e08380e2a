"""The JSON selection table behind ``icl-jax theory chen-selection``: Ĩ_χ², I_χ² and
E_π H(X_0 | X_{−S}) of every selector subset, S* and the I_χ² maximisers
(docs/chen-theory.md#values-in-the-default-configuration,
docs/chen-theory.md#size-penalty-and-the-tie)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import jax
import numpy as np

from icl_jax.tasks.graphs import ngram_offsets
from icl_jax.theory.chen._checks import _check_alpha, _check_int
from icl_jax.theory.chen.window_laws import _check_sizes, chen_subsets, selection_monte_carlo

__all__ = ["chen_selection_report"]


def chen_selection_report(
    vocab_size: int = 3,
    parent_offsets: Sequence[int] = (1, 2),
    num_heads: int = 3,
    max_degree: int = 2,
    alpha: float = 0.1,
    *,
    draws: int = 4096,
    seed: int = 0,
) -> dict:
    r"""JSON-ready Ĩ_χ² / I_χ² selection table behind ``icl-jax theory chen-selection``
    (docs/chen-theory.md#modified-chi-square-mutual-information), computed in float64 from ``draws``
    kernels of the prior (key ``seed``).

    ``subsets`` lists, per S (official order): ``offsets``, ``label``, ``modified_chi2``,
    ``chi2``, ``conditional_entropy`` (E_π H(X_0|X_{−S}), the a → ∞ loss of
    docs/chen-theory.md#stage-iii-classifier-scale) with ``*_se``, and ``win_fraction``.
    ``selected`` = argmax Ĩ; ``chi2_maximisers`` = every S whose I_χ² is within 1e−9 (relative) of
    the largest (adding a non-parent offset to a set containing all parents leaves I_χ² unchanged,
    so I alone cannot break that tie). ``warnings`` lists the parent offsets no head copies
    (offset > H: head h copies offset h, so no subset contains them and S* is chosen among
    subsets that miss a parent; the numbers are unchanged); each is also emitted with
    :func:`warnings.warn`.
    """
    d = _check_int("vocab_size", vocab_size, 2)
    offsets = ngram_offsets(parent_offsets)
    chen_subsets(num_heads, max_degree)  # validation before any work
    _check_int("draws", draws, 2)
    alpha = _check_alpha(alpha)
    _check_sizes(d, offsets, max(int(num_heads), max(offsets)))
    notes = [
        f"parent offset {o} is not copied by any head (H = {int(num_heads)}): no subset can contain it"
        for o in offsets
        if o > int(num_heads)
    ]
    for note in notes:
        warnings.warn(note, stacklevel=2)
    start = time.perf_counter()
    with jax.enable_x64(True):
        mc = selection_monte_carlo(
            d, offsets, num_heads, max_degree, alpha, key=jax.random.key(seed), draws=draws
        )
    chi2 = mc["chi2"]
    top = float(np.max(chi2))
    rows = []
    for i, s in enumerate(mc["subsets"]):
        rows.append(
            {
                "offsets": list(s),
                "label": mc["labels"][i],
                "modified_chi2": float(mc["modified_chi2"][i]),
                "modified_chi2_se": float(mc["modified_chi2_se"][i]),
                "chi2": float(chi2[i]),
                "chi2_se": float(mc["chi2_se"][i]),
                "conditional_entropy": float(mc["conditional_entropy"][i]),
                "conditional_entropy_se": float(mc["conditional_entropy_se"][i]),
                "win_fraction": float(mc["win_fraction"][i]),
            }
        )
    return {
        "config": {
            "vocab_size": d,
            "parent_offsets": list(offsets),
            "num_heads": int(num_heads),
            "max_degree": int(max_degree),
            "alpha": alpha,
            "draws": int(draws),
            "seed": int(seed),
            "dtype": "float64",
        },
        "convention": (
            "head h copies offset h (exact copying); modified_chi2 = E_pi[sum_z mu(z)^2 D_chi2(mu(.|z)||mu)], "
            "chi2 = E_pi[sum_z mu(z) D_chi2(mu(.|z)||mu)] for the current token x_i and z = (x_(i-s))_(s in S) "
            "under the stationary law; conditional_entropy in nats; se = sample s.d./sqrt(draws)"
        ),
        "subsets": rows,
        "selected": list(mc["selected"]),
        "selected_label": mc["labels"][mc["subsets"].index(mc["selected"])],
        "runner_up": None if mc["runner_up"] is None else list(mc["runner_up"]),
        "gap": float(mc["gap"]),
        "gap_se": float(mc["gap_se"]),
        "chi2_maximisers": [list(s) for s, v in zip(mc["subsets"], chi2) if v >= top - 1e-9 * abs(top)],
        "warnings": notes,
        "timing_s": time.perf_counter() - start,
    }
