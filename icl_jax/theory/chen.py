r"""Chen, Sheen, Wang & Yang's selection theory (Chen spec §6.2, §6.3, §6.5, §6.6).

**Exact per-π laws (§6.6 item 1).** For one n-gram kernel π (parents at ``parent_offsets``,
K = their largest offset) the stationary law of the window (x_{i−1}, …, x_{i−K}) is one
linear solve (:func:`~icl_jax.tasks.priors.ngram_window_stationary`); extending it forward by
π gives the joint law of (x_i, x_{i−1}, …, x_{i−W}) for any W ≥ K, and its marginals the
joint μ(e, z_S) of the current token e = x_i and z_S = (x_{i−s})_{s∈S}. Everything is
batched over a leading axis of kernels (no Python loop over π draws).

**Selection criterion (§6.2).** With the weighted χ² information of
:func:`~icl_jax.theory.chi2.weighted_chi2_mutual_information`,

.. math::
    \tilde I_{χ²}(S) = E_π\Big[\sum_{e,z} \frac{μ(e,z)^2}{μ(e)} - \sum_z μ(z)^2\Big]
                     = E_π\Big[\sum_z μ(z)^2 D_{χ²}(μ(·|z)\,\|\,μ)\Big],
    \qquad I_{χ²}(S) = E_π\Big[\sum_z μ(z) D_{χ²}(μ(·|z)\,\|\,μ)\Big],

estimated by vmapped Monte Carlo over the Dirichlet(α) prior, and S* = argmax Ĩ over
S ⊆ [H], |S| ≤ D. Subsets are named by the offsets their heads copy under exact copying
(head h ↔ offset h), in the selector's official order (:meth:`InductionModel.subsets`).

**Stage I (§6.3, derived here and checked against ``jax.grad``).** With
p_S = c_S²/‖c‖², K_S(l) = Π_{h∈S}⟨v_q^{(h)}, v_l^{(h)}⟩₊ (K_∅ = 1), σ = softmax_l(a·sim) and
ŷ = Σ_l σ_l x_l, the ε-floored hard-label loss −log((ŷ_y + ε)/(1 + dε)) of
:meth:`InductionModel.loss <icl_jax.models.induction.InductionModel.per_example_loss>` has, **exactly at every a**,

.. math::
    \frac{∂ℓ}{∂c_S} = -a\,\frac{2c_S}{\|c\|^2}\big(g_S - \textstyle\sum_{S'} p_{S'} g_{S'}\big),
    \qquad g_S = \frac{\sum_l σ_l\,(1[x_l = y] - ŷ_y)\,K_S(l)}{ŷ_y + ε}.

At a → 0 (σ_l = 1/L, ŷ_y = N(y)/L) this gives the first-order coefficient

.. math:: G_S = E\Big[\frac{\sum_l 1[x_l = y] K_S(l) - (N(y)/L)\sum_l K_S(l)}{N(y) + Lε}\Big],

the spec's Σ_l 1[x_l=y]K_S(l)/N(y) − (1/L)Σ_l K_S(l) at ε = 0 (and exactly 0 for a
sequence whose target never occurs, instead of 0/0). So ∂ℓ/∂c_S = −a(2c_S/‖c‖²)(G_S − Σ p G)
+ O(a²) (relative error O(a); the constant factor 1/(1 + dε) drops out of the gradient).
Gradient flow then conserves ‖c‖² at first order and the shares follow the replicator
solution p_S(t) ∝ p_S(0)·exp(κ t G_S), κ = 4a/‖c‖² (:func:`replicator_shares`; for GD,
t = learning rate × steps).

**Stage III (§6.5).** With S fixed, exact copying and L → ∞,
ŷ_a(e) = [e^a μ(e,z) + μ(e) − μ(e,z)]/[e^a μ(z) + 1 − μ(z)] and
ℓ_∞(a) = −E_π Σ_{e,z} μ(e,z) log ŷ_a(e), decreasing from H(X_0) at a = 0 to the
conditional entropy E_π H_μ(X_0 | X_{−S}) as a → ∞ (:func:`asymptotic_loss`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from icl_jax.losses import DEFAULT_EPS
from icl_jax.models.induction import InductionModel
from icl_jax.models.induction_layers import copier_features, selector_similarity
from icl_jax.tasks.graphs import ngram_offsets
from icl_jax.tasks.priors import ngram_window_stationary, sample_dirichlet
from icl_jax.theory.chi2 import weighted_chi2_mutual_information

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

MAX_JOINT_CELLS = 1 << 16
"""Largest per-kernel joint table d^(W+1) of (x_i, x_{i−1}, …, x_{i−W})."""
MAX_WINDOW_STATES = 1 << 8
"""Largest parent-window chain d^K solved for the stationary law (a dense [d^K, d^K] matrix
per kernel; the same bound as ``NGramTask(init="stationary")``)."""


# ------------------------------------------------------------------------- validation
def _check_int(name: str, value, lo: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r})")
    return int(value)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, (bool, str, bytes)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"alpha must be a finite scalar > 0 (got {alpha!r})")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite scalar > 0 (got {alpha!r})")
    return float(alpha)


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


def _check_subsets(subsets, window: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Subsets as sorted offset tuples; offsets distinct, >= 1 and (if given) <= window."""
    out = []
    for s in subsets:
        try:
            s = tuple(sorted(int(o) for o in s))
        except (TypeError, ValueError):
            raise ValueError(f"subsets must be sequences of integer offsets (got {s!r})") from None
        if len(set(s)) != len(s) or any(o < 1 or (window is not None and o > window) for o in s):
            bound = "" if window is None else f", at most window={window}"
            raise ValueError(f"subsets: offsets must be distinct integers >= 1{bound} (got {s})")
        out.append(s)
    if not out:
        raise ValueError("subsets must name at least one subset (the empty subset is ())")
    return tuple(out)


def chen_subsets(num_heads: int, max_degree: int) -> tuple[tuple[int, ...], ...]:
    """Live selector subsets S ⊆ [H], |S| ≤ D, as offset tuples (head h ↔ offset h under
    exact copying), in the official lexicographic order of
    :meth:`~icl_jax.models.induction.InductionModel.subsets` (spec §3.2): for H = 3, D = 2
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
    r"""Stationary joint law of (x_i, x_{i−1}, …, x_{i−W}) under n-gram kernels (spec §6.6.1).

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
    most significant (spec §6.2). ``batch_dims`` leading axes are batch axes."""
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
    r"""Per-kernel Ĩ_χ²(S), I_χ²(S) and H(X_0 | X_{−S}) for every subset (spec §6.2), exact.

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
    every selector subset S ⊆ [H], |S| ≤ D; S* = argmax Ĩ (spec §6.2).

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
    r"""Replicator prediction of stage I (spec §6.3): p_S(t) ∝ p_S(0)·exp(κ t G_S), κ = 4a/‖c‖².

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
    (spec §3.2), from the model's own copier features at ``params["W"]``: the model's
    similarity with c one-hot on S."""
    v = copier_features(params, tokens_BxT, model)
    eye = jnp.eye(model.num_subsets, dtype=params["C"].dtype)
    one = lambda c: selector_similarity({**params, "C": c}, v, tokens_BxT, model)  # noqa: E731
    return jnp.moveaxis(jax.vmap(one)(eye), 0, -1)


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (got {eps!r})")


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
    r"""First-order coefficients G_S from a batch (spec §6.3), ``[n_subsets]``:

    G_S = mean_b [Σ_l 1[x_l = y] K_S(l) − (N(y)/L) Σ_l K_S(l)] / (N(y) + Lε),

    with K_S from the model's copier features at ``params["W"]`` (any window, any W) and
    the hard label y = ``batch.label_B``; ε is the floor of ``InductionModel.loss`` (the exact
    a → 0 limit of its hard-label gradient; ε = 0 is the spec's Σ 1[x_l=y]K_S/N(y) − ΣK_S/L
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
    r"""∂ℓ/∂c ≈ −a·(2c_S/‖c‖²)(G_S − Σ_{S'} p_{S'} G_{S'}) (spec §6.3), ``[n_subsets]``: the
    gradient (not its negative) of ``InductionModel.loss(params, batch, ..., loss="prob_ce", labels="hard",
    eps=eps)`` w.r.t. ``params["C"]`` to first order in a (relative error O(a))."""
    return _centred_c_gradient(params, first_order_g(params, batch, model, eps=eps))


def exact_c_gradient(params, batch, model: InductionModel, *, eps: float = DEFAULT_EPS) -> jax.Array:
    r"""Closed-form ∂ℓ/∂c at any a (module docstring): −a(2c_S/‖c‖²)(g_S − Σ p g) with
    g_S = mean_b Σ_l σ_l(1[x_l=y] − ŷ_y)K_S(l)/(ŷ_y + ε). Equals ``jax.grad`` of the hard-label
    ``prob_ce`` loss to rounding error; used to check the derivation of
    :func:`first_order_c_gradient`."""
    _check_eps(eps)
    g = _g_terms(params, jnp.asarray(batch.tokens_BxT), jnp.asarray(batch.label_B), model, eps, params["a"])
    return _centred_c_gradient(params, g)


# ------------------------------------------------------------------ stage III: ℓ_∞(a)
@jax.jit
def asymptotic_loss(joint_ExZ: jax.Array, a_A: jax.Array) -> jax.Array:
    r"""ℓ_∞(a) = −Σ_{e,z} μ(e,z) log ŷ_a(e|z) for joint laws ``[..., d, Z]`` and a grid
    ``[A]`` of a (spec §6.5), ``[..., A]``; a = ∞ gives H(X_0 | Z).

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
    r"""E_π ℓ_∞(a) on a grid of a for the selected subset S (spec §6.5), with its a → ∞
    limit E_π H_μ(X_0 | X_{−S}) (Bayes-optimal when S = the parents).

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


# ------------------------------------------------------------------------------ report
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
    (spec §6.2), computed in float64 from ``draws`` kernels of the prior (key ``seed``).

    ``subsets`` lists, per S (official order): ``offsets``, ``label``, ``modified_chi2``,
    ``chi2``, ``conditional_entropy`` (E_π H(X_0|X_{−S}), the a → ∞ loss of §6.5) with
    ``*_se``, and ``win_fraction``. ``selected`` = argmax Ĩ; ``chi2_maximisers`` = every S
    whose I_χ² is within 1e−9 (relative) of the largest (adding a non-parent offset to a set
    containing all parents leaves I_χ² unchanged, so I alone cannot break that tie).
    """
    d = _check_int("vocab_size", vocab_size, 2)
    offsets = ngram_offsets(parent_offsets)
    chen_subsets(num_heads, max_degree)  # validation before any work
    _check_int("draws", draws, 2)
    alpha = _check_alpha(alpha)
    _check_sizes(d, offsets, max(int(num_heads), max(offsets)))
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
        "timing_s": time.perf_counter() - start,
    }
