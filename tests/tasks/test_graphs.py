"""Graph constructors (docs/tasks.md#graph-families)."""

import numpy as np

from icl_jax import (
    chain_graph,
    fig9_graphs,
    icl_graph,
    manual_graph,
    ngram_offsets,
    nichani_fig5_graph,
    random_tree_graph,
    tree_from_dag_array,
)


def test_chain_and_icl():
    np.testing.assert_array_equal(chain_graph(5).dag_array(), [-1, 0, 1, 2, 3])
    g = icl_graph(19)  # T = 20: pairs (0,1)...(16,17), extra root 18
    assert g.dag_array()[17] == 16 and g.dag_array()[18] == -1 and g.roots == tuple(range(0, 19, 2))


def test_random_tree_reproduces_official_seed0_graph():
    expected = [-1, -1, 0, 2, 0, 2, 1, 5, 1, 5, 5, 3, 9, 12, 10, 12, 10, 8, 2]
    assert random_tree_graph(0, 19).dag_array().tolist() == expected
    assert random_tree_graph(1, 19) != random_tree_graph(0, 19)


def test_random_tree_root_frequency():
    """P(dag[i] = −1) = 1/(i+1): pooled over 400 seeds at i = 1 and i = 3 (binomial 5σ)."""
    dags = np.stack([random_tree_graph(s, 5).dag_array() for s in range(400)])
    for i in (1, 3):
        p, n = 1 / (i + 1), dags.shape[0]
        assert abs((dags[:, i] == -1).mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert np.all(dags < np.arange(5)) and np.all(dags >= -1)


def test_fig9_graphs_valid_and_distinct():
    graphs = fig9_graphs(0, 20, 19, root_prob=0.5)
    assert len(set(graphs)) == 20
    roots = np.mean([len(g.roots) - 1 for g in graphs]) / 18  # node 0 is always a root
    assert 0.3 < roots < 0.7


def test_manual_and_fig5():
    np.testing.assert_array_equal(manual_graph().dag_array(), [-1, 0, 0, 1, 2])
    g = nichani_fig5_graph(32)
    assert g.num_nodes == 33 and g.parents[32] == (15, 31) and g.parents[7] == (3, 6) and g.roots == (0, 1)
    assert g.last_parent_only().parents[32] == (31,)


def test_adjacency_and_offsets():
    g = tree_from_dag_array([-1, 0, 0])
    np.testing.assert_array_equal(g.adjacency(), [[0, 0, 0], [1, 0, 0], [1, 0, 0]])
    assert ngram_offsets([2, 1]) == (1, 2)
