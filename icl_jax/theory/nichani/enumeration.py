"""Exact enumeration of tiny tree tasks for one fixed π: every sequence with its
probability, and the exact population loss and its gradient w.r.t. A1 at initialisation
(docs/nichani-theory.md#exact-enumeration)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.losses import DEFAULT_EPS, check_labels, cross_entropy_probs, targets
from icl_jax.models.reduced import ReducedModel, reduced_probs
from icl_jax.tasks.priors import stationary_distribution
from icl_jax.tasks.sampling import Batch
from icl_jax.theory.nichani._checks import _as_graph, _check_beta0, _check_eps, _float

__all__ = ["MAX_ENUMERATION", "enumerate_sequences", "exact_population_loss", "exact_population_gradient"]


MAX_ENUMERATION = 1 << 17
"""Largest number of enumerated (sequence[, label]) combinations :func:`enumerate_sequences` allows."""


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
    return _enumerate(s, labels, jnp.asarray(graph.dag_array), _float(pi_SxS))


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
    dag = jnp.asarray(_as_graph(task).dag_array)
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
    dag = jnp.asarray(_as_graph(task).dag_array)
    return _exact_grad(task.vocab_size, labels, dag, _float(pi_SxS), beta0, eps)
