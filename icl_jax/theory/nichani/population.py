"""Population form of the layer-1 gradient for tree tasks: the pair structure and exact
pairwise joint laws of a tree, g(π) = ⟨P_{k,i}, P_edge⟩_χ² − 1, its Monte-Carlo mean over
the prior, the predicted gradient, argmax recovery and the DPI check
(docs/nichani-theory.md#population-form, docs/nichani-theory.md#the-query-row,
docs/nichani-theory.md#special-values-and-the-dpi-argument)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.graphs import CausalGraph
from icl_jax.tasks.priors import sample_dirichlet, stationary_distribution
from icl_jax.theory.chi2 import chi2_inner, chi2_mutual_information, safe_inverse
from icl_jax.theory.nichani._checks import _as_graph, _float

__all__ = [
    "tree_pair_structure",
    "pairwise_joint_laws",
    "population_g",
    "edge_chi2_information",
    "population_g_monte_carlo",
    "predicted_gradient",
    "argmax_recovery",
    "dpi_parent_is_argmax",
]


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
    dag = graph.dag_array
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

    Context rows follow docs/nichani-theory.md#population-form exactly (lower triangle, k ≤ i); the
    query row is tr π − 1 for context keys and Σ_a π(a,a)/μ(a) − S on its diagonal (module docstring).
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
    r"""Monte-Carlo estimate over π only of ḡ = E_π[g(π)] (docs/nichani-theory.md#population-form),
    E_π[I_χ²(edge)] and E_π[tr π − 1], vmapped over the draws (in chunks of ``chunk`` kernels).

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
    r"""Population prediction of ∂L/∂A1 (docs/nichani-theory.md#population-form):
    −β0/(S·T·(i+1)) · (g_ik − mean_{k'≤i} g_ik'), zero above the diagonal (0-based row i; the
    paper's 1/i is 1-based)."""
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
    dag = graph.dag_array
    return float(np.mean(np.argmax(neg[rows], axis=1) == dag[rows]))


def dpi_parent_is_argmax(grad_TxT, graph_or_task) -> bool:
    """The DPI prediction (docs/nichani-theory.md#special-values-and-the-dpi-argument): for every
    non-root row the parent is the argmax."""
    return argmax_recovery(grad_TxT, graph_or_task) == 1.0
