r"""Layer-1 gradient of Nichani et al.'s reduced model at initialisation (spec §6.2–6.4).

The reduced model (:mod:`icl_jax.models.reduced`, spec §3.3) at A1 = 0, A2 = β0·I_S. Code
positions are 0-based, 0..T−1; the spec's formulas use 1-based i, so the spec's "1/i"
(uniform layer-1 attention over i keys) is ``1/(i+1)`` here. Position T−1 is the query q.

**First order in β0 (finite T, one batch; derived and checked against autodiff).** With
c_i = (1/(i+1)) Σ_{k≤i} 1[x_k = q] and p̂ the token frequencies of all T positions
(query included),

.. math::
    \frac{∂L}{∂A^{(1)}_{ik}} = -\frac{β_0}{T (i+1)}\,
       E\Big[F_i\,\big(1[x_k = q] - c_i\big)\Big] + O(β_0^2), \quad k ≤ i,

    F_i = \frac{Y_{x_i}}{\hat p(x_i) + ε} - \sum_b \frac{Y_b\,\hat p_b}{\hat p_b + ε},

for the ε-floored soft-label loss −Σ_b Y_b log(f_b + ε); the hard-label loss −log(f_y + ε)
is the same with Y = e_y, i.e. F_i = (1[x_i = y] − p̂_y)/(p̂_y + ε), which is the spec's
1[x_i = y]/p̂(y) − 1 only at ε = 0. Each row sums to 0 over k ≤ i; entries with k > i are 0.

**Population form (spec §6.3).** Replacing p̂ by μ_π (ε = 0) and averaging the uniform,
independent query gives E[F_i 1[x_k = q]] = g_ik/S with
g_ik = ⟨P_{k,i}, P_edge⟩_χ² − 1 and P_edge(a, b) = μ(a)π(b|a), so

.. math:: \frac{∂L}{∂A^{(1)}_{ik}} ≈ -\frac{β_0}{S\,T\,(i+1)}\Big(\bar g_{ik} - \frac{1}{i+1}\sum_{k'≤i} \bar g_{ik'}\Big),
          \qquad \bar g = E_π[g].

Query row (i = T−1, which the spec does not treat; derived here and checked by exact
enumeration): for a context key k the query plays the role of x_k itself, so
g_{T−1,k} = tr π − 1 (as for the self entry k = i), and its own entry is
g_{T−1,T−1} = Σ_a π(a,a)/μ(a) − S. The latter has an infinite prior expectation at small α
(a state a with μ(a) ≈ 0 but π(a, a) of order 1 is common), and at finite T the query's
own token is always in p̂ (p̂(q) ≥ 1/T), so the T → ∞ form says nothing about the query row
of a T = 20 model: :func:`population_g_monte_carlo` and the report leave that row out (NaN /
``null``); :func:`population_g` (one fixed π) keeps the exact limit.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.losses import DEFAULT_EPS, check_labels, cross_entropy_probs, targets
from icl_jax.models.reduced import ReducedModel, reduced_probs
from icl_jax.tasks.graphs import CausalGraph
from icl_jax.tasks.priors import sample_dirichlet, stationary_distribution
from icl_jax.tasks.sampling import Batch
from icl_jax.theory.chi2 import chi2_inner, chi2_mutual_information, safe_inverse

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

MAX_ENUMERATION = 1 << 17
"""Largest number of enumerated (sequence[, label]) combinations :func:`enumerate_sequences` allows."""


def _check_beta0(beta0):
    if not (isinstance(beta0, (int, float, np.floating, np.integer)) and math.isfinite(beta0) and beta0 > 0):
        raise ValueError(f"beta0 must be a finite number > 0 (got {beta0!r})")


def _check_eps(eps):
    if not (isinstance(eps, (int, float, np.floating, np.integer)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (got {eps!r})")


def _normalised_weights(weights_B, b: int, dtype) -> jax.Array:
    if weights_B is None:
        return jnp.full((b,), 1.0 / b, dtype)
    w = jnp.asarray(weights_B, dtype)
    if w.shape != (b,):
        raise ValueError(f"weights_B must have shape ({b},) (got {w.shape})")
    return w / jnp.sum(w)


# ----------------------------------------------------------------- first-order gradient
@functools.partial(jax.jit, static_argnames=("vocab_size",))
def _first_order_core(tokens_BxT, target_BxS, freq_BxS, w_B, eps, vocab_size):
    r"""E_w[F_i (1[x_k = q] − c_i)] as a [T, T] matrix (lower triangle), no prefactor.

    ``freq_BxS`` is the frequency used in F (p̂ for the batch formula; μ for the population
    check)."""
    t = tokens_BxT.shape[1]
    dtype = target_BxS.dtype
    x_BxTxS = jax.nn.one_hot(tokens_BxT, vocab_size, dtype=dtype)
    match_BxT = (tokens_BxT == tokens_BxT[:, -1:]).astype(dtype)
    c_BxT = jnp.cumsum(match_BxT, axis=1) / jnp.arange(1, t + 1, dtype=dtype)[None, :]
    ratio_BxS = target_BxS * safe_inverse(freq_BxS + eps)
    f_BxT = jnp.einsum("bts,bs->bt", x_BxTxS, ratio_BxS) - jnp.sum(ratio_BxS * freq_BxS, axis=-1, keepdims=True)
    fm_TxT = jnp.einsum("b,bi,bk->ik", w_B, f_BxT, match_BxT)
    fc_T = jnp.einsum("b,bi,bi->i", w_B, f_BxT, c_BxT)
    mask = jnp.tril(jnp.ones((t, t), bool))
    return jnp.where(mask, fm_TxT - fc_T[:, None], 0.0)


def _row_prefactor(t: int, dtype) -> jax.Array:
    """1/(T·(i+1)) for the 0-based row i (spec: 1/(T·i), 1-based)."""
    return 1.0 / (t * jnp.arange(1, t + 1, dtype=dtype))


def first_order_gradient(
    batch: Batch,
    beta0: float,
    eps: float = DEFAULT_EPS,
    labels: str = "soft",
    weights_B=None,
    chunk_size: int = 16384,
    *,
    frequencies=None,
) -> jax.Array:
    r"""First-order (in β0) estimate of ∂L/∂A1 at A1 = 0, A2 = β0·I_S from a batch (spec §6.2).

    Args:
      batch: tokens ``[B, T]`` (query last) and labels.
      beta0: the scale of A2 at initialisation.
      eps: the loss floor ε of :meth:`~icl_jax.models.reduced.ReducedModel.loss`.
      labels: ``"soft"`` (Y = π(x_T, ·)) or ``"hard"`` (Y = e_y, y = ``batch.label_B``).
      weights_B: optional non-negative weights (normalised here); default the batch mean.
        Exact enumeration passes the sequence probabilities.
      chunk_size: sequences per chunk (memory only; the result does not depend on it).
      frequencies: replace p̂ in F_i by these token frequencies (``[S]`` or ``[B, S]``),
        e.g. μ_π: with ε = 0 and the exact weights of :func:`enumerate_sequences` this is
        exactly the population form −β0/(S·T·(i+1))·(g − row mean) of one fixed π.

    Returns:
      ``[T, T]`` gradient ∂L/∂A1 (not its negative), zero above the diagonal, rows sum to
      0. It matches ``jax.grad`` of ``ReducedModel.loss`` with relative error O(β0).
    """
    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    tokens = jnp.asarray(batch.tokens_BxT)
    b, t = tokens.shape
    s = batch.label_probs_BxS.shape[-1]
    dtype = jnp.result_type(float)
    w = _normalised_weights(weights_B, b, dtype)
    core = jnp.zeros((t, t), dtype)
    for start in range(0, b, chunk_size):
        sl = slice(start, start + chunk_size)
        part = jax.tree.map(lambda a: a[sl], batch)
        target = targets(part, labels, s, dtype)
        if frequencies is None:
            freq_BxS = jnp.mean(jax.nn.one_hot(tokens[sl], s, dtype=dtype), axis=1)
        else:
            freq_BxS = jnp.broadcast_to(jnp.asarray(frequencies, dtype), (b, s))[sl]
        core = core + _first_order_core(tokens[sl], target, freq_BxS, w[sl], eps, s)
    return -beta0 * _row_prefactor(t, dtype)[:, None] * core


# -------------------------------------------------------------------------- autodiff
@functools.partial(jax.jit, static_argnames=("labels",))
def _weighted_grad_a1(params, tokens_BxT, label_probs_BxS, label_B, w_B, eps, labels):
    def loss(a1):
        probs = reduced_probs({"A1": a1, "A2": params["A2"]}, tokens_BxT)
        s = probs.shape[-1]
        target = targets(Batch(tokens_BxT, label_probs_BxS, label_B), labels, s, probs.dtype)
        return jnp.sum(w_B * cross_entropy_probs(probs, target, eps=eps))

    return jax.grad(loss)(params["A1"])


@functools.partial(jax.jit, static_argnames=("labels",))
def _mean_grad_a1(params, batch, eps, labels):
    s, t = params["A2"].shape[0], params["A1"].shape[0]
    model = ReducedModel(s, t)
    return jax.grad(lambda a1: model.loss({"A1": a1, "A2": params["A2"]}, batch, labels=labels, eps=eps))(params["A1"])


def autodiff_gradient(
    batch: Batch,
    beta0: float,
    eps: float = DEFAULT_EPS,
    labels: str = "soft",
    weights_B=None,
    chunk_size: int = 16384,
) -> jax.Array:
    """``jax.grad`` of the reduced model's loss w.r.t. A1 at A1 = 0, A2 = β0·I_S.

    Without weights this is exactly ``jax.grad(ReducedModel.loss)`` of the batch mean
    (evaluated in chunks of ``chunk_size`` sequences, averaged with their sizes); with
    ``weights_B`` it is the gradient of Σ_n w_n ℓ_n / Σ_n w_n with the same per-sequence
    loss. Runs in the default float dtype (enable x64 for comparisons at small β0).
    """
    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    tokens = jnp.asarray(batch.tokens_BxT)
    b, t = tokens.shape
    s = batch.label_probs_BxS.shape[-1]
    dtype = jnp.result_type(float)
    params = ReducedModel(s, t).init(beta0=beta0, dtype=dtype)
    total = jnp.zeros((t, t), dtype)
    if weights_B is None:
        for start in range(0, b, chunk_size):
            part = jax.tree.map(lambda a: a[start : start + chunk_size], batch)
            n = part.tokens_BxT.shape[0]
            total = total + (n / b) * _mean_grad_a1(params, part, eps, labels)
        return total
    w = _normalised_weights(weights_B, b, dtype)
    for start in range(0, b, chunk_size):
        sl = slice(start, start + chunk_size)
        total = total + _weighted_grad_a1(
            params, tokens[sl], batch.label_probs_BxS[sl], batch.label_B[sl], w[sl], eps, labels
        )
    return total


def exact_gradient_at_init(
    batch: Batch, beta0: float, eps: float = DEFAULT_EPS, labels: str = "soft", weights_B=None
) -> jax.Array:
    r"""The exact (all orders in β0) closed-form ∂L/∂A1 at A1 = 0, A2 = β0·I_S.

    ∂L/∂A1_ik = −E[σ_i F^σ_i β0 (1[x_k = q] − c_i)/(i+1)] with σ = softmax(β0 c) the
    layer-2 attention and F^σ_i = Y_{x_i}/(f_{x_i}+ε) − Σ_b Y_b f_b/(f_b+ε), f = Σ_j σ_j e_{x_j}.
    At β0 → 0, σ_i → 1/T and f → p̂, which gives :func:`first_order_gradient`. Used to
    check the derivation to rounding error.
    """
    check_labels(labels)
    _check_beta0(beta0)
    _check_eps(eps)
    b = batch.tokens_BxT.shape[0]
    return _exact_at_init(batch, beta0, eps, labels, _normalised_weights(weights_B, b, jnp.result_type(float)))


@functools.partial(jax.jit, static_argnames=("labels",))
def _exact_at_init(batch, beta0, eps, labels, w):
    tokens = jnp.asarray(batch.tokens_BxT)
    t = tokens.shape[1]
    s = batch.label_probs_BxS.shape[-1]
    dtype = w.dtype
    target = targets(batch, labels, s, dtype)
    x_BxTxS = jax.nn.one_hot(tokens, s, dtype=dtype)
    match_BxT = (tokens == tokens[:, -1:]).astype(dtype)
    c_BxT = jnp.cumsum(match_BxT, axis=1) / jnp.arange(1, t + 1, dtype=dtype)[None, :]
    sigma_BxT = jax.nn.softmax(beta0 * c_BxT, axis=-1)
    f_BxS = jnp.einsum("bt,bts->bs", sigma_BxT, x_BxTxS)
    ratio_BxS = target * safe_inverse(f_BxS + eps)
    big_f_BxT = jnp.einsum("bts,bs->bt", x_BxTxS, ratio_BxS) - jnp.sum(ratio_BxS * f_BxS, axis=-1, keepdims=True)
    coef_BxT = w[:, None] * sigma_BxT * big_f_BxT
    fm = jnp.einsum("bi,bk->ik", coef_BxT, match_BxT)
    fc = jnp.sum(coef_BxT * c_BxT, axis=0)
    mask = jnp.tril(jnp.ones((t, t), bool))
    inv = 1.0 / jnp.arange(1, t + 1, dtype=dtype)
    return -beta0 * inv[:, None] * jnp.where(mask, fm - fc[:, None], 0.0)


# ---------------------------------------------------------------- exact joint laws
def _as_graph(graph_or_task) -> CausalGraph:
    graph = getattr(graph_or_task, "graph", graph_or_task)
    if not isinstance(graph, CausalGraph) or not graph.is_tree:
        raise ValueError("expected a tree CausalGraph or a TreeTask")
    return graph


def tree_pair_structure(graph_or_task) -> dict[str, np.ndarray]:
    """How every ordered pair of the T positions (context nodes + query) is related.

    Returns numpy arrays ``[T, T]`` indexed ``[k, i]``:

    * ``kind``: 0 independent (different components), 1 same component, 2 exactly one of
      the two is the query, 3 both are the query;
    * ``dk``, ``di``: for kind 1, the number of edges from the lowest common ancestor down
      to k and to i (0 where k or i is the ancestor itself).
    """
    graph = _as_graph(graph_or_task)
    n = graph.num_nodes
    t = n + 1
    dag = graph.dag_array()
    ancestors = []  # node -> {ancestor: distance}, itself at distance 0
    for i in range(n):
        chain = {i: 0}
        j, d = i, 0
        while dag[j] >= 0:
            j, d = int(dag[j]), d + 1
            chain[j] = d
        ancestors.append(chain)
    kind = np.zeros((t, t), np.int32)
    dk = np.zeros((t, t), np.int32)
    di = np.zeros((t, t), np.int32)
    for k in range(n):
        for i in range(n):
            common = set(ancestors[k]) & set(ancestors[i])
            if common:
                lca = min(common, key=lambda a: ancestors[k][a])  # deepest common ancestor
                kind[k, i], dk[k, i], di[k, i] = 1, ancestors[k][lca], ancestors[i][lca]
    kind[: t - 1, t - 1] = kind[t - 1, : t - 1] = 2
    kind[t - 1, t - 1] = 3
    return {"kind": kind, "dk": dk, "di": di}


def _matrix_powers(pi_SxS: jax.Array, n: int) -> jax.Array:
    """π^0..π^{n−1} stacked: ``[n, S, S]``."""
    eye = jnp.eye(pi_SxS.shape[-1], dtype=pi_SxS.dtype)

    def step(carry, _):
        return carry @ pi_SxS, carry

    _, powers = jax.lax.scan(step, eye, None, length=n)
    return powers


def _float(x) -> jax.Array:
    return jnp.asarray(x, jnp.result_type(float))


def _structure(graph: CausalGraph) -> dict[str, jax.Array]:
    """The pair structure as int32 arrays: traced inputs, so one compile serves every
    graph with the same T."""
    return {k: jnp.asarray(v) for k, v in tree_pair_structure(graph).items()}


def pairwise_joint_laws(pi_SxS: jax.Array, graph_or_task, mu_S: jax.Array | None = None) -> jax.Array:
    r"""Exact joint laws P_π(x_k = a, x_i = b) of all position pairs, ``[T, T, S, S]``
    indexed ``[k, i, a, b]``, for one fixed kernel π (vmap for several).

    Same component with lowest common ancestor c: P = (π^{d_k})ᵀ D_μ π^{d_i} (x_c ~ μ_π);
    different components: μ ⊗ μ; the query (uniform, independent): μ ⊗ u with the context,
    diag(u) with itself. The diagonal k = i is D_μ for context positions.
    """
    pi = _float(pi_SxS)
    mu = stationary_distribution(pi) if mu_S is None else _float(mu_S)
    return _joint_laws(_structure(_as_graph(graph_or_task)), pi, mu)


@jax.jit
def _joint_laws(structure, pi_SxS, mu):
    kind, dk, di = structure["kind"], structure["dk"], structure["di"]
    t = kind.shape[0]
    s = pi_SxS.shape[-1]
    powers = _matrix_powers(pi_SxS, t)
    related = jnp.einsum("kica,c,kicb->kiab", powers[dk], mu, powers[di])
    u = jnp.full((s,), 1.0 / s, pi_SxS.dtype)
    indep = (mu[:, None] * mu[None, :])[None, None]
    mixed = jnp.where(
        (jnp.arange(t) == t - 1)[:, None, None, None],  # k is the query: u ⊗ μ
        (u[:, None] * mu[None, :])[None, None],
        (mu[:, None] * u[None, :])[None, None],
    )
    query = jnp.diag(u)[None, None]
    kind4 = kind[:, :, None, None]
    return jnp.where(kind4 == 1, related, jnp.where(kind4 == 0, indep, jnp.where(kind4 == 2, mixed, query)))


def population_g(pi_SxS: jax.Array, graph_or_task, mu_S: jax.Array | None = None) -> jax.Array:
    r"""g_ik(π) = ⟨P_{k,i}, P_edge⟩_χ² − 1 for one kernel π, ``[T, T]`` indexed ``[i, k]``.

    Context rows follow spec §6.3 exactly (lower triangle, k ≤ i); the query row is
    tr π − 1 for context keys and Σ_a π(a,a)/μ(a) − S on its diagonal (module docstring).
    This is exactly S·E[F_i 1[x_k = q]] with p̂ replaced by μ_π and ε = 0 (tested by
    enumeration). Entries with k > i are 0.
    """
    pi = _float(pi_SxS)
    mu = stationary_distribution(pi) if mu_S is None else _float(mu_S)
    return _population_g(_structure(_as_graph(graph_or_task)), pi, mu)


@jax.jit
def _population_g(structure, pi_SxS, mu):
    t = structure["kind"].shape[0]
    joints = _joint_laws(structure, pi_SxS, mu)  # [k, i, a, b]
    p_edge = mu[:, None] * pi_SxS
    g_KxI = chi2_inner(joints, p_edge[None, None], mu[None, None], mu[None, None]) - 1.0
    g = g_KxI.T
    diag_pi = jnp.diagonal(pi_SxS)
    q_ctx = jnp.sum(diag_pi) - 1.0
    q_self = jnp.sum(diag_pi * safe_inverse(mu)) - pi_SxS.shape[-1]
    g = g.at[t - 1, :].set(q_ctx).at[t - 1, t - 1].set(q_self)
    return jnp.where(jnp.tril(jnp.ones((t, t), bool)), g, 0.0)


def edge_chi2_information(pi_SxS: jax.Array, mu_S: jax.Array | None = None) -> jax.Array:
    """I_χ²(x_{p(i)}; x_i) of one edge, the same for every non-root node (x_p ~ μ_π)."""
    pi = _float(pi_SxS)
    mu = stationary_distribution(pi) if mu_S is None else _float(mu_S)
    return chi2_mutual_information(mu[:, None] * pi)


def population_g_monte_carlo(
    task, key: jax.Array | None = None, draws: int | None = None, *, kernels=None, chunk: int = 256
) -> dict[str, jax.Array]:
    r"""Monte-Carlo estimate over π only of ḡ = E_π[g(π)] (spec §6.3), E_π[I_χ²(edge)] and
    E_π[tr π − 1], vmapped over the draws (in chunks of ``chunk`` kernels).

    Args:
      task: a :class:`~icl_jax.TreeTask` (graph, S, α).
      key, draws: draw ``draws`` kernels from the task's prior (rows i.i.d. Dirichlet(α·1_S),
        in the default float dtype); or
      kernels: ``[M, S, S]`` kernels already drawn from the prior (then key/draws unused).

    Returns:
      ``{"g", "g_se", "edge_chi2", "edge_chi2_se", "trace_minus_one",
      "trace_minus_one_se"}``: means and standard errors (sample s.d./√M). The query row
      of ``g`` is NaN (no finite prior mean at small α; module docstring).
    """
    graph = _as_graph(task)
    s = task.vocab_size
    dtype = jnp.result_type(float)
    if kernels is None:
        if not isinstance(draws, (int, np.integer)) or draws < 2:
            raise ValueError(f"draws must be an integer >= 2 (got {draws!r})")
        if key is None:
            raise ValueError("population_g_monte_carlo needs a key (or kernels)")
        kernels = sample_dirichlet(key, task.alpha, (int(draws), s), s, dtype=dtype)
    kernels = jnp.asarray(kernels, dtype)
    kernels = kernels / jnp.sum(kernels, axis=-1, keepdims=True)  # exact rows in this dtype
    m = kernels.shape[0]
    if kernels.shape[1:] != (s, s) or m < 2:
        raise ValueError(f"kernels must have shape [M >= 2, {s}, {s}] (got {kernels.shape})")
    structure = _structure(graph)
    chunk = min(int(chunk), m)
    pad = -m % chunk  # the last chunk is padded (and masked) so every chunk has one shape
    padded = jnp.concatenate([kernels, jnp.broadcast_to(kernels[:1], (pad, s, s))])
    valid = (jnp.arange(m + pad) < m).astype(dtype)
    sums = None
    for start in range(0, m + pad, chunk):
        part = _stats(structure, padded[start : start + chunk])
        keep = valid[start : start + chunk]

        def moments(v, keep=keep):
            w = keep.reshape(keep.shape + (1,) * (v.ndim - 1))
            v = jnp.where(w > 0, v, 0.0)
            return jnp.sum(v, axis=0), jnp.sum(v * v, axis=0)

        part = jax.tree.map(moments, part)
        sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
    out = {}
    for name, (s1, s2) in sums.items():
        mean = s1 / m
        var = jnp.maximum(s2 / m - mean * mean, 0.0) * m / (m - 1)
        out[name] = mean
        out[name + "_se"] = jnp.sqrt(var / m)
    return out


@jax.jit
def _stats(structure, pis_MxSxS):
    def one(pi):
        mu = stationary_distribution(pi)
        g = _population_g(structure, pi, mu)
        return {
            "g": g.at[-1].set(jnp.nan),
            "edge_chi2": chi2_mutual_information(mu[:, None] * pi),
            "trace_minus_one": jnp.trace(pi) - 1.0,
        }

    return jax.vmap(one)(pis_MxSxS)


def predicted_gradient(g_TxT: jax.Array, beta0: float, vocab_size: int) -> jax.Array:
    r"""Population prediction of ∂L/∂A1 (spec §6.3): −β0/(S·T·(i+1)) · (g_ik − mean_{k'≤i} g_ik'),
    zero above the diagonal (0-based row i; the spec's 1/i is 1-based)."""
    g = jnp.asarray(g_TxT)
    t = g.shape[0]
    mask = jnp.tril(jnp.ones((t, t), bool))
    counts = jnp.arange(1, t + 1, dtype=g.dtype)
    row_mean = jnp.sum(jnp.where(mask, g, 0.0), axis=1) / counts
    centred = jnp.where(mask, g - row_mean[:, None], 0.0)
    return -beta0 / (vocab_size * t) / counts[:, None] * centred


def _context_rows(graph: CausalGraph) -> np.ndarray:
    return np.array([i for i, ps in enumerate(graph.parents) if ps], np.int32)


def argmax_recovery(grad_TxT, graph_or_task) -> float:
    """Fraction of non-root context rows i whose argmax over k ≤ i (self included) of
    −∂L/∂A1_ik is the parent p(i). Including k = i is the stricter test: the attention
    row can also put its mass on itself."""
    graph = _as_graph(graph_or_task)
    neg = -np.asarray(grad_TxT, np.float64)
    t = neg.shape[0]
    neg = np.where(np.tril(np.ones((t, t), bool)), neg, -np.inf)
    rows = _context_rows(graph)
    if rows.size == 0:
        return float("nan")
    dag = graph.dag_array()
    return float(np.mean(np.argmax(neg[rows], axis=1) == dag[rows]))


def dpi_parent_is_argmax(grad_TxT, graph_or_task) -> bool:
    """The DPI prediction (spec §6.4): for every non-root row the parent is the argmax."""
    return argmax_recovery(grad_TxT, graph_or_task) == 1.0


# ------------------------------------------------------------------- exact enumeration
def enumerate_sequences(task, pi_SxS, labels: str = "soft") -> tuple[Batch, jax.Array]:
    r"""Every sequence of a tiny tree task with its exact probability for one fixed π.

    Context by the graph (roots ~ μ_π, children ~ π(·|parent)), query uniform. With
    ``labels="soft"`` there are S^T rows (label_B = argmax of the soft label, unused);
    with ``labels="hard"`` S^{T+1} rows, one per (sequence, y), weight × π(y|x_T).

    Returns ``(batch, weights_B)`` with weights summing to 1.

    Raises:
      ValueError: if the number of rows exceeds :data:`MAX_ENUMERATION`.
    """
    check_labels(labels)
    graph = _as_graph(task)
    s, t = task.vocab_size, graph.num_nodes + 1
    width = t + (labels == "hard")
    total = s**width
    if total > MAX_ENUMERATION:
        raise ValueError(
            f"exact enumeration needs vocab_size**{width} = {s}**{width} = {total} rows "
            f"(S = {s}, T = {t}, labels={labels!r}); at most {MAX_ENUMERATION} are supported"
        )
    return _enumerate(s, labels, jnp.asarray(graph.dag_array()), _float(pi_SxS))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _enumerate(s: int, labels: str, dag, pi):
    """Traceable enumeration; the graph enters as its (traced) dag array."""
    t = dag.shape[0] + 1
    width = t + (labels == "hard")
    mu = stationary_distribution(pi)
    seqs = np.stack(np.unravel_index(np.arange(s**width), (s,) * width), axis=1).astype(np.int32)
    tokens = jnp.asarray(seqs[:, :t])
    ctx = tokens[:, : t - 1]
    parent_tokens = ctx[:, jnp.maximum(dag, 0)]
    factors = jnp.where(dag[None, :] >= 0, pi[parent_tokens, ctx], mu[ctx])
    w = jnp.prod(factors, axis=1) / s  # uniform query
    label_probs = pi[tokens[:, -1]]
    if labels == "hard":
        label = jnp.asarray(seqs[:, t])
        w = w * pi[tokens[:, -1], label]
    else:
        label = jnp.argmax(label_probs, axis=-1).astype(jnp.int32)
    return Batch(tokens_BxT=tokens, label_probs_BxS=label_probs, label_B=label), w


def exact_population_loss(params: dict, task, pi_SxS, eps: float = DEFAULT_EPS, labels: str = "soft") -> jax.Array:
    """E_x[loss] of the reduced model for one fixed π by exact enumeration (no sampling)."""
    enumerate_sequences(task, pi_SxS, labels)  # validation (sizes, labels)
    dag = jnp.asarray(_as_graph(task).dag_array())
    return _exact_loss(task.vocab_size, labels, dag, params, _float(pi_SxS), eps)


def _exact_loss(s, labels, dag, params, pi, eps):
    batch, w = _enumerate(s, labels, dag, pi)
    probs = reduced_probs(params, batch.tokens_BxT)
    target = targets(batch, labels, s, probs.dtype)
    return jnp.sum(w * cross_entropy_probs(probs, target, eps=eps))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _exact_grad(s, labels, dag, pi, beta0, eps):
    params = ReducedModel(s, dag.shape[0] + 1).init(dtype=pi.dtype)
    a2 = beta0 * params["A2"]
    return jax.grad(lambda a1: _exact_loss(s, labels, dag, {"A1": a1, "A2": a2}, pi, eps))(params["A1"])


def exact_population_gradient(task, pi_SxS, beta0: float, eps: float = DEFAULT_EPS, labels: str = "soft") -> jax.Array:
    """``jax.grad`` of :func:`exact_population_loss` w.r.t. A1 at A1 = 0, A2 = β0·I_S."""
    _check_beta0(beta0)
    _check_eps(eps)
    enumerate_sequences(task, pi_SxS, labels)  # validation (sizes, labels)
    dag = jnp.asarray(_as_graph(task).dag_array())
    return _exact_grad(task.vocab_size, labels, dag, _float(pi_SxS), beta0, eps)


# ------------------------------------------------------------------------------ report
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
    r"""Layer-1 gradient at initialisation three ways, in one convention (spec §6.2–6.4).

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
    dag = graph.dag_array()
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
