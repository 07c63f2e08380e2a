"""Graph constructors (docs/tasks.md#graph-families)."""

import numpy as np
import pytest

from icl_jax import (
    CausalGraph,
    TreeTask,
    chain_graph,
    dag_task,
    fig9_graphs,
    graph_from_parent_lists,
    icl_graph,
    manual_graph,
    ngram_offsets,
    nichani_fig5_graph,
    random_tree_graph,
    tree_from_dag_array,
    tree_task,
)
from icl_jax.models import CatFormer


def test_chain_and_icl():
    np.testing.assert_array_equal(chain_graph(5).dag_array, [-1, 0, 1, 2, 3])
    g = icl_graph(19)  # T = 20: pairs (0,1)...(16,17), extra root 18
    assert g.dag_array[17] == 16 and g.dag_array[18] == -1 and g.roots == tuple(range(0, 19, 2))


def test_random_tree_reproduces_official_seed0_graph():
    expected = [-1, -1, 0, 2, 0, 2, 1, 5, 1, 5, 5, 3, 9, 12, 10, 12, 10, 8, 2]
    assert random_tree_graph(0, 19).dag_array.tolist() == expected
    assert random_tree_graph(1, 19) != random_tree_graph(0, 19)


def test_random_tree_root_frequency():
    """P(dag[i] = −1) = 1/(i+1): pooled over 400 seeds at i = 1 and i = 3 (binomial 5σ)."""
    dags = np.stack([random_tree_graph(s, 5).dag_array for s in range(400)])
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
    np.testing.assert_array_equal(manual_graph().dag_array, [-1, 0, 0, 1, 2])
    g = nichani_fig5_graph(32)
    assert g.num_nodes == 33 and g.parents[32] == (15, 31) and g.parents[7] == (3, 6) and g.roots == (0, 1)
    assert g.last_parent_only().parents[32] == (31,)


def test_adjacency_and_offsets():
    g = tree_from_dag_array([-1, 0, 0])
    np.testing.assert_array_equal(g.adjacency(), [[0, 0, 0], [1, 0, 0], [1, 0, 0]])
    assert ngram_offsets([2, 1]) == (1, 2)


def test_none_and_minus_one_are_both_roots():
    assert tree_from_dag_array([None, 0, 1]) == tree_from_dag_array([-1, 0, 1]) == chain_graph(3)
    assert tree_from_dag_array(np.array([None, 0, None], dtype=object)).roots == (0, 2)
    assert graph_from_parent_lists([None, [0], (0, 1)]) == graph_from_parent_lists([[], [0], [0, 1]])
    assert CausalGraph([None, (0,)]) == CausalGraph(((), (0,))) and CausalGraph([None, (0,)]).parents == ((), (0,))
    model = CatFormer(3, 4)  # a dag array for the reference construction, None roots included
    for parents in ([None, 0, 1], [-1, 0, 1], chain_graph(3)):
        np.testing.assert_array_equal(model.reference_params(parents)["A1"], model.reference_params([-1, 0, 1])["A1"])


def test_graph_forms_accept_a_causal_graph():
    g, dag = icl_graph(5), nichani_fig5_graph(4)
    assert tree_from_dag_array(g) is g and graph_from_parent_lists(dag) is dag
    assert tree_task(g, vocab_size=3).graph is g and dag_task(dag, vocab_size=3).graph is dag
    with pytest.raises(ValueError, match="in-degree > 1"):
        tree_from_dag_array(dag)
    for bad, match in [
        (lambda: tree_from_dag_array([-1, 0.5]), r"dag\[1\] must be an integer"),
        (lambda: tree_from_dag_array(3), "dag must be a sequence"),
        (lambda: CausalGraph([(), 0]), r"parents\[1\] must be a sequence of parent positions or None"),
        (lambda: CausalGraph([(), ("a",)]), r"parents\[1\] entry must be an integer"),
        (lambda: tree_task([-1, 0, 1]), "graph must be a graph name or a CausalGraph.*tree_from_dag_array"),
        (lambda: dag_task([[], [0]]), "graph must be 'fig5' or a CausalGraph.*graph_from_parent_lists"),
        (lambda: TreeTask([-1, 0], 3), "graph must be a CausalGraph.*tree_from_dag_array"),
    ]:
        with pytest.raises(ValueError, match=match):
            bad()


def test_dag_array_is_a_property():
    g = chain_graph(4)
    assert isinstance(g.dag_array, np.ndarray) and g.dag_array.dtype == np.int32
    np.testing.assert_array_equal(g.dag_array, [-1, 0, 1, 2])
    g.dag_array[0] = 5  # a fresh array each access: the graph is unchanged
    assert g.dag_array[0] == -1
    with pytest.raises(ValueError, match="dag_array: only defined for graphs with in-degree <= 1"):
        nichani_fig5_graph(4).dag_array


def test_tree_task_seq_len_defaults_and_conflicts():
    g = chain_graph(9)
    assert tree_task(g).seq_len == 10 and tree_task(g, seq_len=10).seq_len == 10
    assert tree_task().seq_len == 20 and tree_task("icl", seq_len=8).seq_len == 8
    assert tree_task("manual").seq_len == 6 and tree_task("manual", seq_len=6).seq_len == 6
    with pytest.raises(ValueError, match=r"seq_len = 16 conflicts with graph: seq_len must equal graph.num_nodes \+ 1 = 10"):
        tree_task(g, seq_len=16)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2"):
        tree_task(g, seq_len=1)
    dag = nichani_fig5_graph(4)
    assert dag_task().seq_len == 32 and dag_task(dag).seq_len == 4 and dag_task(dag, seq_len=4).seq_len == 4
    with pytest.raises(ValueError, match=r"seq_len = 32 conflicts with graph: seq_len must equal graph.num_nodes − 1 = 4"):
        dag_task(dag, seq_len=32)
