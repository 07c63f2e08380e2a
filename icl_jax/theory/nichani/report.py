"""The JSON report behind ``icl-jax theory nichani-gradient``: the layer-1 gradient at
initialisation by autodiff, to first order and from the population form, with errors,
correlations and argmax recovery (docs/nichani-theory.md#finite-t-accuracy,
docs/nichani-theory.md#code-and-tests)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from icl_jax.losses import DEFAULT_EPS, check_labels
from icl_jax.theory.nichani._checks import _as_graph, _check_beta0, _check_eps
from icl_jax.theory.nichani.first_order import autodiff_gradient, first_order_gradient
from icl_jax.theory.nichani.population import (
    argmax_recovery,
    dpi_parent_is_argmax,
    population_g_monte_carlo,
    predicted_gradient,
)

__all__ = ["nichani_gradient_report"]


def _rel_error(x, ref) -> float:
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def _lower_corr(x, ref, rows: int) -> float:
    """Pearson correlation over the lower triangle (diagonal included) of the first ``rows`` rows."""
    tri = np.tril_indices(rows)
    a, b = np.asarray(x, np.float64)[:rows][tri], np.asarray(ref, np.float64)[:rows][tri]
    return float(np.corrcoef(a, b)[0, 1])


def _nested(x) -> list:
    """A matrix as nested lists with NaN → None (valid JSON)."""
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(x, np.float64)]


@functools.lru_cache(maxsize=None)
def _sampler(task):
    return jax.jit(lambda key, pi: task.sample_with_kernels(key, {"pi": pi}))


def nichani_gradient_report(
    task,
    *,
    beta0: float = 1e-3,
    samples: int = 65536,
    draws: int = 1024,
    eps: float = DEFAULT_EPS,
    seed: int = 0,
    labels: str = "soft",
) -> dict:
    r"""Layer-1 gradient at initialisation three ways, in one convention (docs/nichani-theory.md).

    * ``autodiff``: ``jax.grad`` of ``ReducedModel.loss`` w.r.t. A1 on one batch of ``samples``
      sequences (float64);
    * ``first_order``: :func:`first_order_gradient` on the same batch;
    * ``population``: :func:`predicted_gradient` of ḡ estimated from ``draws`` kernels of
      the prior, independent of the batch (query row ``None``: no population limit).

    All three are the gradient ∂L/∂A1 itself (``convention``), rows i = attending
    position, columns k = key, 0-based, zero above the diagonal. Relative errors are
    ‖X − autodiff‖_F/‖autodiff‖_F and correlations are Pearson over lower-triangular
    entries; both use all T rows for ``first_order`` and the context rows 0..T−2 for
    ``population``. Argmax recovery: fraction of non-root context rows whose argmax over
    k ≤ i (self included) of −∂L/∂A1 is the parent.
    """
    import time

    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    for name, v, lo in (("samples", samples, 1), ("draws", draws, 2)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo} (got {v!r})")
    graph = _as_graph(task)
    s, t = task.vocab_size, task.seq_len
    dag = graph.dag_array
    start = time.perf_counter()
    with jax.enable_x64(True):
        k_kernels, k_tokens = jax.random.split(jax.random.key(seed))
        kernels = task.sample_kernels(k_kernels, samples + draws)["pi"]
        batch = _sampler(task)(k_tokens, kernels[:samples])
        t_sample = time.perf_counter()
        ad = np.asarray(autodiff_gradient(batch, beta0, eps, labels))
        fo = np.asarray(first_order_gradient(batch, beta0, eps, labels))
        t_grad = time.perf_counter()
        mc = population_g_monte_carlo(task, kernels=kernels[samples:])
        pop = np.asarray(predicted_gradient(mc["g"], beta0, s))
        mc = {k: np.asarray(v, np.float64) for k, v in mc.items()}
    t_pop = time.perf_counter()
    g = mc["g"]
    nonroot = [i for i in range(t - 1) if dag[i] >= 0]
    return {
        "config": {
            "dag": dag.tolist(),
            "vocab_size": s,
            "seq_len": t,
            "alpha": float(task.alpha),
            "beta0": float(beta0),
            "samples": int(samples),
            "draws": int(draws),
            "eps": float(eps),
            "labels": labels,
            "seed": int(seed),
        },
        "convention": (
            "dL/dA1 at A1=0, A2=beta0*I (the gradient, not its negative); [i][k] = row i "
            "(attending position, 0-based, query = T-1), column k <= i; zeros above the diagonal"
        ),
        "parents": dag.tolist(),
        "autodiff": _nested(ad),
        "first_order": _nested(fo),
        "population": _nested(pop),
        "population_rows_compared": f"context rows 0..{t - 2} (the query row has no population limit)",
        "rel_error_first_order": _rel_error(fo, ad),
        "rel_error_population": _rel_error(pop[: t - 1], ad[: t - 1]),
        "corr_first_order": _lower_corr(fo, ad, t),
        "corr_population": _lower_corr(pop, ad, t - 1),
        "argmax_recovery_autodiff": argmax_recovery(ad, graph),
        "argmax_recovery_first_order": argmax_recovery(fo, graph),
        "argmax_recovery_population": argmax_recovery(pop, graph),
        "argmax_includes_self": True,
        "dpi_parent_is_argmax_population": bool(dpi_parent_is_argmax(pop, graph)) if nonroot else None,
        "population_g": _nested(g),
        "population_g_se": _nested(mc["g_se"]),
        "edge_chi2": {"mean": float(mc["edge_chi2"]), "se": float(mc["edge_chi2_se"])},
        "edge_chi2_per_node": [float(g[i, dag[i]]) if dag[i] >= 0 else None for i in range(t - 1)],
        "trace_minus_one": {"mean": float(mc["trace_minus_one"]), "se": float(mc["trace_minus_one_se"])},
        "timing_s": {
            "sample": t_sample - start,
            "gradients": t_grad - t_sample,
            "population": t_pop - t_grad,
        },
    }
