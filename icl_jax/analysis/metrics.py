"""Graph-recovery metrics on layer-1 attention (docs/tasks.md#graph-recovery-metrics).

All functions are ``jnp`` and take the parent structure as an array, so they run inside the
engine's compiled metrics (vmapped over seeds and over graphs, Fig. 9) as well as on host.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["parent_attention_metrics", "head_parent_matching"]


def parent_attention_metrics(attn_TxT: jax.Array, parents_N: jax.Array) -> dict:
    """Attention of each non-root node on its parent.

    Args:
      attn_TxT: row-stochastic layer-1 attention (row i over keys k ≤ i), T ≥ N.
      parents_N: official dag array over the first N positions (−1 = root); may be traced.

    Returns:
      ``parent_attention`` [N] (0 on roots), ``parent_argmax_accuracy`` (fraction of non-root
      rows whose argmax is the parent), ``mean_parent_attention`` (mean attention mass on
      the parent over non-root rows; equals the official Fig. 9 "graph recovery"
      1 − mean(1 − attention to parent)).
    """
    parents_N = jnp.asarray(parents_N)
    n = parents_N.shape[0]
    attn = attn_TxT[:n, :n]
    has_parent = parents_N >= 0
    safe = jnp.where(has_parent, parents_N, 0)
    on_parent = jnp.where(has_parent, attn[jnp.arange(n), safe], 0.0)
    hit = has_parent & (jnp.argmax(attn, axis=-1) == parents_N)
    count = jnp.maximum(jnp.sum(has_parent), 1)
    return {
        "parent_attention": on_parent,
        "parent_argmax_accuracy": jnp.sum(hit) / count,
        "mean_parent_attention": jnp.sum(on_parent) / count,
    }


def head_parent_matching(attn_HxTxT, parent_lists) -> dict:
    """Match layer-1 heads to parent slots (multi-parent graphs; head order is arbitrary).

    Slot j of node i is its j-th parent (e.g. Fig. 5: slot 0 = ⌊(i−1)/2⌋, slot 1 = i−1). Over
    the nodes with a full set of parents, every assignment of heads to slots is scored by the
    mean attention each head puts on its slot's parent; the best one is returned.

    Args:
      attn_HxTxT: layer-1 attention per head (host or device array).
      parent_lists: parents of the first N ≤ T positions (tuples; the target excluded).

    Returns (host values): ``assignment`` (slot of each head, −1 if unmatched),
    ``head_parent_attention`` (per head, mean mass on its slot's parent),
    ``head_argmax_accuracy`` (per head, fraction of nodes whose argmax is that parent),
    ``both_parents_recovered`` (fraction of nodes whose heads' argmaxes are exactly the parent
    set), ``mean_matched_attention``.
    """
    attn = np.asarray(attn_HxTxT)
    h = attn.shape[0]
    k = max(len(p) for p in parent_lists)
    nodes = [i for i, p in enumerate(parent_lists) if len(p) == k]
    if not nodes or k == 0:
        raise ValueError("parent_lists: no node has parents to match")
    par = np.array([parent_lists[i] for i in nodes])  # [M, k]
    rows = np.array(nodes)
    # mass[h, j] = mean over nodes of head h's attention on slot j's parent
    mass = np.stack([attn[:, rows, par[:, j]].mean(-1) for j in range(k)], axis=-1)
    best, best_score = None, -np.inf
    slots = list(range(k)) + [-1] * max(0, h - k)
    for perm in set(itertools.permutations(slots, h)):
        score = sum(mass[i, s] for i, s in enumerate(perm) if s >= 0)
        if score > best_score:
            best, best_score = perm, score
    argmax = attn[:, rows].argmax(-1)  # [H, M]
    head_mass, head_acc = [], []
    for i, s in enumerate(best):
        head_mass.append(float(mass[i, s]) if s >= 0 else float("nan"))
        head_acc.append(float(np.mean(argmax[i] == par[:, s])) if s >= 0 else float("nan"))
    recovered = np.mean([set(argmax[:, m].tolist()) == set(par[m].tolist()) for m in range(len(nodes))])
    matched = [m for m in head_mass if np.isfinite(m)]
    return {
        "assignment": [int(s) for s in best],
        "head_parent_attention": head_mass,
        "head_argmax_accuracy": head_acc,
        "both_parents_recovered": float(recovered),
        "mean_matched_attention": float(np.mean(matched)),
    }
