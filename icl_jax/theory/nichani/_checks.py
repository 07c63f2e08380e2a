"""Argument checks and coercions shared by the Nichani theory modules: β0 and ε, the tree
graph of a task, the default float dtype (see docs/nichani-theory.md#code-and-tests)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.graphs import CausalGraph


def _check_beta0(beta0):
    if not (isinstance(beta0, (int, float, np.floating, np.integer)) and math.isfinite(beta0) and beta0 > 0):
        raise ValueError(f"beta0 must be a finite number > 0 (got {beta0!r})")


def _check_eps(eps):
    if not (isinstance(eps, (int, float, np.floating, np.integer)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (got {eps!r})")


def _as_graph(graph_or_task) -> CausalGraph:
    graph = getattr(graph_or_task, "graph", graph_or_task)
    if not isinstance(graph, CausalGraph) or not graph.is_tree:
        raise ValueError("expected a tree CausalGraph or a TreeTask")
    return graph


def _float(x) -> jax.Array:
    return jnp.asarray(x, jnp.result_type(float))
