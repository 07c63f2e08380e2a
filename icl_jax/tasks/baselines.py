"""Reference predictors on a batch (Nichani et al., Chen et al.; docs/tasks.md#baselines).

Every in-context estimator here is one of two formulas applied to a *match mask*
``match_BxT`` marking the input positions whose conditioning context equals the
target's (e.g. "the parent of position i holds the query token"):

* :func:`posterior_predictive` — Dirichlet posterior predictive (N(z*, e) + α)/(N(z*) + Sα);
* :func:`gih_predictive` — Chen's generalised induction head with temperature a,
  [(e^a − 1)N(z*, e) + N(e)] / [(e^a − 1)N(z*) + L], a = ∞ being the hard count
  estimator (falls back to the unigram N(e)/L when the context never occurs).

The task-specific part is only the mask: :func:`tree_match`, :func:`dag_match`,
:func:`ngram_match`. :func:`baseline_predictions` assembles every named baseline of a
task, :func:`baseline_losses` their per-sequence losses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.losses import DEFAULT_EPS, check_labels, cross_entropy_probs, floored_probs, official_double_softmax_ce, targets
from icl_jax.tasks.graphs import CausalGraph, ngram_offsets
from icl_jax.tasks.sampling import Batch
from icl_jax.tasks.tasks import DAGTask, NGramTask, TreeTask, sample_batch

__all__ = [
    "posterior_predictive",
    "gih_predictive",
    "tree_match",
    "dag_match",
    "ngram_match",
    "baseline_predictions",
    "baseline_losses",
    "DEFAULT_GIH_TEMPERATURES",
    "HARD_ESTIMATOR_EPS",
    "estimate_baseline_losses",
]

DEFAULT_GIH_TEMPERATURES = (1.0, 3.0, 10.0)
# Floor used when scoring estimators that can assign zero mass (hard counts, GIH(a)): the
# library's one ε (icl_jax.losses.DEFAULT_EPS).
HARD_ESTIMATOR_EPS = DEFAULT_EPS


def _counts(tokens_BxT, weights_BxT, vocab_size):
    onehot = jax.nn.one_hot(tokens_BxT, vocab_size, dtype=weights_BxT.dtype)
    return jnp.einsum("bt,bts->bs", weights_BxT, onehot)


def posterior_predictive(tokens_BxT, match_BxT, vocab_size: int, alpha) -> jax.Array:
    """(N(z*, e) + α) / (N(z*) + Sα): the Dirichlet(α) posterior predictive of the row
    that generated the matched positions (exact Bayes when only those positions inform
    the row, e.g. multi-parent DAGs with uniform roots; docs/tasks.md#posterior-predictive-bayes)."""
    counts = _counts(tokens_BxT, match_BxT.astype(jnp.float32), vocab_size)
    return (counts + alpha) / (jnp.sum(counts, -1, keepdims=True) + vocab_size * alpha)


def gih_predictive(tokens_BxT, match_BxT, vocab_size: int, a) -> jax.Array:
    """Generalised induction head ŷ_a (Chen et al.; docs/chen-theory.md#generalised-induction-head),
    exact for every a in [0, ∞].

    Written with e^{−a} so a = ∞ needs no special case: weights 1 on matches and e^{−a}
    elsewhere; when nothing matches and a = ∞ it falls back to N(e)/L (the a → ∞ limit)."""
    m = match_BxT.astype(jnp.float32)
    decay = jnp.exp(-jnp.asarray(a, jnp.float32))
    w = m + decay * (1.0 - m)
    num = _counts(tokens_BxT, w, vocab_size)
    den = jnp.sum(num, -1, keepdims=True)
    unigram = _counts(tokens_BxT, jnp.ones_like(m), vocab_size) / tokens_BxT.shape[1]
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), unigram)


def tree_match(graph: CausalGraph, tokens_BxT, official: bool = False) -> jax.Array:
    """``[B, T−1]`` mask over context positions: those i whose parent holds the query token x_{T−1} (roots never match).

    ``official=True`` reproduces the official ``InContextTree.bayes`` wrap-around: a root's
    parent index −1 reads the last context token x_{T−2}, so when x_{T−2} equals the query
    every root is counted (docs/quirks.md#nichani-quirk-1)."""
    dag = graph.dag_array
    t = tokens_BxT.shape[1]
    if len(dag) != t - 1:
        raise ValueError(f"tokens_BxT has {t} positions but the graph has {len(dag)} context nodes + query")
    parent = np.where(dag >= 0, dag, t - 2)
    valid = jnp.asarray(official | (dag >= 0))[None, :]
    query = tokens_BxT[:, -1:]
    return valid & (tokens_BxT[:, parent] == query)


def dag_match(graph: CausalGraph, tokens_BxT) -> jax.Array:
    """Input nodes with the target's in-degree whose parent tuple equals the target's
    (the official multi-parent Bayes; docs/tasks.md#match-masks). ``graph`` has T+1 nodes, the target last."""
    t = tokens_BxT.shape[1]
    if graph.num_nodes != t + 1:
        raise ValueError(f"tokens_BxT has {t} positions; the graph needs {t} inputs + target")
    target = graph.parents[-1]
    k = len(target)
    same = np.array([len(ps) == k for ps in graph.parents[:-1]])
    par = np.array([ps if len(ps) == k else target for ps in graph.parents[:-1]], np.int32)  # [T, k]
    eq = tokens_BxT[:, par] == tokens_BxT[:, list(target)][:, None, :]  # [B, T, k]
    return jnp.asarray(same)[None, :] & jnp.all(eq, axis=-1)


def ngram_match(offsets: Sequence[int], tokens_BxT) -> jax.Array:
    """Positions l whose tokens at l − o equal the target's x_{L+1−o} for every offset o
    (Chen et al.'s m_l; docs/chen-theory.md#generalised-induction-head); positions without a full
    context never match."""
    offsets = ngram_offsets(offsets)
    t = tokens_BxT.shape[1]
    if max(offsets) > t:
        raise ValueError(f"offsets {offsets} reach before the start of a length-{t} sequence")
    pos = np.arange(t)
    has_ctx = pos >= max(offsets)
    match = jnp.asarray(has_ctx)[None, :]
    for o in offsets:
        prev = np.clip(pos - o, 0, t - 1)
        match = match & (tokens_BxT[:, prev] == tokens_BxT[:, t - o][:, None])
    return match


def _subset_name(offsets) -> str:
    return "".join(str(o) for o in offsets) if all(o < 10 for o in offsets) else "_".join(map(str, offsets))


def _ngram_subsets(offsets: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Parent set, each single parent, and the parents plus the next offset
    (docs/tasks.md#gih-and-count-estimators)."""
    subsets = [offsets] + [(o,) for o in offsets if len(offsets) > 1]
    subsets.append(offsets + (max(offsets) + 1,))
    return subsets


def baseline_predictions(task, batch: Batch, gih_temperatures=DEFAULT_GIH_TEMPERATURES) -> dict[str, jax.Array]:
    """Every reference predictor of ``task`` on ``batch``: name → ``probs_BxS``.

    Tree: ``bayes`` (roots masked), ``bayes_official`` (wrap-around bug), ``unigram``,
    ``count`` (hard count, GIH(∞)), ``gih_a{a}``, ``uniform``, ``oracle`` (π itself).
    DAG: ``bayes`` (exact posterior predictive), ``one_nn`` (last parent only), the rest
    as for trees. n-gram: ``bayes`` on the true parents, ``gih_{S}_a{a}`` and
    ``count_{S}`` for parent subsets S, ``unigram``, ``uniform``, ``oracle``.

    ``bayes`` is exact Bayes for DAGs with uniform roots and n-grams with uniform initial
    tokens; for trees (roots ~ μ_π) and ``init="stationary"`` the roots / initial tokens
    also carry information about π, which it ignores (docs/tasks.md#posterior-predictive-bayes).
    """
    tokens, s, alpha = batch.tokens_BxT, task.vocab_size, task.alpha
    out: dict[str, jax.Array] = {}
    if isinstance(task, TreeTask):
        match = tree_match(task.graph, tokens)
        context = tokens[:, :-1]  # the query is independent of π: not counted as evidence
        out["bayes"] = posterior_predictive(context, match, s, alpha)
        official = tree_match(task.graph, tokens, official=True)
        out["bayes_official"] = posterior_predictive(context, official, s, alpha)
    elif isinstance(task, DAGTask):
        match = dag_match(task.graph, tokens)
        context = tokens
        out["bayes"] = posterior_predictive(tokens, match, s, alpha)
        out["one_nn"] = posterior_predictive(tokens, dag_match(task.graph.last_parent_only(), tokens), s, alpha)
    elif isinstance(task, NGramTask):
        # with query="uniform" x_L is re-drawn independently of π: no evidence (its match
        # is a pair (x_{L-1}, x_L) that π never generated)
        n_ev = tokens.shape[1] - (task.query == "uniform")
        context = tokens[:, :n_ev]
        match = ngram_match(task.parent_offsets, tokens)[:, :n_ev]
        out["bayes"] = posterior_predictive(context, match, s, alpha)
    else:
        raise ValueError(f"task must be a TreeTask, DAGTask or NGramTask (got {type(task).__name__})")
    out["unigram"] = posterior_predictive(context, jnp.ones(context.shape, bool), s, alpha)
    if isinstance(task, NGramTask):
        for sub in _ngram_subsets(task.parent_offsets):
            if max(sub) > tokens.shape[1]:
                continue
            m = ngram_match(sub, tokens)[:, :n_ev]
            name = _subset_name(sub)
            out[f"count_{name}"] = gih_predictive(context, m, s, math.inf)
            for a in gih_temperatures:
                out[f"gih_{name}_a{a:g}"] = gih_predictive(context, m, s, a)
    else:
        out["count"] = gih_predictive(context, match, s, math.inf)
        for a in gih_temperatures:
            out[f"gih_a{a:g}"] = gih_predictive(context, match, s, a)
    out["uniform"] = jnp.full_like(batch.label_probs_BxS, 1.0 / s)
    out["oracle"] = batch.label_probs_BxS
    return out


def _needs_floor(name: str) -> bool:
    """Unsmoothed estimators (hard counts, GIH) give zero mass to unseen tokens."""
    return name.startswith(("count", "gih"))


def baseline_losses(task, batch: Batch, *, labels: str = "soft", official_metric: bool = False, **kw) -> dict[str, jax.Array]:
    """Per-sequence cross-entropy of every baseline (``[B]`` each).

    Args:
      labels: ``"soft"`` scores against the true law ``batch.label_probs_BxS``, ``"hard"``
        against the sampled token ``batch.label_B`` (:func:`icl_jax.losses.targets`). The
        predictions never depend on the convention: ``oracle`` is always the true law
        π(·|parents), so its hard-label loss estimates the conditional entropy.
      official_metric: also return ``{name}/official``, Chen's double-softmax metric.

    Hard count and GIH estimators can put zero mass on a possible token; they are scored as
    the mixture (p + ε)/(1 + Sε) with ε = :data:`HARD_ESTIMATOR_EPS`."""
    preds = baseline_predictions(task, batch, **kw)
    y = targets(batch, labels, task.vocab_size)
    out = {}
    for name, p in preds.items():
        if _needs_floor(name):  # score the proper distribution (p + ε)/(1 + Sε)
            p = floored_probs(p, HARD_ESTIMATOR_EPS)
        out[name] = cross_entropy_probs(p, y)
        if official_metric:
            out[f"{name}/official"] = official_double_softmax_ce(p, y)
    return out


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _chunk_stats(task, key, size, official_metric, labels):
    """Sum and sum of squares of every baseline's per-sequence loss on one fresh chunk."""
    losses = baseline_losses(task, sample_batch(task, key, size), labels=labels, official_metric=official_metric)
    return {k: (jnp.sum(v), jnp.sum(jnp.square(v))) for k, v in losses.items()}


def estimate_baseline_losses(
    task,
    key: jax.Array,
    num_samples: int,
    *,
    chunk_size: int = 16384,
    labels: str = "soft",
    official_metric: bool = False,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Monte-Carlo loss of every baseline: name → {"loss": mean, "se": standard error}.

    Sequences are drawn in chunks of ``chunk_size`` (keys ``fold_in(key, chunk)``), so
    memory stays bounded; ``se`` is the sample standard deviation over sequences divided
    by √n (sequences are i.i.d.). ``labels`` as in :func:`baseline_losses`."""
    check_labels(labels)
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2 (got {num_samples!r})")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (got {chunk_size!r})")

    from tqdm.auto import tqdm

    sums: dict[str, list[float]] = {}
    done, chunk = 0, 0
    bar = tqdm(total=num_samples, desc="baselines", unit="seq", disable=not progress)
    while done < num_samples:
        size = min(chunk_size, num_samples - done)
        stats = jax.device_get(_chunk_stats(task, jax.random.fold_in(key, chunk), size, official_metric, labels))
        for k, (s1, s2) in stats.items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += float(s1)
            acc[1] += float(s2)
        done += size
        chunk += 1
        bar.update(size)
    bar.close()
    out = {}
    for k, (s1, s2) in sums.items():
        mean = s1 / num_samples
        var = max(s2 / num_samples - mean * mean, 0.0) * num_samples / (num_samples - 1)
        out[k] = {"loss": mean, "se": math.sqrt(var / num_samples)}
    return out
