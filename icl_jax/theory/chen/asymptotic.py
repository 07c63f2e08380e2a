"""Stage III with the subset fixed: the L → ∞ loss ℓ_∞(a) of exact copiers on a grid of the
classifier scale a, and its Monte Carlo over the prior with the a → ∞ limit
E_π H(X_0 | X_{−S}) (docs/chen-theory.md#stage-iii-classifier-scale)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from icl_jax.tasks.graphs import ngram_offsets
from icl_jax.theory.chen._checks import _check_int, _check_subsets
from icl_jax.theory.chen.window_laws import (
    _check_sizes,
    _chunked,
    _conditional_entropy,
    _draw_kernels,
    _mean_se,
    _per_draw_floats,
    _project,
    _subset_index,
    _window_joint,
)

__all__ = ["asymptotic_loss", "asymptotic_loss_monte_carlo"]


# ------------------------------------------------------------------ stage III: ℓ_∞(a)
@jax.jit
def asymptotic_loss(joint_ExZ: jax.Array, a_A: jax.Array) -> jax.Array:
    r"""ℓ_∞(a) = −Σ_{e,z} μ(e,z) log ŷ_a(e|z) for joint laws ``[..., d, Z]`` and a grid
    ``[A]`` of a (docs/chen-theory.md#stage-iii-classifier-scale), ``[..., A]``; a = ∞ gives H(X_0 | Z).

    ŷ_a(e|z) = [e^a μ(e,z) + μ(e) − μ(e,z)]/[e^a μ(z) + 1 − μ(z)], evaluated as
    [μ(e,z) + e^{−a}(μ(e) − μ(e,z))]/[μ(z) + e^{−a}(1 − μ(z))] (no overflow at large a)."""
    p = jnp.asarray(joint_ExZ)[..., None, :, :]  # [..., 1, d, Z]
    a = jnp.asarray(a_A, p.dtype)
    if a.ndim != 1:
        raise ValueError(f"a_A must be a 1-D grid (got shape {a.shape})")
    r = jnp.exp(-a).reshape((1,) * (p.ndim - 3) + (-1, 1, 1))  # [..., A, 1, 1]
    pe = jnp.sum(p, axis=-1, keepdims=True)
    pz = jnp.sum(p, axis=-2, keepdims=True)
    num = p + r * jnp.maximum(pe - p, 0.0)
    den = pz + r * jnp.maximum(1.0 - pz, 0.0)
    y_hat = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
    return -jnp.sum(xlogy(p, y_hat), axis=(-2, -1))


@jax.jit
def _asymptotic_from_joint(joint, idx_1xZ, a_A):
    p = _project(joint, idx_1xZ)[:, 0]
    return {"loss": asymptotic_loss(p, a_A), "limit": _conditional_entropy(p)}


def _asymptotic_stats(kernel_MxRxS, d, offsets, subset, window, a_A):
    idx = jnp.asarray(_subset_index(d, window, [subset]))
    return _asymptotic_from_joint(_window_joint(kernel_MxRxS, d, offsets, window), idx, a_A)


def asymptotic_loss_monte_carlo(
    vocab_size: int,
    parent_offsets: Sequence[int],
    subset: Sequence[int],
    a_A,
    alpha: float = 0.1,
    *,
    key: jax.Array | None = None,
    draws: int | None = None,
    kernels=None,
    chunk: int = 4096,
) -> dict[str, np.ndarray]:
    r"""E_π ℓ_∞(a) on a grid of a for the selected subset S
    (docs/chen-theory.md#stage-iii-classifier-scale), with its a → ∞ limit E_π H_μ(X_0 | X_{−S})
    (Bayes-optimal when S = the parents).

    Kernels as in :func:`selection_monte_carlo`. Returns ``{"a", "loss", "loss_se",
    "limit", "limit_se"}`` as float64 numpy arrays (``loss`` ``[A]``; standard errors
    s.d./√M over draws)."""
    d = _check_int("vocab_size", vocab_size, 2)
    offsets = ngram_offsets(parent_offsets)
    try:
        a = np.atleast_1d(np.asarray(a_A, np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"a_A must be a 1-D grid of values >= 0 (inf allowed) (got {a_A!r})") from None
    if a.ndim != 1 or a.size == 0 or np.any(np.isnan(a) | (a < 0)):
        raise ValueError(f"a_A must be a 1-D grid of values >= 0 (inf allowed) (got {a_A!r})")
    (subset,) = _check_subsets([subset])
    window = max([1] + list(subset))
    _check_sizes(d, offsets, window)
    kernels = _draw_kernels(key, draws, alpha, d, d ** len(offsets), kernels)
    a_dev = jnp.asarray(a, kernels.dtype)
    per_draw = _per_draw_floats(d, offsets, window, len(a) + 1)
    per = _chunked(lambda k: _asymptotic_stats(k, d, offsets, subset, window, a_dev), kernels, chunk, per_draw)
    out = {"a": a}
    for name, v in per.items():
        out[name], out[name + "_se"] = _mean_se(v)
    return out
