"""Exact stationary window laws of n-gram kernels, the joint μ(e, z_S) of each head subset,
the per-kernel Ĩ_χ² / I_χ² / H(X_0 | Z_S), and their Monte Carlo over the Dirichlet prior
with S* = argmax Ĩ (docs/chen-theory.md#exact-stationary-window-laws,
docs/chen-theory.md#modified-chi-square-mutual-information,
docs/chen-theory.md#size-penalty-and-the-tie). Formulas in the
:mod:`icl_jax.theory.chen` docstring."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from icl_jax.models.induction import InductionModel
from icl_jax.tasks.graphs import ngram_offsets
from icl_jax.tasks.priors import ngram_window_stationary, sample_dirichlet
from icl_jax.theory.chen._checks import _check_alpha, _check_int, _check_subsets
from icl_jax.theory.chi2 import weighted_chi2_mutual_information

__all__ = [
    "MAX_JOINT_CELLS",
    "MAX_WINDOW_STATES",
    "chen_subsets",
    "window_joint_law",
    "subset_joint_law",
    "subset_information",
    "selection_monte_carlo",
]


MAX_JOINT_CELLS = 1 << 16
"""Largest per-kernel joint table d^(W+1) of (x_i, x_{i−1}, …, x_{i−W})."""
MAX_WINDOW_STATES = 1 << 8
"""Largest parent-window chain d^K solved for the stationary law (a dense [d^K, d^K] matrix
per kernel; the same bound as ``NGramTask(init="stationary")``)."""


def _check_sizes(vocab_size: int, offsets: tuple[int, ...], window: int) -> None:
    d, k = vocab_size, max(offsets)
    if d**k > MAX_WINDOW_STATES:
        raise ValueError(
            f"parent_offsets: the stationary law is solved on vocab_size**max(parent_offsets) = {d}**{k} = "
            f"{d**k} window states; at most {MAX_WINDOW_STATES} are supported"
        )
    cells = d ** (max(window, k) + 1)
    if cells > MAX_JOINT_CELLS:
        raise ValueError(
            f"the joint law of (x_i, ..., x_(i-{max(window, k)})) has vocab_size**{max(window, k) + 1} = {cells} "
            f"cells per kernel; at most {MAX_JOINT_CELLS} are supported (fewer heads or parents)"
        )


def chen_subsets(num_heads: int, max_degree: int) -> tuple[tuple[int, ...], ...]:
    """Live selector subsets S ⊆ [H], |S| ≤ D, as offset tuples (head h ↔ offset h under
    exact copying), in the official lexicographic order of
    :meth:`~icl_jax.models.induction.InductionModel.subsets` (docs/models.md#selector): for H = 3, D = 2
    (), (3,), (2,), (2, 3), (1,), (1, 3), (1, 2) = '000', '001', …, '110'."""
    _check_int("num_heads", num_heads, 1)
    if not isinstance(max_degree, (int, np.integer)) or isinstance(max_degree, bool) or not 0 <= max_degree <= num_heads:
        raise ValueError(f"max_degree must be an integer in [0, num_heads={num_heads}] (got {max_degree!r})")
    return InductionModel(2, num_heads, max_degree).subsets()


def _labels(subsets, num_heads: int) -> list[str]:
    return ["".join("1" if h in s else "0" for h in range(1, num_heads + 1)) for s in subsets]


# --------------------------------------------------------------------- exact joint laws
_parent_window_law = jax.jit(ngram_window_stationary, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _extend_window(joint, kernel, d: int, offsets: tuple[int, ...], window: int):
    """Extend the parents' window law (offsets 1..K) forward by π to offsets 0..max(W, K),
    then marginalise to offsets 0..W."""
    lead = kernel.shape[:-2]
    nb = len(lead)
    k = max(offsets)
    big = max(window, k)
    # π as a factor on (new token, offsets 1..m): parents on their axes, size 1 elsewhere
    pi = kernel.reshape(lead + (d,) * len(offsets) + (d,))
    pi = jnp.moveaxis(pi, -1, nb)  # lead + (x_new, x_{-P_1}, ..., x_{-P_n})
    for _ in range(big + 1 - k):
        m = joint.ndim - nb  # current window length: offsets 1..m
        factor = pi.reshape(lead + (d,) + tuple(d if o in offsets else 1 for o in range(1, m + 1)))
        joint = factor * jnp.expand_dims(joint, nb)  # offsets 0..m, relabelled 1..m+1
    if big > window:
        joint = jnp.sum(joint, axis=tuple(range(nb + window + 1, nb + big + 1)))
    return joint


def _window_joint(kernel, d: int, offsets: tuple[int, ...], window: int):
    """Window law ``lead + [d]*(W+1)``, axis m = x_{i−m}: the stationary solve (compiled once
    per kernel shape) and the forward extension (cheap, compiled per window)."""
    return _extend_window(_parent_window_law(kernel, d, offsets), kernel, d, offsets, window)


def window_joint_law(kernel_BxRxS: jax.Array, vocab_size: int, parent_offsets: Sequence[int], window: int) -> jax.Array:
    r"""Stationary joint law of (x_i, x_{i−1}, …, x_{i−W}) under n-gram kernels
    (docs/chen-theory.md#exact-stationary-window-laws).

    Args:
      kernel_BxRxS: kernels ``[..., d^n, d]``; row r is π(·|z) for the parent context z
        written base d with the most recent parent most significant (the sampler's and
        the official code's labelling).
      vocab_size: d.
      parent_offsets: the n parents' offsets, e.g. (1, 2).
      window: W ≥ 1, the largest offset needed (H for the selector's subsets under exact
        copying). When W > K = max(parent_offsets) the window law of (x_{j−1}, …, x_{j−K})
        is extended forward by π; when W < K it is marginalised.

    Returns:
      ``[..., d, d, …, d]`` (W + 1 token axes after the batch axes): axis m holds x_{i−m},
      m = 0 the current token.
    """
    d = _check_int("vocab_size", vocab_size, 2)
    offsets = ngram_offsets(parent_offsets)
    window = _check_int("window", window, 1)
    _check_sizes(d, offsets, window)
    kernel = jnp.asarray(kernel_BxRxS)
    if kernel.ndim < 2 or kernel.shape[-2:] != (d ** len(offsets), d):
        raise ValueError(f"kernel_BxRxS must have shape [..., {d ** len(offsets)}, {d}] (got {kernel.shape})")
    return _window_joint(kernel, d, offsets, window)


def _subset_joint(joint, nb: int, subset: tuple[int, ...]):
    """μ(e, z_S) ``[..., d, d^|S|]`` from a window law with ``nb`` batch axes."""
    window = joint.ndim - nb - 1
    d = joint.shape[-1]
    drop = tuple(nb + m for m in range(1, window + 1) if m not in subset)
    marg = jnp.sum(joint, axis=drop) if drop else joint
    return marg.reshape(joint.shape[:nb] + (d, d ** len(subset)))


def subset_joint_law(window_joint: jax.Array, subset: Sequence[int], batch_dims: int = 1) -> jax.Array:
    """Joint μ(e, z_S) of the current token and z_S = (x_{i−s})_{s∈S} from a window law of
    :func:`window_joint_law`: ``[..., d, d^|S|]``, z written base d with the smallest offset
    most significant (docs/chen-theory.md#modified-chi-square-mutual-information). ``batch_dims``
    leading axes are batch axes."""
    joint = jnp.asarray(window_joint)
    window = joint.ndim - batch_dims - 1
    (subset,) = _check_subsets([subset], window)
    return _subset_joint(joint, batch_dims, subset)


def _conditional_entropy(p_ExZ):
    """H(X_0 | Z) = −Σ μ(e,z) log μ(e,z) + Σ μ(z) log μ(z) (nats)."""
    pz = jnp.sum(p_ExZ, axis=-2)
    return -jnp.sum(xlogy(p_ExZ, p_ExZ), axis=(-2, -1)) + jnp.sum(xlogy(pz, pz), axis=-1)


def _subset_index(d: int, window: int, subsets) -> np.ndarray:
    """``int[n_S, d^W]``: index of z_S (base d, smallest offset most significant) for every
    full context z = (x_{i−1}, …, x_{i−W}) (base d, offset 1 most significant). Subsets
    enter the compiled statistics as data, so one compile serves every subset list of the
    same length."""
    digits = np.array(np.unravel_index(np.arange(d**window), (d,) * window)).T  # [d^W, W]
    idx = np.zeros((len(subsets), d**window), np.int32)
    for i, s in enumerate(subsets):
        if s:
            idx[i] = digits[:, [o - 1 for o in s]] @ (d ** np.arange(len(s) - 1, -1, -1))
    return idx


def _project(joint, idx_SxZ):
    """μ(e, z_S) for every subset, ``[M, n_S, d, d^W]`` (columns beyond d^|S| stay 0): one
    segment sum of the window law over z ↦ z_S, O(M·n_S·d^(W+1)) memory."""
    m, d = joint.shape[0], joint.shape[1]
    n_s, n_z = idx_SxZ.shape
    flat = jnp.moveaxis(joint.reshape(m, d, n_z), -1, 0)  # [Z, M, d]
    data = jnp.broadcast_to(flat[None], (n_s, n_z, m, d)).reshape(n_s * n_z, m, d)
    seg = (jnp.arange(n_s, dtype=idx_SxZ.dtype)[:, None] * n_z + idx_SxZ).reshape(-1)
    out = jax.ops.segment_sum(data, seg, num_segments=n_s * n_z)  # [(S, Z'), M, d]
    return jnp.transpose(out.reshape(n_s, n_z, m, d), (2, 0, 3, 1))


@jax.jit
def _stats_from_joint(joint, idx_SxZ, empty_S):
    """Per-kernel Ĩ, I and H(X_0|Z_S) ``[M, n_S]`` from window laws ``[M] + [d]*(W+1)``."""
    p = _project(joint, idx_SxZ)
    zero = jnp.zeros((), p.dtype)
    return {
        "modified_chi2": jnp.where(empty_S, zero, weighted_chi2_mutual_information(p, power=2)),
        "chi2": jnp.where(empty_S, zero, weighted_chi2_mutual_information(p, power=1)),
        "conditional_entropy": _conditional_entropy(p),
    }


def _subset_stats(kernel_MxRxS, d, offsets, subsets, window):
    """Ĩ, I (exactly 0 for ∅: the formula gives Σ μ(e) − 1, i.e. rounding) and H(X_0|Z_S)."""
    idx = jnp.asarray(_subset_index(d, window, subsets))
    empty = jnp.asarray([not s for s in subsets])
    return _stats_from_joint(_window_joint(kernel_MxRxS, d, offsets, window), idx, empty)


def subset_information(
    kernel_BxRxS: jax.Array,
    vocab_size: int,
    parent_offsets: Sequence[int],
    subsets: Sequence[Sequence[int]],
) -> dict[str, jax.Array]:
    r"""Per-kernel Ĩ_χ²(S), I_χ²(S) and H(X_0 | X_{−S}) for every subset
    (docs/chen-theory.md#modified-chi-square-mutual-information), exact.

    Args:
      kernel_BxRxS: kernels ``[B, d^n, d]`` (see :func:`window_joint_law`).
      vocab_size, parent_offsets: the n-gram task.
      subsets: offset tuples S (``()`` is the empty subset, which gives 0 and H(X_0)).

    Returns:
      ``{"modified_chi2", "chi2", "conditional_entropy"}``, each ``[B, n_subsets]``: the
      brackets inside E_π of Ĩ (weight μ(z)², power 2) and I (weight μ(z), power 1), and the
      conditional entropy in nats.
    """
    d = _check_int("vocab_size", vocab_size, 2)
    offsets = ngram_offsets(parent_offsets)
    subsets = _check_subsets(subsets)
    window = max([1] + [max(s) for s in subsets if s])
    _check_sizes(d, offsets, window)
    kernel = jnp.asarray(kernel_BxRxS)
    if kernel.ndim != 3 or kernel.shape[1:] != (d ** len(offsets), d):
        raise ValueError(f"kernel_BxRxS must have shape [B, {d ** len(offsets)}, {d}] (got {kernel.shape})")
    return _subset_stats(kernel, d, offsets, subsets, window)


# ----------------------------------------------------------------------- Monte Carlo
def _draw_kernels(key, draws, alpha, d: int, rows: int, kernels):
    dtype = jnp.result_type(float)
    if kernels is None:
        draws = _check_int("draws", draws, 2)
        if key is None:
            raise ValueError("a key is needed to draw kernels (or pass kernels)")
        kernels = sample_dirichlet(key, _check_alpha(alpha), (draws, rows), d, dtype=dtype)
    kernels = jnp.asarray(kernels, dtype)
    if kernels.ndim != 3 or kernels.shape[1:] != (rows, d) or kernels.shape[0] < 2:
        raise ValueError(f"kernels must have shape [M >= 2, {rows}, {d}] (got {kernels.shape})")
    return kernels / jnp.sum(kernels, axis=-1, keepdims=True)  # exact rows in this dtype


_CHUNK_FLOATS = 1 << 24
"""Working-set budget (floats) of one compiled Monte-Carlo call; caps ``chunk``."""


def _per_draw_floats(d: int, offsets: tuple[int, ...], window: int, n_subsets: int) -> int:
    """Largest arrays per kernel: the window chain [d^K, d^K] and n_S + 2 tables of d^(W+1)."""
    return d ** (2 * max(offsets)) + (n_subsets + 2) * d ** (max(window, max(offsets)) + 1)


def _chunked(fn, kernels, chunk: int, per_draw: int = 1):
    """Apply ``fn`` (a pytree of ``[m, ...]`` per-draw values) to equal-sized padded chunks
    (one compile) and return the per-draw values as float64 numpy arrays, padding dropped.
    ``chunk`` is capped so that a chunk holds at most ``_CHUNK_FLOATS`` floats."""
    m = kernels.shape[0]
    chunk = max(1, min(_check_int("chunk", chunk, 1), m, _CHUNK_FLOATS // per_draw))
    pad = -m % chunk
    if pad:
        kernels = jnp.concatenate([kernels, jnp.broadcast_to(kernels[:1], (pad,) + kernels.shape[1:])])
    parts = [jax.device_get(fn(kernels[start : start + chunk])) for start in range(0, m + pad, chunk)]
    return jax.tree.map(lambda *v: np.concatenate(v).astype(np.float64)[:m], *parts)


def _mean_se(v_M: np.ndarray):
    """Mean and standard error (sample s.d./√M) over the first axis (host, float64)."""
    m = v_M.shape[0]
    return np.mean(v_M, axis=0), np.std(v_M, axis=0, ddof=1) / math.sqrt(m)


def selection_monte_carlo(
    vocab_size: int,
    parent_offsets: Sequence[int] = (1, 2),
    num_heads: int = 3,
    max_degree: int = 2,
    alpha: float = 0.1,
    *,
    key: jax.Array | None = None,
    draws: int | None = None,
    kernels=None,
    chunk: int = 4096,
) -> dict:
    r"""Ĩ_χ²(S), I_χ²(S) and E_π H(X_0|X_{−S}) averaged over the Dirichlet(α) prior, for
    every selector subset S ⊆ [H], |S| ≤ D; S* = argmax Ĩ
    (docs/chen-theory.md#modified-chi-square-mutual-information).

    Args:
      vocab_size, parent_offsets, alpha: the n-gram task (rows of π i.i.d. Dirichlet(α·1_d)).
      num_heads, max_degree: H and D of the selector; head h copies offset h.
      key, draws: draw ``draws`` kernels with the project's Dirichlet sampler in the
        default float dtype (enable x64 for accuracy at small α), or
      kernels: ``[M, d^n, d]`` kernels already drawn from the prior.
      chunk: kernels per compiled call (memory only; capped by a 2^24-float working set).

    Returns:
      dict of float64 numpy values: ``subsets`` (offset tuples, official order),
      ``labels`` ('110' = heads {1, 2}), means ``modified_chi2``, ``chi2``, ``conditional_entropy`` ``[n_subsets]`` and
      their standard errors (``*_se``, sample s.d./√M), ``win_fraction`` (fraction of draws
      whose own argmax of Ĩ is S), ``selected`` (S*), ``gap`` / ``gap_se``
      (Ĩ(S*) − the runner-up's Ĩ, paired over draws) and ``draws``.
    """
    d = _check_int("vocab_size", vocab_size, 2)
    offsets = ngram_offsets(parent_offsets)
    subsets = chen_subsets(num_heads, max_degree)
    window = max(int(num_heads), max(offsets))
    _check_sizes(d, offsets, window)
    kernels = _draw_kernels(key, draws, alpha, d, d ** len(offsets), kernels)
    sub_window = max([1] + [max(s) for s in subsets if s])
    per_draw = _per_draw_floats(d, offsets, sub_window, len(subsets))
    per = _chunked(lambda k: _subset_stats(k, d, offsets, subsets, sub_window), kernels, chunk, per_draw)
    out = {"subsets": subsets, "labels": _labels(subsets, num_heads), "draws": int(kernels.shape[0])}
    for name, v in per.items():
        out[name], out[name + "_se"] = _mean_se(v)
    mod = per["modified_chi2"]
    best = int(np.argmax(out["modified_chi2"]))
    out["selected"] = subsets[best]
    winners = np.argmax(mod, axis=-1)
    out["win_fraction"] = np.mean(winners[:, None] == np.arange(len(subsets))[None, :], axis=0)
    if len(subsets) > 1:
        runner = int(np.argmax(np.where(np.arange(len(subsets)) == best, -np.inf, out["modified_chi2"])))
        out["gap"], out["gap_se"] = _mean_se(mod[:, best] - mod[:, runner])
        out["runner_up"] = subsets[runner]
    else:
        out["gap"], out["gap_se"], out["runner_up"] = math.nan, math.nan, None
    return out
