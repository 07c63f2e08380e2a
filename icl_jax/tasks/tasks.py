"""The in-context tasks of both papers as frozen, validated, vmappable configs.

Each task is a pytree whose only leaf is ``alpha`` (so α can be vmapped; a concrete α is
validated, a traced α ≤ 0 gives NaN kernels: :func:`~icl_jax.tasks.priors.sample_dirichlet`);
the graph, vocabulary and options are static. ``task.sample(key, batch_size)`` returns a
:class:`~icl_jax.tasks.sampling.Batch`; it is a pure function of the typed key, compiled
once per static configuration and batch size.

* :class:`TreeTask` — Nichani et al. (docs/tasks.md#tree-task): roots ~ μ_π, children ~ π(·|parent),
  uniform query, label π(x_T, ·).
* :class:`DAGTask` — Nichani et al. (docs/tasks.md#multi-parent-dag-task): multi-parent DAG, one
  kernel per in-degree, label π_k(·|parents of the target); ``roots="uniform"`` (paper) or ``"official"``.
* :class:`NGramTask` — Chen et al. (docs/tasks.md#n-gram-task): per-sequence n-gram kernel, first
  tokens uniform (official) or stationary (theory), predict x_{L+1}; ``query="uniform"`` re-draws x_L
  uniformly, which with offsets (1,) is Chen's bigram job (:func:`chen_bigram_task`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks import graphs as _graphs
from icl_jax.tasks.graphs import CausalGraph
from icl_jax.tasks.priors import (
    _check_alpha_value,
    ngram_window_stationary,
    sample_dirichlet,
    sample_doubly_stochastic,
    stationary_distribution,
)
from icl_jax.tasks.sampling import Batch, SamplingPlan, SequenceBatch, node_rows, sample_tokens, target_rows

__all__ = [
    "TreeTask",
    "DAGTask",
    "NGramTask",
    "tree_task",
    "dag_task",
    "chen_bigram_task",
    "sample",
    "sample_batch",
    "sample_sequences",
    "MAX_KERNEL_ROWS",
]

# Largest per-sequence kernel table (rows) a task may ask for; B·rows·S floats are held.
MAX_KERNEL_ROWS = 1 << 16
# Largest window chain (d^K states) for stationary n-gram initialisation: the solve holds a
# dense [B, d^K, d^K] matrix (256 states: 256 KiB per sequence).
MAX_WINDOW_STATES = 1 << 8


def _check_vocab(vocab_size):
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2 (got {vocab_size!r})")


def _check_choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options} (got {value!r})")


def _check_graph_task(task):
    if not isinstance(task.graph, CausalGraph):
        raise ValueError(
            f"graph must be a CausalGraph (got {type(task.graph).__name__}; convert a dag array with "
            "tree_from_dag_array, parent lists with graph_from_parent_lists)"
        )
    _check_vocab(task.vocab_size)
    _check_alpha_value(task.alpha)


def _uniform_row(b: int, s: int, dtype=jnp.float32) -> jax.Array:
    return jnp.full((b, 1, s), 1.0 / s, dtype)


def sample_batch(task, key: jax.Array, batch_size: int) -> Batch:
    """Traceable body of :func:`sample`: kernels and tokens from two independent halves
    of ``key`` (a key is never used both directly and as the parent of another)."""
    k_kernels, k_tokens = jax.random.split(key)
    return task.sample_with_kernels(k_tokens, task.sample_kernels(k_kernels, batch_size))


_sample_jit = jax.jit(sample_batch, static_argnames=("batch_size",))


def _check_batch_size(batch_size) -> int:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (got {batch_size!r})")
    return int(batch_size)


def sample(task, key: jax.Array, batch_size: int) -> Batch:
    """``task.sample(key, batch_size)`` as a free function (compiled, α traced)."""
    return _sample_jit(task, key, _check_batch_size(batch_size))


def _sequences_batch(task, key: jax.Array, batch_size: int) -> SequenceBatch:
    k_kernels, k_tokens = jax.random.split(key)  # the same halves as sample_batch
    return task.sequences_with_kernels(k_tokens, task.sample_kernels(k_kernels, batch_size))


_sequences_jit = jax.jit(_sequences_batch, static_argnames=("batch_size",))


def sample_sequences(task, key: jax.Array, batch_size: int) -> SequenceBatch:
    """``task.sample_sequences(key, batch_size)`` as a free function (compiled)."""
    return _sequences_jit(task, key, _check_batch_size(batch_size))


class _TaskBase:
    """Shared sampling logic: kernels → row table → scan sampler → Batch."""

    def sample(self, key: jax.Array, batch_size: int) -> Batch:
        """Fresh per-sequence kernels and sequences: a pure function of ``key``."""
        return sample(self, key, batch_size)

    def sample_sequences(self, key: jax.Array, batch_size: int) -> SequenceBatch:
        """The same sequences as :meth:`sample` (same key, same tokens) with a target at every
        position: inputs are all nodes but the last, labels all nodes but the first."""
        return sample_sequences(self, key, batch_size)

    def sequences_with_kernels(self, key: jax.Array, kernels: dict) -> SequenceBatch:
        """:meth:`sample_sequences` given per-sequence kernels."""
        rows = self.row_table(kernels)
        tokens = sample_tokens(key, rows, self.plan)
        return SequenceBatch(tokens[:, :-1], node_rows(tokens, rows, self.plan)[:, 1:], tokens[:, 1:])

    def sample_with_kernels(self, key: jax.Array, kernels: dict) -> Batch:
        """Sequences given per-sequence kernels (e.g. one fixed π broadcast to the batch,
        for tests and out-of-distribution evaluation)."""
        rows = self.row_table(kernels)
        plan = self.plan
        tokens = sample_tokens(key, rows, plan)
        return Batch(
            tokens_BxT=tokens[:, :-1],
            label_probs_BxS=target_rows(tokens, rows, plan),
            label_B=tokens[:, -1],
        )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------- tree
@functools.lru_cache(maxsize=None)
def _tree_plan(graph: CausalGraph, s: int) -> SamplingPlan:
    stationary, uniform = s, s + 1
    nodes = [(0, ps, (1,)) if ps else (stationary, (), ()) for ps in graph.parents]
    t = graph.num_nodes
    nodes.append((uniform, (), ()))  # query x_{T-1}
    nodes.append((0, (t,), (1,)))  # target ~ π(x_{T-1}, ·)
    return SamplingPlan.build(nodes, num_rows=s + 2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TreeTask(_TaskBase):
    """Nichani single-parent task. ``graph`` covers the T−1 context positions.

    Attributes:
      graph: in-degree <= 1 graph over context positions 0..T−2 (static).
      vocab_size: S >= 2 (static).
      alpha: Dirichlet concentration > 0 (pytree leaf, may be vmapped). A concrete α is
        validated (``ValueError`` naming ``alpha``); a traced α ≤ 0 cannot be and yields NaN
        kernels and NaN soft labels (see :func:`~icl_jax.tasks.priors.sample_dirichlet`).
    """

    graph: CausalGraph = dataclasses.field(metadata=dict(static=True))
    vocab_size: int = dataclasses.field(metadata=dict(static=True))
    alpha: float = 0.1

    def __post_init__(self):
        _check_graph_task(self)
        if not self.graph.is_tree:
            raise ValueError("graph: the tree task needs in-degree <= 1 (use DAGTask otherwise)")

    @property
    def seq_len(self) -> int:
        """T: context positions plus the query."""
        return self.graph.num_nodes + 1

    @property
    def plan(self) -> SamplingPlan:
        return _tree_plan(self.graph, self.vocab_size)

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        s = self.vocab_size
        return {"pi": sample_dirichlet(key, self.alpha, (batch_size, s), s)}

    def row_table(self, kernels: dict) -> jax.Array:
        pi = kernels["pi"]
        mu = stationary_distribution(pi)
        return jnp.concatenate([pi, mu[:, None, :], _uniform_row(pi.shape[0], self.vocab_size, pi.dtype)], axis=1)

    def oracle_closed_form(self) -> float:
        """E[H(π(·|x_T))] = ψ(Sα+1) − ψ(α+1) for the uniform query
        (docs/nichani-theory.md#closed-forms-for-tests)."""
        return _prior_row_entropy(self.vocab_size, self.alpha)


def _prior_row_entropy(s, alpha) -> float:
    from scipy.special import digamma

    return float(digamma(s * alpha + 1.0) - digamma(alpha + 1.0))


def _check_seq_len(seq_len, minimum: int = 2) -> None:
    if not isinstance(seq_len, (int, np.integer)) or isinstance(seq_len, bool) or seq_len < minimum:
        raise ValueError(f"seq_len must be an integer >= {minimum} (context plus query), got {seq_len!r}")


def tree_task(
    graph: str | CausalGraph = "chain",
    *,
    vocab_size: int = 10,
    seq_len: int | None = None,
    alpha: float = 0.1,
    graph_seed: int = 0,
    root_prob: float = 0.5,
) -> TreeTask:
    """A :class:`TreeTask` from a graph name (docs/tasks.md#graph-families) or a graph.

    Args:
      graph: ``"chain"``, ``"icl"``, ``"random"`` (official distribution, seeded by
        ``graph_seed``), ``"fig9"`` (root probability ``root_prob``), ``"manual"`` (the
        official 5-node DAG, T = 6), or a tree :class:`~icl_jax.tasks.graphs.CausalGraph`
        over the T−1 context positions.
      vocab_size: S.
      seq_len: T (context plus query). ``None``: 20 for a named graph (6 for
        ``"manual"``), num_nodes + 1 for an explicit graph. An explicit graph fixes T, so
        a ``seq_len`` given with one must equal num_nodes + 1 (``ValueError`` otherwise);
        so must a ``seq_len`` given with ``"manual"``.
      alpha: Dirichlet concentration (see :class:`TreeTask`).
      graph_seed, root_prob: options of the ``"random"`` and ``"fig9"`` generators.
    """
    if seq_len is not None:
        _check_seq_len(seq_len)
    if isinstance(graph, CausalGraph):
        if seq_len is not None and seq_len != graph.num_nodes + 1:
            raise ValueError(
                f"seq_len = {seq_len} conflicts with graph: seq_len must equal graph.num_nodes + 1 = "
                f"{graph.num_nodes + 1} for an explicit graph with {graph.num_nodes} context nodes (or be None)"
            )
        return TreeTask(graph, vocab_size, alpha)
    if not isinstance(graph, str):
        raise ValueError(
            f"graph must be a graph name or a CausalGraph (got {type(graph).__name__}; convert a dag array "
            "with tree_from_dag_array)"
        )
    if seq_len is None:
        seq_len = 6 if graph == "manual" else 20
    n = seq_len - 1
    builders = {
        "chain": lambda: _graphs.chain_graph(n),
        "icl": lambda: _graphs.icl_graph(n),
        "random": lambda: _graphs.random_tree_graph(graph_seed, n),
        "fig9": lambda: _graphs.fig9_graph(graph_seed, n, root_prob),
        "manual": _graphs.manual_graph,
    }
    _check_choice("graph", graph, tuple(builders))
    g = builders[graph]()
    if graph == "manual" and seq_len != g.num_nodes + 1:
        raise ValueError(f"seq_len must be {g.num_nodes + 1} for the manual graph (got {seq_len})")
    return TreeTask(g, vocab_size, alpha)


# ---------------------------------------------------------------------------------- DAG
@functools.lru_cache(maxsize=None)
def _dag_layout(graph: CausalGraph, s: int):
    """Row offsets: row 0 = root row, then one block of S^k rows per in-degree k."""
    degrees = sorted({k for k in graph.in_degrees if k > 0})
    offsets, start = {}, 1
    for k in degrees:
        offsets[k] = start
        start += s**k
    nodes = []
    for ps in graph.parents:
        if not ps:
            nodes.append((0, (), ()))
        else:
            k = len(ps)
            nodes.append((offsets[k], ps, tuple(s ** (k - 1 - j) for j in range(k))))
    return degrees, SamplingPlan.build(nodes, num_rows=start)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DAGTask(_TaskBase):
    """Nichani multi-parent task (``InContextDAG``). ``graph`` has T+1 nodes: the T
    inputs and, last, the target (which must have parents).

    Attributes:
      graph: parent lists (static); first parent = most significant kernel digit.
      vocab_size: S >= 2 (static).
      roots: ``"uniform"`` (paper intent, default) or ``"official"`` (one Dirichlet(α)
        vector per sequence shared by all roots: the official code's overwrite bug).
      alpha: Dirichlet concentration > 0 (pytree leaf, may be vmapped). A concrete α is
        validated (``ValueError`` naming ``alpha``); a traced α ≤ 0 cannot be and yields NaN
        kernels and NaN soft labels (see :func:`~icl_jax.tasks.priors.sample_dirichlet`).
    """

    graph: CausalGraph = dataclasses.field(metadata=dict(static=True))
    vocab_size: int = dataclasses.field(metadata=dict(static=True))
    roots: Literal["uniform", "official"] = dataclasses.field(default="uniform", metadata=dict(static=True))
    alpha: float = 0.1

    def __post_init__(self):
        _check_graph_task(self)
        _check_choice("roots", self.roots, ("uniform", "official"))
        if self.graph.num_nodes < 2:
            raise ValueError("graph: needs at least one input node and the target node")
        if not self.graph.parents[-1]:
            raise ValueError("graph: the last node is the target and must have at least one parent")
        for k in set(self.graph.in_degrees):
            if self.vocab_size**k > MAX_KERNEL_ROWS:
                raise ValueError(
                    f"graph: in-degree {k} needs vocab_size**{k} = {self.vocab_size ** k} kernel rows; "
                    f"at most {MAX_KERNEL_ROWS} are supported"
                )

    @property
    def seq_len(self) -> int:
        return self.graph.num_nodes - 1

    @property
    def plan(self) -> SamplingPlan:
        return _dag_layout(self.graph, self.vocab_size)[1]

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        s = self.vocab_size
        degrees, _ = _dag_layout(self.graph, s)
        keys = jax.random.split(key, len(degrees) + 1)
        kernels = {f"pi_{k}": sample_dirichlet(kk, self.alpha, (batch_size, s**k), s) for k, kk in zip(degrees, keys)}
        if self.roots == "official":
            kernels["root"] = sample_dirichlet(keys[-1], self.alpha, (batch_size,), s)
        return kernels

    def row_table(self, kernels: dict) -> jax.Array:
        s = self.vocab_size
        degrees, _ = _dag_layout(self.graph, s)
        blocks = [kernels[f"pi_{k}"] for k in degrees]
        b = blocks[0].shape[0]
        root = kernels["root"][:, None, :] if self.roots == "official" else _uniform_row(b, s, blocks[0].dtype)
        return jnp.concatenate([root] + blocks, axis=1)

    def oracle_closed_form(self) -> None:
        """None: the target's parents are not uniform, so the oracle must be simulated."""
        return None


def dag_task(
    graph: str | CausalGraph = "fig5",
    *,
    vocab_size: int = 5,
    seq_len: int | None = None,
    alpha: float = 0.1,
    roots="uniform",
) -> DAGTask:
    """A :class:`DAGTask` (docs/tasks.md#multi-parent-dag-task).

    Args:
      graph: ``"fig5"`` (the official multi-parent graph) or a
        :class:`~icl_jax.tasks.graphs.CausalGraph` with T+1 nodes, the target last.
      vocab_size: S.
      seq_len: T, the number of input tokens. ``None``: 32 for ``"fig5"``, num_nodes − 1
        for an explicit graph; a ``seq_len`` given with an explicit graph must equal
        num_nodes − 1 (``ValueError`` otherwise).
      alpha, roots: see :class:`DAGTask`.
    """
    if isinstance(graph, CausalGraph):
        if seq_len is not None:
            _check_seq_len(seq_len, 1)
            if seq_len != graph.num_nodes - 1:
                raise ValueError(
                    f"seq_len = {seq_len} conflicts with graph: seq_len must equal graph.num_nodes − 1 = "
                    f"{graph.num_nodes - 1} for an explicit graph with {graph.num_nodes} nodes (inputs + target; or be None)"
                )
        return DAGTask(graph, vocab_size, roots, alpha)
    if not isinstance(graph, str):
        raise ValueError(
            f"graph must be 'fig5' or a CausalGraph (got {type(graph).__name__}; convert parent lists "
            "with graph_from_parent_lists)"
        )
    _check_choice("graph", graph, ("fig5",))
    return DAGTask(_graphs.nichani_fig5_graph(32 if seq_len is None else seq_len), vocab_size, roots, alpha)


# ------------------------------------------------------------------------------- n-gram
@functools.lru_cache(maxsize=None)
def _ngram_layout(d: int, seq_len: int, offsets: tuple[int, ...], init: str, query: str):
    """Rows: [uniform] + [initial-window conditionals (stationary init)] + [π]."""
    k, p = max(offsets), len(offsets)
    init_base = {}
    start = 1
    if init == "stationary":
        for j in range(k):
            init_base[j] = start
            start += d**j
    pi_base = start
    radix = tuple(d ** (p - 1 - j) for j in range(p))
    nodes = []
    for i in range(seq_len + 1):
        if query == "uniform" and i == seq_len - 1:
            nodes.append((0, (), ()))
        elif i < k:
            if init == "stationary":
                nodes.append((init_base[i], tuple(range(i)), tuple(d ** (i - 1 - m) for m in range(i))))
            else:
                nodes.append((0, (), ()))
        else:
            nodes.append((pi_base, tuple(i - o for o in offsets), radix))
    return SamplingPlan.build(nodes, num_rows=pi_base + d**p)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NGramTask(_TaskBase):
    """Chen n-gram task: inputs x_1..x_L, target x_{L+1}.

    Attributes:
      vocab_size: d >= 2 (static).
      seq_len: L, number of input tokens (static); must exceed the largest offset.
      parent_offsets: offsets of the parents, e.g. (1, 2) for the paper's 3-gram (static).
      init: ``"uniform"`` first max(offsets) tokens (official) or ``"stationary"``
        (the window's stationary law, as the theory assumes).
      query: ``"natural"`` (x_L from the chain) or ``"uniform"`` (x_L re-drawn uniformly,
        the bigram job of the official code).
      alpha: Dirichlet concentration > 0 (pytree leaf, may be vmapped). A concrete α is
        validated (``ValueError`` naming ``alpha``); a traced α ≤ 0 cannot be and yields NaN
        kernels and NaN soft labels (see :func:`~icl_jax.tasks.priors.sample_dirichlet`).
      kernel: ``"dirichlet"`` (rows i.i.d. Dirichlet(α)) or ``"doubly_stochastic"`` (offsets
        (1,) only: a random doubly stochastic matrix, :func:`~icl_jax.tasks.priors.sample_doubly_stochastic`,
        whose uniform stationary law makes unigram statistics uninformative; α is unused;
        Edelman et al.'s variant, docs/peer-tasks.md#doubly-stochastic-kernels).
    """

    vocab_size: int = dataclasses.field(metadata=dict(static=True))
    seq_len: int = dataclasses.field(metadata=dict(static=True))
    parent_offsets: tuple[int, ...] = dataclasses.field(default=(1, 2), metadata=dict(static=True))
    init: Literal["uniform", "stationary"] = dataclasses.field(default="uniform", metadata=dict(static=True))
    query: Literal["natural", "uniform"] = dataclasses.field(default="natural", metadata=dict(static=True))
    alpha: float = 0.1
    kernel: Literal["dirichlet", "doubly_stochastic"] = dataclasses.field(default="dirichlet", metadata=dict(static=True))

    def __post_init__(self):
        if not isinstance(self.seq_len, (int, np.integer)):
            raise ValueError(f"seq_len must be an integer (got {self.seq_len!r})")
        _check_vocab(self.vocab_size)
        _check_alpha_value(self.alpha)
        object.__setattr__(self, "parent_offsets", _graphs.ngram_offsets(self.parent_offsets))
        _check_choice("kernel", self.kernel, ("dirichlet", "doubly_stochastic"))
        if self.kernel == "doubly_stochastic" and self.parent_offsets != (1,):
            raise ValueError(f"kernel='doubly_stochastic' is a k×k matrix: it needs parent_offsets=(1,) "
                             f"(got {self.parent_offsets!r})")
        _check_choice("init", self.init, ("uniform", "stationary"))
        _check_choice("query", self.query, ("natural", "uniform"))
        k = max(self.parent_offsets)
        if self.seq_len < k + 1:
            raise ValueError(
                f"seq_len must be >= max(parent_offsets) + 1 = {k + 1} so that the sequence holds "
                f"at least one full parent context (got seq_len={self.seq_len}, offsets {self.parent_offsets})"
            )
        rows = self.vocab_size ** len(self.parent_offsets)
        if rows > MAX_KERNEL_ROWS:
            raise ValueError(
                f"parent_offsets: vocab_size**{len(self.parent_offsets)} = {rows} kernel rows; at most {MAX_KERNEL_ROWS}"
            )
        if self.init == "stationary" and self.vocab_size**k > MAX_WINDOW_STATES:
            raise ValueError(
                f"init='stationary' solves a chain on vocab_size**max(offsets) = {self.vocab_size ** k} states; "
                f"at most {MAX_WINDOW_STATES} are supported (use init='uniform')"
            )

    @property
    def plan(self) -> SamplingPlan:
        return _ngram_layout(self.vocab_size, self.seq_len, self.parent_offsets, self.init, self.query)

    @property
    def num_contexts(self) -> int:
        return self.vocab_size ** len(self.parent_offsets)

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        d = self.vocab_size
        if self.kernel == "doubly_stochastic":
            return {"pi": sample_doubly_stochastic(key, (batch_size,), d)}
        return {"pi": sample_dirichlet(key, self.alpha, (batch_size, self.num_contexts), d)}

    def row_table(self, kernels: dict) -> jax.Array:
        pi = kernels["pi"]
        b, d = pi.shape[0], self.vocab_size
        blocks = [_uniform_row(b, d, pi.dtype)]
        if self.init == "stationary" and self.kernel == "doubly_stochastic":
            # uniform is stationary for every doubly stochastic kernel (the solver would pick one
            # closed class of a reducible draw, e.g. all mass on token 0 for the identity)
            blocks.append(_uniform_row(b, d, pi.dtype))
        elif self.init == "stationary":
            blocks += _initial_conditionals(pi, d, self.parent_offsets)
        blocks.append(pi)
        return jnp.concatenate(blocks, axis=1)

    def oracle_closed_form(self) -> float | None:
        """ψ(dα+1) − ψ(α+1) when the target's context is uniform and independent of π
        (``query="uniform"`` with offsets (1,)); otherwise None (docs/chen-theory.md#exact-quantities: the
        prior-expected row entropy is not the stationary-weighted oracle)."""
        if self.query == "uniform" and self.parent_offsets == (1,) and self.kernel == "dirichlet":
            return _prior_row_entropy(self.vocab_size, self.alpha)
        return None


def _initial_conditionals(pi, d: int, offsets):
    """μ(x_j | x_0..x_{j−1}) for the first K positions under the window's stationary law."""
    k = max(offsets)
    mu = ngram_window_stationary(pi, d, offsets)  # axes: x_{K-1}, ..., x_0 (most recent first)
    mu = jnp.transpose(mu, (0,) + tuple(range(k, 0, -1)))  # axes x_0, ..., x_{K-1}
    blocks = []
    for j in range(k):
        joint = jnp.sum(mu, axis=tuple(range(j + 2, k + 1))) if j + 1 < k else mu
        joint = joint.reshape(mu.shape[0], d**j, d)
        total = jnp.sum(joint, axis=-1, keepdims=True)
        blocks.append(jnp.where(total > 0, joint / jnp.where(total > 0, total, 1.0), 1.0 / d))
    return blocks


def chen_bigram_task(
    *, vocab_size: int = 3, seq_len: int = 100, alpha: float = 0.1, variant: Literal["official", "fixed"] = "official"
) -> NGramTask:
    """Chen's ``--dataset Markov`` job (docs/tasks.md#bigram-task): x_1 uniform, chain, predict π(·|x_L).

    ``variant="official"``: x_L is re-drawn uniformly (the official off-by-one: only L−1
    chain tokens, Nichani's in-context Markov task); ``"fixed"``: all L tokens follow the
    chain and the target is its natural continuation."""
    _check_choice("variant", variant, ("official", "fixed"))
    return NGramTask(vocab_size, seq_len, (1,), "uniform", "uniform" if variant == "official" else "natural", alpha)
