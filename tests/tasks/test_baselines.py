"""Baselines: closed forms, brute-force Bayes, hand-made sequences."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln

from icl_jax import (
    NGramTask,
    chen_bigram_task,
    dag_match,
    gih_predictive,
    ngram_match,
    nichani_fig5_graph,
    posterior_predictive,
    tree_match,
    tree_task,
)
from icl_jax.tasks.baselines import baseline_predictions, estimate_baseline_losses
from icl_jax.tasks.tasks import sample_batch


# Monte-Carlo estimates run in chunks of at most 65536 Dirichlet draws (chunk x kernel rows
# x S), which keeps the compiled programs small. The number of samples, and so every
# standard error, is unchanged.
@pytest.mark.parametrize(
    "task,chunk_size",
    [(tree_task("chain", vocab_size=10, seq_len=20, alpha=0.1), 512),  # 512 x 10 x 10 draws
     (chen_bigram_task(vocab_size=3, seq_len=30, alpha=0.1), 4096)],  # 4096 x 3 x 3
    ids=["tree", "bigram"],
)
def test_oracle_monte_carlo_matches_digamma_closed_form(task, chunk_size):
    """E[H(π(·|x_T))] = ψ(Sα+1) − ψ(α+1) for a uniform, independent query: within 4 s.e."""
    est = estimate_baseline_losses(task, jax.random.key(0), 65536, chunk_size=chunk_size)["oracle"]
    assert abs(est["loss"] - task.oracle_closed_form()) < 4 * est["se"], (est, task.oracle_closed_form())


def _brute_force_bigram_predictive(x, s, alpha):
    """P(y | x) for a bigram chain with a uniform first token, by Dirichlet-multinomial
    marginal likelihoods: P(x, y) ∝ Π_rows B(n_r + α)/B(α), enumerated over y."""

    def log_marginal(seq):
        counts = np.zeros((s, s))
        for a, b in zip(seq[:-1], seq[1:]):
            counts[a, b] += 1
        return sum(np.sum(gammaln(c + alpha)) - gammaln(c.sum() + s * alpha) for c in counts)

    logs = np.array([log_marginal(list(x) + [y]) for y in range(s)])
    return np.exp(logs - np.logaddexp.reduce(logs))


def _grid_bigram_predictive(x, alpha, grid=4000):
    """S = 2: integrate the two Beta(α, α) rows on a midpoint grid (no conjugacy used)."""
    p = (np.arange(grid) + 0.5) / grid
    prior = p ** (alpha - 1) * (1 - p) ** (alpha - 1)
    post = []
    for row in range(2):
        like = np.ones_like(p)
        for a, b in zip(x[:-1], x[1:]):
            if a == row:
                like = like * (p if b == 1 else 1 - p)
        post.append(prior * like)
    q = post[x[-1]]
    p1 = np.sum(q * p) / np.sum(q)  # P(y = 1 | x) = E[π(1 | x_L) | x]
    return np.array([1 - p1, p1])


def test_posterior_predictive_equals_brute_force_bayes():
    rng = np.random.default_rng(0)
    for s, alpha in ((3, 0.1), (2, 1.5)):
        for _ in range(5):
            x = rng.integers(0, s, size=7)
            tokens = jnp.asarray(x[None], jnp.int32)
            got = np.asarray(posterior_predictive(tokens, ngram_match((1,), tokens), s, alpha))[0]
            np.testing.assert_allclose(got, _brute_force_bigram_predictive(x, s, alpha), rtol=1e-5)
            if s == 2:
                np.testing.assert_allclose(got, _grid_bigram_predictive(x, alpha), rtol=1e-3)


def test_official_bigram_bayes_ignores_the_redrawn_query():
    """query="uniform": x_L is independent of π, so the exact predictive uses only the
    transitions inside x_1..x_{L−1} plus the target transition (x_L → y)."""

    def brute(x, s, alpha):
        def log_marginal(pairs):
            counts = np.zeros((s, s))
            for a, b in pairs:
                counts[a, b] += 1
            return sum(np.sum(gammaln(c + alpha)) - gammaln(c.sum() + s * alpha) for c in counts)

        inner = list(zip(x[:-2], x[1:-1]))
        logs = np.array([log_marginal(inner + [(x[-1], y)]) for y in range(s)])
        return np.exp(logs - np.logaddexp.reduce(logs))

    task = chen_bigram_task(vocab_size=3, seq_len=8, alpha=0.3)

    @jax.jit  # task.sample's body and the predictions in one compiled call
    def batch_and_bayes(key):
        batch = sample_batch(task, key, 16)
        return batch, baseline_predictions(task, batch)["bayes"]

    batch, got = batch_and_bayes(jax.random.key(2))
    got = np.asarray(got)
    for b, x in enumerate(np.asarray(batch.tokens_BxT)):
        np.testing.assert_allclose(got[b], brute(list(x), 3, 0.3), rtol=1e-5)


def test_tree_bayes_masks_roots_official_counts_them():
    # context graph: 0 root, 1 <- 0, 2 root, 3 <- 1; tokens x0..x3 then query
    from icl_jax import tree_from_dag_array

    g = tree_from_dag_array([-1, 0, -1, 1])
    tokens = jnp.array([[2, 1, 0, 2, 2]], jnp.int32)  # query 2; x_{T-2} = x3 = 2 = query
    np.testing.assert_array_equal(np.asarray(tree_match(g, tokens)), [[False, True, False, False]])
    # official: roots 0 and 2 read x3 (= query) and are counted
    np.testing.assert_array_equal(np.asarray(tree_match(g, tokens, official=True)), [[True, True, True, False]])
    tokens2 = tokens.at[0, 3].set(0)  # now x_{T-2} != query: official == fixed
    np.testing.assert_array_equal(np.asarray(tree_match(g, tokens2, official=True)), np.asarray(tree_match(g, tokens2)))


def test_dag_match_fig5():
    g = nichani_fig5_graph(6)  # node i >= 2: parents ((i-1)//2, i-1); target (2, 5)
    tokens = jnp.array([[0, 1, 1, 0, 1, 0]], jnp.int32)  # target context (x2, x5) = (1, 0)
    expected = [False, False] + [bool(tokens[0, (i - 1) // 2] == 1 and tokens[0, i - 1] == 0) for i in range(2, 6)]
    np.testing.assert_array_equal(np.asarray(dag_match(g, tokens))[0], expected)


def test_ngram_match_and_gih_closed_form():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(4, 30))
    tokens = jnp.asarray(x, jnp.int32)
    m = np.asarray(ngram_match((1, 2), tokens))
    L = x.shape[1]
    for b in range(4):
        for l in range(L):
            want = l >= 2 and x[b, l - 1] == x[b, L - 1] and x[b, l - 2] == x[b, L - 2]
            assert m[b, l] == want
    for a in (0.0, 0.7, 2.0, 25.0):
        got = np.asarray(gih_predictive(tokens, jnp.asarray(m), 3, a))
        w = np.exp(a * m)  # Σ_l e^{a m_l} e_{x_l} / Σ_l e^{a m_l}
        direct = np.stack([np.bincount(x[b], weights=w[b], minlength=3) / w[b].sum() for b in range(4)])
        np.testing.assert_allclose(got, direct, rtol=2e-5)
    hard = np.asarray(gih_predictive(tokens, jnp.asarray(m), 3, math.inf))
    for b in range(4):
        if m[b].any():
            np.testing.assert_allclose(hard[b], np.bincount(x[b][m[b]], minlength=3) / m[b].sum(), rtol=1e-6)
    none = np.asarray(gih_predictive(tokens, jnp.zeros_like(tokens, bool), 3, math.inf))
    np.testing.assert_allclose(none, np.stack([np.bincount(r, minlength=3) / L for r in x]), rtol=1e-6)


_TASKS = {"tree": tree_task("chain", vocab_size=5, seq_len=16), "ngram": NGramTask(3, 40, (1, 2))}


@pytest.fixture(scope="module")
def predictions():
    """Every baseline of each task on one batch (task.sample's body, key 3, 512 sequences),
    computed once per module in one compiled call instead of ~60 op-by-op dispatches."""
    cache = {}

    def get(name):
        if name not in cache:
            task = _TASKS[name]
            cache[name] = jax.jit(lambda key: baseline_predictions(task, sample_batch(task, key, 512)))(jax.random.key(3))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(_TASKS))
def test_every_baseline_is_a_distribution_and_bayes_beats_unigram(predictions, name):
    task = _TASKS[name]
    for baseline, p in predictions(name).items():
        np.testing.assert_allclose(np.asarray(p).sum(-1), 1.0, atol=1e-5, err_msg=baseline)
    # 16384 samples in chunks of 2048 (2048 x 5 x 5 and 2048 x 9 x 3 Dirichlet draws, small
    # programs, see above); same sample size and standard errors.
    est = estimate_baseline_losses(task, jax.random.key(4), 16384, chunk_size=2048)
    assert est["bayes"]["loss"] + 4 * est["bayes"]["se"] < est["unigram"]["loss"]
    assert est["oracle"]["loss"] < est["bayes"]["loss"]


def test_subset_enumeration_names(predictions):
    # the (1, 2) n-gram task of the test above, 512 sequences (was NGramTask(3, 20) with 4):
    # the same subsets are enumerated, finiteness is checked on more sequences, and the batch
    # and its predictions are shared with that test instead of compiling the sampler again
    preds = predictions("ngram")
    assert {"bayes", "unigram", "uniform", "oracle", "count_12", "count_1", "count_2", "count_123"} <= set(preds)
    assert len(list(itertools.filterfalse(lambda k: np.isfinite(np.asarray(preds[k])).all(), preds))) == 0
