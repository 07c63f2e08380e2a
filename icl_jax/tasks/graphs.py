"""Causal structures over sequence positions (Nichani et al., Chen et al.; docs/tasks.md#graph-families).

A :class:`CausalGraph` lists, for every node (a sequence position, 0-based), the tuple of
its parents. It is frozen and hashable, so it can sit in the static part of a task's
pytree, and it is the one graph type every function that takes a graph accepts (tasks,
baselines, the theory). The other encodings convert to it: the official single-parent dag
array (:func:`tree_from_dag_array`; a root is −1 or ``None``) and one parent list per node
(:func:`graph_from_parent_lists`; a root is ``()`` or ``None``); both also pass a
``CausalGraph`` through unchanged. Every constructor validates its arguments and raises
``ValueError`` naming the argument and the valid range.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence

import jax
import numpy as np

__all__ = [
    "CausalGraph",
    "chain_graph",
    "icl_graph",
    "random_tree_graph",
    "fig9_graph",
    "fig9_graphs",
    "manual_graph",
    "tree_from_dag_array",
    "graph_from_parent_lists",
    "nichani_fig5_graph",
    "ngram_offsets",
]


@dataclasses.dataclass(frozen=True)
class CausalGraph:
    """Parents of every node; ``parents[i]`` is a tuple of strictly earlier positions
    (``()`` or ``None`` for a root; stored as ``()``).

    Parent order matters where a kernel is indexed by the parent tuple (multi-parent
    DAGs): the first parent is the most significant digit of the kernel row.
    """

    parents: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if isinstance(self.parents, (str, bytes)) or not hasattr(self.parents, "__iter__"):
            raise ValueError(f"parents must be a sequence with one parent tuple per node (got {self.parents!r})")
        parents = tuple(_parent_tuple(i, ps) for i, ps in enumerate(self.parents))
        object.__setattr__(self, "parents", parents)
        if len(parents) == 0:
            raise ValueError("parents: a graph needs at least one node (got 0)")
        for i, ps in enumerate(parents):
            for p in ps:
                if not 0 <= p < i:
                    raise ValueError(
                        f"parents[{i}] = {ps}: every parent of node {i} must be an earlier "
                        f"position in [0, {i - 1}] (a DAG in sequence order)"
                    )
            if len(set(ps)) != len(ps):
                raise ValueError(f"parents[{i}] = {ps}: parents must be distinct")

    @property
    def num_nodes(self) -> int:
        return len(self.parents)

    @property
    def in_degrees(self) -> tuple[int, ...]:
        return tuple(len(ps) for ps in self.parents)

    @property
    def roots(self) -> tuple[int, ...]:
        return tuple(i for i, ps in enumerate(self.parents) if not ps)

    @property
    def is_tree(self) -> bool:
        """Every node has at most one parent (Nichani et al.'s single-parent task;
        docs/tasks.md#tree-task)."""
        return all(len(ps) <= 1 for ps in self.parents)

    @property
    def dag_array(self) -> np.ndarray:
        """The official single-parent encoding ``int32[num_nodes]``: parent index or −1 for
        roots (a fresh array on every access). Raises ``ValueError`` for a graph with a node
        of in-degree > 1."""
        if not self.is_tree:
            raise ValueError("dag_array: only defined for graphs with in-degree <= 1")
        return np.array([ps[0] if ps else -1 for ps in self.parents], np.int32)

    def adjacency(self) -> np.ndarray:
        """0/1 matrix with ``adj[i, p] = 1`` for every parent p of i."""
        adj = np.zeros((self.num_nodes, self.num_nodes), np.float32)
        for i, ps in enumerate(self.parents):
            adj[i, list(ps)] = 1.0
        return adj

    def last_parent_only(self) -> "CausalGraph":
        """Each node keeps only its last parent: the "One NN" graph of Nichani Fig. 5."""
        return CausalGraph(tuple(ps[-1:] for ps in self.parents))


def _index(name: str, value) -> int:
    """An integer (Python or numpy; not bool or float), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer (got {value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer (got {value!r})") from None


def _parent_tuple(i: int, ps) -> tuple[int, ...]:
    """Node i's parents as a tuple of ints (``None`` = a root)."""
    if ps is None:
        return ()
    if isinstance(ps, (str, bytes)) or not hasattr(ps, "__iter__"):
        raise ValueError(f"parents[{i}] must be a sequence of parent positions or None for a root (got {ps!r})")
    return tuple(_index(f"parents[{i}] entry", p) for p in ps)


def _check_length(name: str, n: int, minimum: int = 1) -> int:
    if int(n) != n or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {n!r})")
    return int(n)


def tree_from_dag_array(dag: Sequence[int | None] | CausalGraph) -> CausalGraph:
    """Graph from the official encoding: ``dag[i]`` ∈ {−1, 0, …, i−1}, −1 or ``None`` = root
    (``[None, 0, 1]`` and ``[-1, 0, 1]`` are the same chain). A ``CausalGraph`` is returned
    unchanged if it is a tree (``ValueError`` otherwise)."""
    if isinstance(dag, CausalGraph):
        if not dag.is_tree:
            raise ValueError("dag: a CausalGraph with a node of in-degree > 1 is not a tree")
        return dag
    if isinstance(dag, (str, bytes)) or not hasattr(dag, "__iter__"):
        raise ValueError(f"dag must be a sequence of parent indices (-1 or None = root) (got {dag!r})")
    dag = [-1 if p is None else _index(f"dag[{i}]", p) for i, p in enumerate(dag)]
    for i, p in enumerate(dag):
        if not -1 <= p < i:
            raise ValueError(
                f"dag[{i}] = {p}: must be -1 (root) or a parent in [0, {i - 1}]"
            )
    return CausalGraph(tuple(() if p < 0 else (p,) for p in dag))


def chain_graph(num_nodes: int) -> CausalGraph:
    """p(i) = i − 1: the in-context Markov chain (node 0 is the root)."""
    n = _check_length("num_nodes", num_nodes)
    return tree_from_dag_array([-1] + list(range(n - 1)))


def icl_graph(num_nodes: int) -> CausalGraph:
    """(x, f(x)) pairs: even nodes are roots, node 2k+1 has parent 2k."""
    n = _check_length("num_nodes", num_nodes)
    return tree_from_dag_array([-1 if i % 2 == 0 else i - 1 for i in range(n)])


def _as_key(seed_or_key) -> jax.Array:
    if isinstance(seed_or_key, (int, np.integer)) and not isinstance(seed_or_key, bool):
        return jax.random.key(int(seed_or_key))
    if isinstance(seed_or_key, jax.Array) and jax.dtypes.issubdtype(seed_or_key.dtype, jax.dtypes.prng_key):
        return seed_or_key
    raise ValueError(f"seed must be an integer or a typed jax.random.key (got {seed_or_key!r})")


def random_tree_graph(seed_or_key, num_nodes: int) -> CausalGraph:
    """The official random tree: dag[i] ~ Uniform{−1, …, i−1} independently (so node i is
    a root with probability 1/(i+1); dag[0] = −1).

    Drawn exactly as the official ``single_parent.py`` does: ``RNG(seed).next()`` (split
    the key, take the second half) then one vectorised ``randint(key, (n,), −1, arange(n))``.
    Seed 0 with 19 context nodes gives [−1, −1, 0, 2, 0, 2, 1, 5, 1, 5, 5, 3, 9, 12, 10, 12,
    10, 8, 2] (the official seed-0 graph under JAX 0.10; docs/tasks.md#graph-families). Concrete (host)
    output, so the graph can configure a task."""
    n = _check_length("num_nodes", num_nodes)
    _, sub = jax.random.split(_as_key(seed_or_key))
    dag = np.asarray(jax.random.randint(sub, (n,), -1, np.arange(n))).tolist()
    dag[0] = -1
    return tree_from_dag_array(dag)


def fig9_graph(seed_or_key, num_nodes: int, root_prob: float = 0.5) -> CausalGraph:
    """Nichani Fig. 9 generator: candidate parent Uniform{0..i−1}; root with prob p."""
    n = _check_length("num_nodes", num_nodes)
    if not 0.0 <= root_prob <= 1.0:
        raise ValueError(f"root_prob must be in [0, 1] (got {root_prob})")
    k_parent, k_root = jax.random.split(_as_key(seed_or_key))
    u = np.asarray(jax.random.uniform(k_parent, (n,)))
    is_root = np.asarray(jax.random.uniform(k_root, (n,))) < root_prob
    dag = [-1] + [
        -1 if is_root[i] else min(int(np.floor(u[i] * i)), i - 1) for i in range(1, n)
    ]
    return tree_from_dag_array(dag)


def fig9_graphs(seed: int, count: int, num_nodes: int, root_prob: float = 0.5):
    """``count`` independent Fig. 9 graphs (the paper uses 20)."""
    _check_length("count", count)
    keys = jax.random.split(jax.random.key(seed), count)
    return tuple(fig9_graph(k, num_nodes, root_prob) for k in keys)


def manual_graph() -> CausalGraph:
    """The official ``manual`` DAG [−1, 0, 0, 1, 2] (used with S = 3, T = 6)."""
    return tree_from_dag_array([-1, 0, 0, 1, 2])


def graph_from_parent_lists(parent_lists: Sequence[Sequence[int] | None] | CausalGraph) -> CausalGraph:
    """Multi-parent DAG from one parent list per node (the last node may be a target); a
    root is ``()`` or ``None``. A ``CausalGraph`` is returned unchanged."""
    if isinstance(parent_lists, CausalGraph):
        return parent_lists
    return CausalGraph(parent_lists)


def nichani_fig5_graph(seq_len: int = 32) -> CausalGraph:
    """The official multi-parent graph (Fig. 5): ``seq_len`` inputs plus the target.

    Nodes 0, 1 are roots; node i >= 2 has parents (⌊(i−1)/2⌋, i−1); the target (node
    ``seq_len``) has parents (⌊(T−1)/2⌋, T−1), i.e. (15, 31) for T = 32."""
    t = _check_length("seq_len", seq_len, minimum=3)
    return CausalGraph(tuple(() if i < 2 else ((i - 1) // 2, i - 1) for i in range(t + 1)))


def ngram_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
    """Validated n-gram parent offsets (docs/tasks.md#n-gram-task): distinct positive integers, sorted.

    ``(1, 2)`` is the paper's 3-gram (the official ``--n-gram 3``)."""
    try:
        offs = tuple(sorted(int(o) for o in offsets))
    except (TypeError, ValueError):
        raise ValueError(f"parent_offsets must be a sequence of integers (got {offsets!r})") from None
    if not offs:
        raise ValueError("parent_offsets must name at least one offset (got none)")
    if offs[0] < 1 or len(set(offs)) != len(offs):
        raise ValueError(f"parent_offsets must be distinct integers >= 1 (got {offsets!r})")
    return offs
