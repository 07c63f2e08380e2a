"""The peer tasks (docs/peer-tasks.md): samplers against slow references and their laws, Bayes
predictors against brute-force enumeration or quadrature on tiny cases, closed forms against
Monte Carlo, and clear errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from icl_jax.tasks.context_tree import ContextTreeTask, ctw_predict
from icl_jax.tasks.lags import LagMixtureTask
from icl_jax.tasks.priors import sample_dirichlet, sample_doubly_stochastic, stationary_distribution
from icl_jax.tasks.sampling import token_uniforms
from icl_jax.tasks.strategies import lag_strategy, ngram_strategy, uniform_strategy
from icl_jax.tasks.switching import SwitchingChainTask, binary_entropy
from icl_jax.tasks.tasks import NGramTask
from icl_jax.tasks.triggers import TriggerTask
from test_sampling import _Draw

Z = 5.0  # tolerance in standard errors for Monte Carlo checks at fixed seeds (two-sided p ≈ 6e-7)


def _gauss_beta(alpha: float, n: int = 64):
    """Gauss–Legendre nodes on (0, 1) and weights times the Beta(α, α) density (α >= 1: smooth)."""
    x, w = np.polynomial.legendre.leggauss(n)
    p = (x + 1) / 2
    dens = p ** (alpha - 1) * (1 - p) ** (alpha - 1) / special.beta(alpha, alpha)
    return p, w / 2 * dens


# ------------------------------------------------------------------ strategies (Edelman et al.)
def _slow_ngram(x, k, n, beta):
    out = np.full((len(x), k), 1.0 / k)
    m = n - 1
    for t in range(len(x)):
        if t < m - 1:
            continue
        ctx = tuple(x[t - m + 1: t + 1]) if m else ()
        counts = np.zeros(k)
        for s in range(m, t + 1):
            if tuple(x[s - m: s]) == ctx:
                counts[x[s]] += 1
        out[t] = (counts + beta) / (counts.sum() + k * beta)
    return out


def _slow_lag(x, k, lag, beta):
    out = np.full((len(x), k), 1.0 / k)
    for t in range(len(x)):
        if t + 1 < lag:
            continue
        ctx = x[t + 1 - lag]
        counts = np.zeros(k)
        for i in range(lag, t + 1):
            if x[i - lag] == ctx:
                counts[x[i]] += 1
        out[t] = (counts + beta) / (counts.sum() + k * beta)
    return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_strategy_matches_a_loop(n):
    x = np.random.default_rng(n).integers(0, 3, (4, 17))
    got = np.asarray(ngram_strategy(jnp.asarray(x), 3, n, beta=0.5))
    for b in range(4):
        np.testing.assert_allclose(got[b], _slow_ngram(list(x[b]), 3, n, 0.5), rtol=1e-6)


@pytest.mark.parametrize("lag", [1, 2, 4])
def test_lag_strategy_matches_a_loop_and_lag_one_is_the_bigram(lag):
    x = np.random.default_rng(lag).integers(0, 3, (4, 15))
    got = np.asarray(lag_strategy(jnp.asarray(x), 3, lag, beta=2.0))
    for b in range(4):
        np.testing.assert_allclose(got[b], _slow_lag(list(x[b]), 3, lag, 2.0), rtol=1e-6)
    if lag == 1:
        np.testing.assert_allclose(got, np.asarray(ngram_strategy(jnp.asarray(x), 3, 2, beta=2.0)), rtol=1e-6)
    assert np.asarray(uniform_strategy(jnp.asarray(x), 3)).shape == (4, 15, 3)


def test_bigram_posterior_predictive_is_bayes_for_dirichlet_rows_with_uniform_start():
    """k = 2, rows Beta(α, α), x_0 uniform: the add-α bigram equals the exact posterior predictive
    ∫ P(a | x_t) p(P | x_0..x_t) dP, computed by 2-D Gauss–Legendre quadrature."""
    alpha = 2.0
    p, w = _gauss_beta(alpha)
    p0, p1 = np.meshgrid(p, p, indexing="ij")  # P(1|0), P(1|1)
    weight = np.outer(w, w)
    for x in ([0, 1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0, 1, 0]):
        got = np.asarray(ngram_strategy(jnp.asarray([x]), 2, 2, beta=alpha))[0]
        lik = np.ones_like(p0)
        for t in range(len(x)):
            prob1 = np.where(x[t] == 0, p0, p1)  # P(x_{t+1} = 1 | x_t)
            want = np.sum(weight * lik * prob1) / np.sum(weight * lik)
            assert got[t, 1] == pytest.approx(want, abs=1e-7)
            if t + 1 < len(x):
                lik = lik * (prob1 if x[t + 1] == 1 else 1 - prob1)


def test_strategies_reject_bad_arguments():
    x = jnp.zeros((2, 5), jnp.int32)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        ngram_strategy(x, 3, 0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        ngram_strategy(x, 3, 2, beta=0.0)
    with pytest.raises(ValueError, match="vocab_size\\*\\*n = 59049 cells"):
        ngram_strategy(x, 9, 5)
    with pytest.raises(ValueError, match="lag must be an integer >= 1"):
        lag_strategy(x, 3, 0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        ngram_strategy(x, 3, 2, beta=np.float32(0.0))
    with pytest.raises(ValueError, match="tokens_BxT must be integer token ids in \\[0, 2\\]; got values in \\[0, 5\\]"):
        ngram_strategy(x.at[0, 1].set(5), 3, 2)
    with pytest.raises(ValueError, match="tokens_BxT must be integer token ids in \\[0, 1\\]; got values in \\[0, 5\\]"):
        ctw_predict(jnp.asarray([[0, 1, 5, 1]]), 2, 1)
    with pytest.raises(ValueError, match="depth must be an integer >= 1"):
        ctw_predict(x, 3, 0)


# ------------------------------------------------------------- doubly stochastic kernels
def test_doubly_stochastic_rows_and_columns_sum_to_one():
    m = np.asarray(sample_doubly_stochastic(jax.random.key(0), (200,), 4), np.float64)
    assert m.shape == (200, 4, 4) and m.min() >= 0
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(m.sum(-2), 1.0, atol=1e-6)
    assert np.std(m[:, 0, 0]) > 0.05  # random, not a fixed matrix
    one = np.asarray(sample_doubly_stochastic(jax.random.key(1), (50,), 3, num_permutations=1))
    assert set(np.unique(one)) == {0.0, 1.0}  # m = 1: permutation matrices
    with pytest.raises(ValueError, match="num_permutations must be an integer >= 1"):
        sample_doubly_stochastic(jax.random.key(0), (2,), 3, num_permutations=0)


def test_doubly_stochastic_at_k_2_is_uniform_on_the_polytope_with_a_uniform_start():
    """k = 2: the matrices are w·I + (1−w)·swap with w ~ U(0, 1) (no atoms at I or the swap), and
    a stationary start is uniform even for nearly reducible draws."""
    m = np.asarray(sample_doubly_stochastic(jax.random.key(4), (20000,), 2), np.float64)
    w = m[:, 0, 0]
    assert np.mean(w > 0.999) < 0.01 and np.mean(w < 0.001) < 0.01  # U(0,1): 0.1 % each
    assert abs(w.mean() - 0.5) < Z * math.sqrt(1 / 12 / w.size)
    task = NGramTask(2, 8, (1,), init="stationary", kernel="doubly_stochastic")
    x0 = np.asarray(task.sample_sequences(jax.random.key(5), 20000).tokens_BxT[:, 0])
    assert abs(x0.mean() - 0.5) < Z * math.sqrt(0.25 / x0.size)
    assert task.oracle_closed_form() is None and NGramTask(2, 8, (1,), query="uniform").oracle_closed_form() is not None


def test_doubly_stochastic_chain_has_a_uniform_start_and_no_unigram_information():
    """With a stationary start, x_0 is uniform under every doubly stochastic kernel; the sequences
    are sampled from the kernel's rows (labels are its rows)."""
    task = NGramTask(3, 20, (1,), init="stationary", alpha=1.0, kernel="doubly_stochastic")
    b = 30000
    key = jax.random.key(3)
    seqs = task.sample_sequences(key, b)
    freq = np.bincount(np.asarray(seqs.tokens_BxT[:, 0]), minlength=3) / b
    assert np.all(np.abs(freq - 1 / 3) < Z * math.sqrt(2 / 9 / b)), freq
    kernels = task.sample_kernels(jax.random.split(key)[0], b)
    pi = np.asarray(kernels["pi"])
    x = np.asarray(seqs.tokens_BxT)
    np.testing.assert_allclose(np.asarray(seqs.label_probs_BxTxS[:8]), pi[np.arange(8)[:, None], x[:8]], rtol=1e-6)
    with pytest.raises(ValueError, match="kernel='doubly_stochastic' is a k×k matrix"):
        NGramTask(3, 20, (1, 2), kernel="doubly_stochastic")
    with pytest.raises(ValueError, match="kernel must be one of"):
        NGramTask(3, 20, (1,), kernel="bistochastic")


def test_sequence_batch_extends_the_last_position_batch():
    """sample_sequences draws the same sequences as sample (same key): the last label and label
    law are the Batch's target."""
    task = NGramTask(3, 12, (1, 2), alpha=0.5)
    key = jax.random.key(5)
    batch, seqs = task.sample(key, 32), task.sample_sequences(key, 32)
    np.testing.assert_array_equal(seqs.tokens_BxT, batch.tokens_BxT)
    np.testing.assert_array_equal(seqs.labels_BxT[:, -1], batch.label_B)
    np.testing.assert_array_equal(seqs.labels_BxT[:, :-1], batch.tokens_BxT[:, 1:])
    np.testing.assert_allclose(seqs.label_probs_BxTxS[:, -1], batch.label_probs_BxS)


# ------------------------------------------------------------------ switching chain (Makkuva et al.)
def test_switching_chain_matches_a_step_by_step_reference():
    task = SwitchingChainTask(16, p=0.7, q=0.4)
    key = jax.random.key(2)
    seqs = task.sample_sequences(key, 64)
    u = np.asarray(token_uniforms(jax.random.split(key)[1], 17, 64))
    pmat = np.array([[0.3, 0.7], [0.4, 0.6]])
    pi = np.array([0.4, 0.7]) / 1.1
    for b in range(64):
        draw = _Draw(u[:, b])
        x = [draw(0, pi)]
        for i in range(1, 17):
            x.append(draw(i, pmat[x[-1]]))
        if draw.ambiguous:
            continue
        np.testing.assert_array_equal(np.asarray(seqs.tokens_BxT[b]), x[:-1])
        np.testing.assert_array_equal(np.asarray(seqs.labels_BxT[b]), x[1:])
        np.testing.assert_allclose(np.asarray(seqs.label_probs_BxTxS[b]), pmat[x[:-1]], rtol=1e-6)


@pytest.mark.parametrize("p,q", [(0.2, 0.3), (0.8, 0.6), (1.0, 1.0)])
def test_switching_chain_closed_forms_match_monte_carlo(p, q):
    """The kernel's loss is the entropy rate π_0 h(p) + π_1 h(q); the stationary unigram's loss is
    h(π_1); the start is stationary. Sequences are independent, so the per-sequence mean loss
    has a sample standard error."""
    task = SwitchingChainTask(64, p=p, q=q)
    seqs = task.sample_sequences(jax.random.key(7), 8192)
    x, y = np.asarray(seqs.tokens_BxT), np.asarray(seqs.labels_BxT)
    preds = task.predictors(seqs.tokens_BxT)
    for name, closed in (("kernel", task.entropy_rate()), ("unigram", task.unigram_loss())):
        nll = -np.log(np.take_along_axis(np.asarray(preds[name]), y[..., None], -1)[..., 0]).mean(1)
        se = nll.std() / math.sqrt(len(nll)) + 1e-7
        assert abs(nll.mean() - float(closed)) < Z * se, (name, nll.mean(), float(closed), se)
    pi1 = p / (p + q)
    assert abs(x[:, 0].mean() - pi1) < Z * math.sqrt(pi1 * (1 - pi1) / len(x)) + 1e-9
    h = float(binary_entropy(0.5))
    assert h == pytest.approx(math.log(2)) and float(binary_entropy(1.0)) == 0.0


def test_switching_chain_vmaps_over_p_and_q():
    tasks = [SwitchingChainTask(12, p=p, q=0.5) for p in (0.1, 0.9)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *tasks)
    key = jax.random.key(4)
    both = jax.vmap(lambda t: t.sample_sequences(key, 8).tokens_BxT)(stacked)
    for i, t in enumerate(tasks):
        np.testing.assert_array_equal(both[i], t.sample_sequences(key, 8).tokens_BxT)
    rates = jax.vmap(lambda t: t.entropy_rate())(stacked)
    np.testing.assert_allclose(rates, [float(t.entropy_rate()) for t in tasks], rtol=1e-6)
    swept = jax.vmap(lambda p: tasks[0].replace(p=p).sample_sequences(key, 8).tokens_BxT)(jnp.array([0.1, 0.9]))
    np.testing.assert_array_equal(swept, both)
    with pytest.raises(ValueError, match="p must be a switching probability"):
        SwitchingChainTask(12, p=jnp.array([0.5, 1.5]))


@pytest.mark.parametrize("kw,match", [({"p": 0.0}, "p must be a switching probability in \\(0, 1\\]"),
                                      ({"q": 1.5}, "q must be"), ({"q": float("nan")}, "q must be"),
                                      ({"seq_len": 0}, "seq_len must be an integer >= 1")])
def test_switching_chain_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SwitchingChainTask(**({"seq_len": 8} | kw))


# ------------------------------------------------------------------ triggers (Bietti et al.)
def test_trigger_sequences_copy_the_first_successor_and_bayes_is_exact_where_determined():
    task = TriggerTask(vocab_size=12, seq_len=48, num_triggers=3, bigram_seed=1)
    seqs = task.sample_sequences(jax.random.key(0), 512)
    x, y = np.asarray(seqs.tokens_BxT), np.asarray(seqs.labels_BxT)
    kinds = {k: np.asarray(v) for k, v in task.position_kinds(seqs.tokens_BxT).items()}
    triggers = set(task.triggers.tolist())
    for b in range(64):
        first = {}
        for t in range(48):
            if x[b, t] in triggers:
                first.setdefault(x[b, t], y[b, t])
                assert y[b, t] == first[x[b, t]]  # every occurrence is followed by the same output
                assert y[b, t] not in triggers
    assert kinds["induction"].mean() > 0.05 and kinds["bigram"].mean() > 0.5
    np.testing.assert_array_equal(kinds["induction"] | kinds["first_trigger"] | kinds["bigram"], True)
    bayes, law = np.asarray(task.bayes(seqs.tokens_BxT)), np.asarray(seqs.label_probs_BxTxS)
    known = kinds["induction"] | kinds["bigram"]
    np.testing.assert_allclose(bayes[known], law[known], atol=1e-6)
    np.testing.assert_allclose(bayes[kinds["first_trigger"]], np.broadcast_to(task.output_law, bayes[kinds["first_trigger"]].shape), rtol=1e-6)
    assert np.all(task.output_law[list(triggers)] == 0) and task.output_law.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(task.global_bigram.sum(-1), 1.0)
    np.testing.assert_allclose(task.unigram @ task.global_bigram, task.unigram, atol=1e-5)


def test_trigger_bayes_matches_enumeration_of_the_outputs():
    """N = 4 tokens, K = 1 trigger: the posterior predictive by enumerating the output o ∈
    non-triggers (weights: the output law times the likelihood of the prefix) equals bayes()."""
    task = TriggerTask(vocab_size=4, seq_len=10, num_triggers=1, bigram_seed=3, outputs="unigram")
    (q,) = task.triggers
    seqs = task.sample_sequences(jax.random.key(1), 16)
    bayes = np.asarray(task.bayes(seqs.tokens_BxT))
    pi_b, law = task.global_bigram, task.output_law
    for b in range(16):
        x = list(np.asarray(seqs.tokens_BxT[b]))
        for t in range(len(x)):
            num, den = np.zeros(4), 0.0
            for o in range(4):
                if law[o] == 0:
                    continue
                rows = pi_b.copy()
                rows[q] = np.eye(4)[o]
                lik = law[o] * np.prod([rows[x[i - 1], x[i]] for i in range(1, t + 1)])
                num += lik * rows[x[t]]
                den += lik
            np.testing.assert_allclose(bayes[b, t], num / den, atol=1e-6)


def test_trigger_outputs_follow_their_law():
    task = TriggerTask(vocab_size=8, seq_len=4, num_triggers=2, outputs="uniform")
    out = np.asarray(task.sample_kernels(jax.random.key(0), 40000)["outputs"]).ravel()
    freq = np.bincount(out, minlength=8) / out.size
    law = task.output_law
    se = np.sqrt(law * (1 - law) / out.size)
    assert np.all(np.abs(freq - law) <= Z * se + 1e-12), (freq, law)


@pytest.mark.parametrize("kw,match", [({"vocab_size": 2}, "vocab_size must be >= 3"),
                                      ({"num_triggers": 0}, "num_triggers must be an integer in \\[1, vocab_size − 1"),
                                      ({"outputs": "corpus"}, "outputs must be one of"),
                                      ({"bigram_alpha": -1.0}, "alpha must be")])
def test_trigger_task_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        TriggerTask(**({"vocab_size": 10, "seq_len": 8} | kw))


# ------------------------------------------------------------------ interleaved lags (D'Angelo et al.)
def test_lag_sequences_follow_their_lag_and_lags_are_uniform():
    task = LagMixtureTask(3, 24, (1, 2, 3), alpha=0.5)
    key = jax.random.key(9)
    k_kern, k_tok = jax.random.split(key)
    kernels = task.sample_kernels(k_kern, 2000)
    seqs = task.sequences_with_kernels(k_tok, kernels)
    lag = np.asarray(task.lags)[np.asarray(kernels["lag_index"])]
    pi, x = np.asarray(kernels["P"]), np.asarray(seqs.tokens_BxT)
    law = np.asarray(seqs.label_probs_BxTxS)
    for b in range(50):
        ell = lag[b]
        for t in range(ell - 1, 24):
            np.testing.assert_allclose(law[b, t], pi[b, x[b, t + 1 - ell]], rtol=1e-6)
    freq = np.bincount(np.asarray(kernels["lag_index"]), minlength=3) / 2000
    assert np.all(np.abs(freq - 1 / 3) < Z * math.sqrt(2 / 9 / 2000))
    np.testing.assert_array_equal(task.sample_sequences(key, 2000).tokens_BxT, seqs.tokens_BxT)
    other = task.sample_sequences(jax.random.key(10), 2000).tokens_BxT
    assert not np.array_equal(other, seqs.tokens_BxT)  # another key, other sequences


def test_lag_task_last_position_batch_matches_its_sequences():
    task = LagMixtureTask(3, 12, (1, 3), alpha=0.5)
    key = jax.random.key(6)
    batch, seqs = task.sample(key, 64), task.sample_sequences(key, 64)
    np.testing.assert_array_equal(seqs.tokens_BxT, batch.tokens_BxT)
    np.testing.assert_array_equal(seqs.labels_BxT[:, -1], batch.label_B)
    np.testing.assert_allclose(seqs.label_probs_BxTxS[:, -1], batch.label_probs_BxS)


def test_lag_bayes_matches_quadrature_over_the_kernel():
    """k = 2, lags {1, 2}, rows Beta(α, α), uniform start: P(x_{t+1} | x_0..x_t) by 2-D quadrature
    over the kernel and a sum over lags equals bayes()."""
    alpha = 2.0
    task = LagMixtureTask(2, 8, (1, 2), init="uniform", alpha=alpha)
    p, w = _gauss_beta(alpha)
    p0, p1 = np.meshgrid(p, p, indexing="ij")
    weight = np.outer(w, w)
    x_all = np.random.default_rng(0).integers(0, 2, (6, 8))
    bayes = np.asarray(task.bayes(jnp.asarray(x_all)))
    for b, x in enumerate(x_all):
        for t in range(8):
            num1, den = 0.0, 0.0
            for lag in (1, 2):
                lik = np.ones_like(p0) * 0.5 ** min(lag, t + 1)
                for i in range(lag, t + 1):
                    prob1 = np.where(x[i - lag] == 0, p0, p1)
                    lik = lik * (prob1 if x[i] == 1 else 1 - prob1)
                if t + 1 < lag:
                    nxt1 = np.full_like(p0, 0.5)
                else:
                    nxt1 = np.where(x[t + 1 - lag] == 0, p0, p1)
                num1 += np.sum(weight * lik * nxt1) / 2
                den += np.sum(weight * lik) / 2
            assert bayes[b, t, 1] == pytest.approx(num1 / den, abs=1e-6), (b, t)


def test_lag_posterior_concentrates_on_the_true_lag():
    task = LagMixtureTask(4, 96, (1, 2, 3), alpha=0.3)
    k_kern, k_tok = jax.random.split(jax.random.key(1))
    kernels = task.sample_kernels(k_kern, 256)
    seqs = task.sequences_with_kernels(k_tok, kernels)
    post = np.asarray(task.lag_posterior(seqs.tokens_BxT))[:, -1]
    hit = np.argmax(post, -1) == np.asarray(kernels["lag_index"])
    assert hit.mean() > 0.95, hit.mean()


@pytest.mark.parametrize("kw,match", [({"lags": ()}, "lags must be a non-empty tuple"),
                                      ({"lags": (1, 1)}, "distinct"), ({"lags": (0, 2)}, "integers >= 1"),
                                      ({"seq_len": 3}, "seq_len must be > max\\(lags\\) = 3"),
                                      ({"init": "zeros"}, "init must be one of"), ({"alpha": 0.0}, "alpha must be")])
def test_lag_task_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        LagMixtureTask(**({"vocab_size": 3, "seq_len": 10, "lags": (1, 2, 3)} | kw))


# ------------------------------------------------------------------ interleaved lags with one fixed kernel
def _stationary64(p):
    """μ with μᵀP = μᵀ, Σμ = 1, in float64 (the eigenvector of Pᵀ at eigenvalue 1)."""
    w, v = np.linalg.eig(np.asarray(p, np.float64).T)
    mu = np.real(v[:, np.argmin(np.abs(w - 1))])
    return mu / mu.sum()


def _fixed_lag_enumeration(p, first, lags, t_len):
    """The fixed-kernel task's law by brute force, float64: every full sequence y = x_0..x_T
    (k^(T+1) of them) with its probability under each lag, Π_{i<ℓ} first(y_i) Π_{i>=ℓ} P(y_i |
    y_{i−ℓ}); for every input x_0..x_{T−1} and position t, P(x_{t+1} = a | x_0..x_t) and
    P(ℓ | x_0..x_t) as sums over the full sequences that share the prefix x_0..x_t.

    Returns (inputs ``[k^T, T]``, predictive ``[k^T, T, k]``, posterior ``[k^T, T, L]``)."""
    k = len(first)
    full = np.array(np.meshgrid(*[np.arange(k)] * (t_len + 1), indexing="ij")).reshape(t_len + 1, -1).T
    joint = np.ones((len(full), len(lags)))
    for j, lag in enumerate(lags):
        for i in range(t_len + 1):
            joint[:, j] *= first[full[:, i]] if i < lag else p[full[:, i - lag], full[:, i]]
    joint /= len(lags)  # uniform prior over lags
    inputs = full[full[:, -1] == 0][:, :-1]
    pred = np.zeros((len(inputs), t_len, k))
    post = np.zeros((len(inputs), t_len, len(lags)))
    for b, x in enumerate(inputs):
        for t in range(t_len):
            share = np.all(full[:, : t + 1] == x[: t + 1], axis=1)
            den = joint[share].sum()
            post[b, t] = joint[share].sum(0) / den
            for a in range(k):
                pred[b, t, a] = joint[share & (full[:, t + 1] == a)].sum() / den
    return inputs, pred, post


@pytest.mark.parametrize("lags", [(1, 2), (1, 3)])
@pytest.mark.parametrize("init", ["stationary", "uniform"])
def test_fixed_kernel_bayes_matches_enumeration_of_every_sequence(init, lags):
    """k = 2, T = 5, P known: bayes() and lag_posterior() equal the conditionals of the exact
    law of the full sequences x_0..x_T, mixed over the lags (float64 enumeration)."""
    t_len = 5
    task = LagMixtureTask(2, t_len, lags, init=init, alpha=1.0, kernel="fixed", kernel_seed=4)
    p = np.asarray(task.fixed_kernel(), np.float64)
    assert abs(p[0, 1] - p[1, 1]) > 0.25  # rows far apart: the lags predict differently
    first = _stationary64(p) if init == "stationary" else np.full(2, 0.5)
    inputs, want_pred, want_post = _fixed_lag_enumeration(p, first, lags, t_len)
    assert np.ptp(want_post[:, -1, 0]) > 0.5  # the prefixes move the posterior over lags
    got_pred = np.asarray(task.bayes(jnp.asarray(inputs)), np.float64)
    got_post = np.asarray(task.lag_posterior(jnp.asarray(inputs)), np.float64)
    # float32 against float64: every quantity is a ratio of products of <= T + 1 float32 factors
    # in [min P, 1] (each rounded by <= ε32/2 relative, P itself exact), so its relative error is
    # below (T + 2)·ε32 to first order; we allow twice that, absolute, on probabilities <= 1
    tol = 2 * (t_len + 2) * np.finfo(np.float32).eps
    np.testing.assert_allclose(got_pred, want_pred, rtol=0, atol=tol)
    np.testing.assert_allclose(got_post, want_post, rtol=0, atol=tol)
    # the known-kernel predictives: P[x_{t+1−ℓ}] from t = ℓ − 1 on, the initial law before
    per_lag = np.asarray(task.lag_predictives(jnp.asarray(inputs)))
    for j, lag in enumerate(lags):
        for t in range(t_len):
            want = p[inputs[:, t + 1 - lag]] if t + 1 >= lag else np.broadcast_to(first, (len(inputs), 2))
            np.testing.assert_allclose(per_lag[:, t, j], want, rtol=0, atol=tol)


def test_fixed_kernel_is_drawn_from_kernel_seed_and_shared_by_every_sequence():
    """Every sequence of every batch is drawn from the one documented kernel; the lags are still
    drawn per sequence (the same lags as kernel="per_sequence" for the same key)."""
    k, t_len, n = 3, 24, 2000
    task = LagMixtureTask(k, t_len, (1, 2, 3), alpha=1.0, kernel="fixed", kernel_seed=11)
    p = np.asarray(task.fixed_kernel())
    np.testing.assert_array_equal(p, sample_dirichlet(jax.random.key(11), 1.0, (k,), k))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    assert not np.allclose(p, task.replace(kernel_seed=12).fixed_kernel())  # the seed picks the kernel
    per_sequence = task.replace(kernel="per_sequence")
    first = np.asarray(task.initial_law(jnp.asarray(p)))
    np.testing.assert_allclose(first @ p, first, atol=1e-6)  # stationary
    counts = []
    for key in (jax.random.key(20), jax.random.key(21)):
        k_kern, _ = jax.random.split(key)  # the halves sample_sequences uses
        kernels = task.sample_kernels(k_kern, n)
        assert kernels["P"].shape == (n, k, k)
        np.testing.assert_array_equal(kernels["P"], np.broadcast_to(p, (n, k, k)))
        lag_index = np.asarray(kernels["lag_index"])
        np.testing.assert_array_equal(lag_index, per_sequence.sample_kernels(k_kern, n)["lag_index"])
        seqs = task.sample_sequences(key, n)
        x = np.concatenate([np.asarray(seqs.tokens_BxT), np.asarray(seqs.labels_BxT)[:, -1:]], axis=1)
        law = np.asarray(seqs.label_probs_BxTxS)
        ell = np.asarray(task.lags)[lag_index]
        # the law of x_{t+1}: P[x_{t+1−ℓ}] at the true lag, the initial law before
        ctx = np.where(np.arange(t_len)[None] >= ell[:, None] - 1,
                       x[np.arange(n)[:, None], np.maximum(np.arange(t_len)[None] + 1 - ell[:, None], 0)], -1)
        want = np.where((ctx >= 0)[..., None], p[np.maximum(ctx, 0)], first)
        np.testing.assert_allclose(law, want, rtol=1e-6)
        # the transitions x_{i−ℓ} → x_i at each sequence's true lag, pooled over the batch
        c = np.zeros((k, k))
        for lag in task.lags:
            rows = x[ell == lag]
            np.add.at(c, (rows[:, :-lag].ravel(), rows[:, lag:].ravel()), 1)
        counts.append(c)
    for c in counts:
        # given the number N_a of transitions out of a, the successive draws from row a are i.i.d.
        # P[a] (each transition's law is P[a] whatever came before), so each frequency has
        # standard error sqrt(P(1 − P) / N_a); we allow Z of them
        n_a = c.sum(1, keepdims=True)
        se = np.sqrt(p * (1 - p) / n_a)
        assert np.all(np.abs(c / n_a - p) < Z * se), np.abs(c / n_a - p) / se
        # and the check has power: the pooled frequencies of per-sequence kernels would be near the
        # prior mean 1/k, which this P is many standard errors away from
        assert np.max(np.abs(p - 1 / k) / se) > 4 * Z


def test_lag_task_default_kernel_is_per_sequence_as_before():
    """``LagMixtureTask(3, 10)`` keeps the per-sequence kernels: a step-by-step reference of that
    path (P ~ Dirichlet(α) rows per sequence from the kernel key's first half, the lag index from
    its second, inverse-CDF draws from the token uniforms) gives its tokens and soft labels."""
    task = LagMixtureTask(3, 10)
    assert (task.kernel, task.kernel_seed) == ("per_sequence", 0)
    assert task == LagMixtureTask(3, 10, kernel="per_sequence")
    with pytest.raises(ValueError, match="kernel='fixed'"):
        task.fixed_kernel()
    key, n = jax.random.key(5), 64
    k_kern, k_tok = jax.random.split(key)
    k_pi, k_lag = jax.random.split(k_kern)
    pi = np.asarray(sample_dirichlet(k_pi, 1.0, (n, 3), 3))
    lag_index = np.asarray(jax.random.randint(k_lag, (n,), 0, 3))
    mu = np.asarray(stationary_distribution(jnp.asarray(pi)))
    u = np.asarray(token_uniforms(k_tok, 11, n))
    seqs = task.sample_sequences(key, n)
    tokens, law = np.asarray(seqs.tokens_BxT), np.asarray(seqs.label_probs_BxTxS)
    assert not np.allclose(pi[0], pi[1])  # a kernel per sequence
    checked = 0
    for b in range(n):
        lag, draw, x, rows = task.lags[lag_index[b]], _Draw(u[:, b]), [], []
        for i in range(11):
            rows.append(mu[b] if i < lag else pi[b, x[i - lag]])
            x.append(draw(i, rows[-1]))
        if draw.ambiguous:
            continue
        checked += 1
        np.testing.assert_array_equal(tokens[b], x[:-1])
        np.testing.assert_array_equal(np.asarray(seqs.labels_BxT)[b], x[1:])
        np.testing.assert_allclose(law[b], np.stack(rows[1:]), rtol=1e-6)
    assert checked > n // 2
    # and its Bayes predictor is still the mixture of the Dirichlet posterior predictives
    post = np.asarray(task.lag_posterior(seqs.tokens_BxT))
    preds = np.stack([np.asarray(lag_strategy(seqs.tokens_BxT, 3, lag, 1.0)) for lag in task.lags], axis=-2)
    np.testing.assert_allclose(np.asarray(task.bayes(seqs.tokens_BxT)), np.sum(post[..., None] * preds, -2),
                               rtol=1e-6)


@pytest.mark.parametrize("kw,match", [({"kernel": "shared"}, r"kernel must be one of \('per_sequence', 'fixed'\)"),
                                      ({"kernel": None}, "kernel must be one of"),
                                      ({"kernel_seed": -1}, r"kernel_seed must be an integer in \[0, 2\*\*32"),
                                      ({"kernel_seed": 2**32}, "kernel_seed must be an integer"),
                                      ({"kernel_seed": 1.0}, "kernel_seed must be an integer"),
                                      ({"kernel_seed": True}, "kernel_seed must be an integer"),
                                      ({"kernel_seed": "0"}, "kernel_seed must be an integer")])
def test_lag_task_rejects_bad_kernel_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        LagMixtureTask(**({"vocab_size": 3, "seq_len": 10, "kernel": "fixed"} | kw))


# ------------------------------------------------------------------ variable-order chains (Zhou et al.)
def _kt_log_marginal(counts):
    """log ∫ Π θ_a^{n_a} Dirichlet(θ; ½) dθ (the KT estimator's block probability)."""
    counts = np.asarray(counts, np.float64)
    k = len(counts)
    return (special.gammaln(counts + 0.5).sum() - k * special.gammaln(0.5) + special.gammaln(k / 2)
            - special.gammaln(counts.sum() + k / 2))


def _binary_trees(depth):
    """Every binary context tree of depth <= D with its CTW prior weight: (leaves, weight);
    a leaf is a tuple of the most recent tokens (x_{t}, x_{t−1}, ...)."""
    def grow(prefix, d):
        if d == depth:
            yield [prefix], 1.0
            return
        yield [prefix], 0.5
        for left, wl in grow(prefix + (0,), d + 1):
            for right, wr in grow(prefix + (1,), d + 1):
                yield left + right, 0.5 * wl * wr
    return list(grow((), 0))


def test_ctw_matches_enumeration_of_trees_and_kt_marginals():
    """Binary, D = 2 (five trees): the posterior predictive from the sum over trees of
    prior × Π_leaves KT marginal equals ctw_predict at every position."""
    depth, t_len = 2, 9
    trees = _binary_trees(depth)
    assert len(trees) == 5 and sum(w for _, w in trees) == pytest.approx(1.0)
    x_all = np.random.default_rng(4).integers(0, 2, (5, t_len))
    got = np.asarray(ctw_predict(jnp.asarray(x_all), 2, depth))

    def log_ml(x):  # the sequence from position D on, each symbol in its leaf
        total = []
        for leaves, w in trees:
            counts = {leaf: np.zeros(2) for leaf in leaves}
            for i in range(depth, len(x)):
                recent = tuple(x[i - 1 - j] for j in range(depth))
                leaf = next(lf for lf in leaves if recent[: len(lf)] == lf)
                counts[leaf][x[i]] += 1
            total.append(math.log(w) + sum(_kt_log_marginal(c) for c in counts.values()))
        return special.logsumexp(total)

    for b, x in enumerate(x_all):
        for t in range(t_len):
            if t + 1 < depth:
                np.testing.assert_allclose(got[b, t], 0.5)
                continue
            base = log_ml(list(x[: t + 1]))
            want = [math.exp(log_ml(list(x[: t + 1]) + [a]) - base) for a in (0, 1)]
            np.testing.assert_allclose(got[b, t], want, atol=2e-5)


def test_context_tree_sampler_follows_the_ctw_prior():
    """D = 1, binary: the root is a leaf (both contexts share one θ) with probability ½; labels
    are the leaf law of their context; a deeper tree's contexts map to leaves on their path."""
    task = ContextTreeTask(2, 1, 16)
    b = 8000
    k_kern, k_tok = jax.random.split(jax.random.key(0))
    kernels = task.sample_kernels(k_kern, b)
    rows = np.asarray(task.row_table(kernels))[:, 1:]
    shared = np.all(rows[:, 0] == rows[:, 1], axis=-1).mean()
    assert abs(shared - 0.5) < Z * math.sqrt(0.25 / b)
    seqs = task.sequences_with_kernels(k_tok, kernels)
    x, law = np.asarray(seqs.tokens_BxT[:32]), np.asarray(seqs.label_probs_BxTxS[:32])
    np.testing.assert_allclose(law, rows[np.arange(32)[:, None], x], rtol=1e-6)
    # depth 2, ternary: every label law is θ of the shallowest leaf on the path x_t, x_{t−1}
    # (found by a loop over the node numbering: depth d, code Σ_j 3^j x_{t−j}, j < d)
    deep = ContextTreeTask(3, 2, 16)
    k_kern, k_tok = jax.random.split(jax.random.key(1))
    kern = deep.sample_kernels(k_kern, 6)
    seqs = deep.sequences_with_kernels(k_tok, kern)
    leaf, theta = np.asarray(kern["leaf"]), np.asarray(kern["theta"])
    x, law = np.asarray(seqs.tokens_BxT), np.asarray(seqs.label_probs_BxTxS)
    for b in range(6):
        for t in range(1, 16):
            for d in range(3):
                node = (3**d - 1) // 2 + sum(3**j * x[b, t - j] for j in range(d))
                if leaf[b, node]:
                    break
            np.testing.assert_allclose(law[b, t], theta[b, node], rtol=1e-6)


def test_ctw_is_better_than_a_fixed_order_on_its_own_source():
    """CTW is Bayes: on sequences of its prior it has a lower loss than the order-D in-context
    estimator with KT smoothing (and both approach the true leaf laws)."""
    task = ContextTreeTask(2, 3, 64)
    seqs = task.sample_sequences(jax.random.key(2), 2048)
    y = np.asarray(seqs.labels_BxT)[:, 3:]
    ctw = np.asarray(task.bayes(seqs.tokens_BxT))[:, 3:]
    fixed = np.asarray(ngram_strategy(seqs.tokens_BxT, 2, 4, beta=0.5))[:, 3:]
    nll = {name: -np.log(np.take_along_axis(p, y[..., None], -1)[..., 0]).mean(1) for name, p in (("ctw", ctw), ("fixed", fixed))}
    diff = nll["fixed"] - nll["ctw"]
    assert diff.mean() > Z * diff.std() / math.sqrt(len(diff)), (diff.mean(), diff.std())


@pytest.mark.parametrize("kw,match", [({"depth": 0}, "depth must be an integer >= 1"),
                                      ({"seq_len": 3}, "seq_len must be > depth = 3"),
                                      ({"vocab_size": 4, "depth": 8}, "at most 16384 are supported")])
def test_context_tree_task_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ContextTreeTask(**({"vocab_size": 2, "depth": 3, "seq_len": 16} | kw))
