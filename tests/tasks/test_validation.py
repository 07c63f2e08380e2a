"""Invalid configurations raise ValueError naming the argument and the valid range."""

import jax
import pytest

from icl_jax import (
    CausalGraph,
    DAGTask,
    NGramTask,
    TreeTask,
    chain_graph,
    chen_bigram_task,
    dag_task,
    fig9_graph,
    graph_from_parent_lists,
    ngram_offsets,
    random_tree_graph,
    tree_from_dag_array,
    tree_task,
)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: tree_task("chain", vocab_size=1), "vocab_size must be an integer >= 2"),
        (lambda: tree_task("chain", alpha=0.0), "alpha must be a finite scalar > 0"),
        (lambda: tree_task("chain", alpha=-1.0), "alpha must be a finite scalar > 0"),
        (lambda: tree_task("chain", alpha=float("nan")), "alpha must be a finite scalar > 0"),
        (lambda: tree_task("chain", seq_len=1), "seq_len must be an integer >= 2"),
        (lambda: TreeTask(chain_graph(3), 3, None), "alpha must be a finite scalar > 0"),
        (lambda: TreeTask(chain_graph(3), 3, "0.1"), "alpha must be a finite scalar > 0"),
        (lambda: random_tree_graph(1.5, 5), "seed must be an integer or a typed jax.random.key"),
        (lambda: tree_task("spiral"), "graph must be one of"),
        (lambda: tree_task("manual", seq_len=20), "seq_len must be 6 for the manual graph"),
        (lambda: TreeTask(graph_from_parent_lists([[], [], [0, 1]]), 3, 0.1), "in-degree <= 1"),
        (lambda: tree_from_dag_array([-1, 1]), r"dag\[1\] = 1: must be -1 \(root\) or a parent in \[0, 0\]"),
        (lambda: tree_from_dag_array([-1, -2]), r"dag\[1\] = -2"),
        (lambda: CausalGraph(((), (2,), ())), r"parents\[1\].*earlier position in \[0, 0\]"),
        (lambda: CausalGraph(((), (0, 0))), "parents must be distinct"),
        (lambda: CausalGraph(()), "at least one node"),
        (lambda: chain_graph(0), "num_nodes must be an integer >= 1"),
        (lambda: fig9_graph(0, 10, root_prob=1.5), r"root_prob must be in \[0, 1\]"),
        (lambda: DAGTask(graph_from_parent_lists([[], [0], []]), 3), "target and must have at least one parent"),
        (lambda: dag_task(roots="sometimes"), "roots must be one of"),
        (lambda: DAGTask(graph_from_parent_lists([[]] * 5 + [[0, 1, 2, 3, 4]]), 10), "kernel rows"),
        (lambda: ngram_offsets([0, 1]), "distinct integers >= 1"),
        (lambda: ngram_offsets([1, 1]), "distinct integers >= 1"),
        (lambda: ngram_offsets([]), "at least one offset"),
        (lambda: NGramTask(3, 2, (1, 2)), r"seq_len must be >= max\(parent_offsets\) \+ 1 = 3"),
        (lambda: NGramTask(3, 10, (1, 2), init="random"), "init must be one of"),
        (lambda: NGramTask(3, 10, (1, 2), query="last"), "query must be one of"),
        (lambda: NGramTask(10, 100, (1, 2, 3, 4, 5)), "kernel rows"),
        (lambda: NGramTask(4, 100, (1, 7), init="stationary"), "init='stationary' solves a chain"),
        (lambda: chen_bigram_task(variant="new"), "variant must be one of"),
    ],
)
def test_invalid_configurations_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        tree_task("chain").sample(jax.random.key(0), 0)


def test_alpha_eager_raises_traced_gives_nan_kernels():
    """A concrete α <= 0 raises naming ``alpha`` in every task; a traced one cannot be checked
    and gives all-NaN kernels, hence NaN soft labels (never finite garbage)."""
    import jax.numpy as jnp
    import numpy as np

    from icl_jax.tasks.priors import sample_dirichlet

    for make in (
        lambda a: TreeTask(chain_graph(3), 3, a),
        lambda a: DAGTask(graph_from_parent_lists([[], [0], [0, 1]]), 3, alpha=a),
        lambda a: NGramTask(3, 4, (1,), alpha=a),
        lambda a: chen_bigram_task(alpha=a),
        lambda a: sample_dirichlet(jax.random.key(0), a, (2,), 3),
    ):
        for a in (0, -0.5, np.float32(0.0)):
            with pytest.raises(ValueError, match="alpha must be a finite scalar > 0"):
                make(a)
    pi = jax.vmap(lambda a: sample_dirichlet(jax.random.key(0), a, (2,), 3))(jnp.array([0.5, 0.0, -1.0]))
    assert np.all(np.isfinite(pi[0])) and np.all(np.isnan(pi[1:]))
    task = tree_task(chain_graph(3), vocab_size=3, alpha=0.5)
    labels = jax.jit(lambda a: task.replace(alpha=a).sample(jax.random.key(0), 4).label_probs_BxS)(jnp.float32(-1.0))
    assert np.all(np.isnan(labels))
