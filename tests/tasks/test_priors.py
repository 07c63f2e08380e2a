"""Dirichlet sampler (moments, KS on the log scale) and the GTH stationary solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from icl_jax import ngram_window_stationary, sample_dirichlet, sample_log_gamma, stationary_distribution

# Every statistical test here compares a statistic with a known null distribution and
# rejects at p < 1e-6: a correct sampler fails with probability 1e-6 per assertion
# (the seeds are fixed, so the outcome is deterministic); each test also shows the same
# check rejecting a slightly wrong distribution, so the tolerance is not vacuous.
P_REJECT = 1e-6


@pytest.mark.parametrize("alpha", [0.1, 1.0, 2.5])
def test_dirichlet_moments(alpha):
    s, n = 10, 40000
    p = np.asarray(sample_dirichlet(jax.random.key(1), alpha, (n,), s), np.float64)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    # E[p_b] = 1/S, E[p_b^2] = (α+1)/(S(Sα+1)); z-scores with the sample std / √n
    for values, expected in ((p, 1 / s), (p**2, (alpha + 1) / (s * (s * alpha + 1)))):
        z = (values.mean(0) - expected) / (values.std(0) / np.sqrt(n))
        assert np.all(np.abs(z) < stats.norm.isf(P_REJECT / 2)), z


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0, 2.5])
def test_dirichlet_marginal_ks_on_log_scale(alpha):
    """Each coordinate is Beta(α, (S−1)α); compare log p (where α = 0.1 puts mass at
    1e-30 and below) with the exact CDF F(t) = BetaCDF(e^t)."""
    s, n = 5, 20000
    log_p = np.asarray(sample_dirichlet(jax.random.key(2), alpha, (n,), s, log=True))[:, 0].astype(np.float64)
    beta = stats.beta(alpha, (s - 1) * alpha)
    assert stats.kstest(log_p, lambda t: beta.cdf(np.exp(t))).pvalue > P_REJECT
    wrong = stats.beta(1.15 * alpha, (s - 1) * alpha)
    assert stats.kstest(log_p, lambda t: wrong.cdf(np.exp(t))).pvalue < P_REJECT


def test_gamma_branches_agree_where_both_apply():
    """The three samplers behind lax.switch, called directly: Liu–Martin–Syring and the
    boosted Marsaglia–Tsang at α = 0.12, the exponential and Marsaglia–Tsang at α = 1."""
    from icl_jax.tasks.priors import _log_gamma_boosted, _log_gamma_exponential, _log_gamma_lms

    n, f32 = 20000, jnp.float32
    lms = np.asarray(jax.jit(lambda k: _log_gamma_lms(k, jnp.float32(0.12), n, f32))(jax.random.key(3)))
    mt = np.asarray(jax.jit(lambda k: _log_gamma_boosted(k, jnp.float32(0.12), n, f32))(jax.random.key(4)))
    assert stats.ks_2samp(lms, mt).pvalue > P_REJECT
    assert stats.kstest(lms, lambda t: stats.gamma(0.12).cdf(np.exp(t))).pvalue > P_REJECT
    exp = np.asarray(jax.jit(lambda k: _log_gamma_exponential(k, jnp.float32(1.0), n, f32))(jax.random.key(5)))
    mt1 = np.asarray(jax.jit(lambda k: _log_gamma_boosted(k, jnp.float32(1.0), n, f32))(jax.random.key(6)))
    assert stats.ks_2samp(exp, mt1).pvalue > P_REJECT
    assert stats.kstest(np.exp(exp), stats.expon.cdf).pvalue > P_REJECT


def test_log_gamma_vmaps_over_alpha_like_single_calls():
    """A vmapped α (every switch branch runs, results selected) draws what single calls
    draw, on the re-draw path of every branch: bit for bit for α = 0.1
    (Liu–Martin–Syring) and α = 1 (exponential); within a few ulp of the operands on the
    Marsaglia–Tsang path (the batched program contracts the boost's multiply-add
    differently)."""
    alphas = jnp.array([0.1, 1.0, 0.3, 2.0])
    shape = (100_000,)
    draws = jax.vmap(lambda a: sample_log_gamma(jax.random.key(5), a, shape))(alphas)
    single_call = jax.jit(lambda a: sample_log_gamma(jax.random.key(5), a, shape))  # α traced, as in tasks
    for a, x in zip(np.asarray(alphas), np.asarray(draws)):
        single = np.asarray(single_call(a))
        if a < 0.15 or a == 1.0:
            np.testing.assert_array_equal(x, single)
        else:
            # a few ulp of the operands (|log G| up to ~20, ulp 2e-6), absolute since the
            # sum log G_{α+1} + log(U)/α can cancel to near 0
            np.testing.assert_allclose(x, single, rtol=0, atol=1e-5)
        assert stats.kstest(np.exp(x[:20000]).astype(np.float64), stats.gamma(a).cdf).pvalue > P_REJECT


def test_rejection_passes_are_exact_when_many_are_needed():
    """The re-draw passes on a sampler with known target: proposal U, accepted with
    probability U (a second uniform), so accepted values are Beta(2, 1) (CDF x²). At 50 %
    rejection with buffers of n/16 + slack proposals every draw needs ~16 passes: each pass
    hands the j-th rejected entry the j-th accepted buffer proposal, which must leave the
    values i.i.d. Beta(2, 1) (and not, e.g., favour early entries or early proposals)."""
    from icl_jax.tasks.priors import _rejection_sample

    def round_fn(key, m):
        u, w = jax.random.uniform(key, (2, m))
        return w < u, u

    n = 20000
    x = np.asarray(jax.jit(lambda k: _rejection_sample(k, round_fn, n, 16))(jax.random.key(7)), np.float64)
    assert x.shape == (n,) and np.all((x > 0) & (x < 1))
    assert stats.kstest(x, lambda t: t**2).pvalue > P_REJECT
    # the halves of the index range (filled in different passes) follow the same law
    assert stats.ks_2samp(x[: n // 2], x[n // 2:]).pvalue > P_REJECT
    assert stats.kstest(x, lambda t: t**2.2).pvalue < P_REJECT  # a slightly wrong law is rejected


def test_invalid_alpha():
    with pytest.raises(ValueError, match="alpha must be a finite scalar > 0"):
        sample_dirichlet(jax.random.key(0), 0.0, (2,), 3)
    out = jax.vmap(lambda a: sample_log_gamma(jax.random.key(0), a, (4,)))(jnp.array([jnp.nan, -1.0, 0.5]))
    assert np.all(np.isnan(np.asarray(out[:2]))) and np.all(np.isfinite(np.asarray(out[2])))


def _stationary_reference(p):
    """float64 repeated squaring of the lazy chain (P + I)/2: 2^80 steps, products and
    sums of non-negative numbers only, so tiny entries keep their relative accuracy."""
    m = (np.asarray(p, np.float64) + np.eye(p.shape[-1])) / 2
    for _ in range(80):
        m = m @ m
        m /= m.sum(-1, keepdims=True)
    return m[0]


def test_stationary_matches_power_iteration_on_near_reducible_chains():
    # small S and α = 0.1 give chains whose stationary laws span 30+ orders of magnitude;
    # keep the 200 most extreme of 20000 draws
    draws = np.asarray(sample_dirichlet(jax.random.key(6), 0.1, (20000, 4), 4))
    mins = np.asarray(stationary_distribution(jnp.asarray(draws))).min(-1)
    pi = draws[np.argsort(mins)[:200]]
    mu = np.asarray(stationary_distribution(jnp.asarray(pi)), np.float64)
    ref = np.stack([_stationary_reference(p) for p in pi])
    assert ref.min() < 1e-15  # the hard regime is really exercised
    rel = np.abs(mu - ref) / ref
    assert np.max(rel[ref > 1e-35]) < 1e-3, np.max(rel[ref > 1e-35])
    # μπ = μ to float32 accuracy
    np.testing.assert_allclose(np.einsum("bi,bij->bj", mu, pi), mu, atol=1e-6)


def test_stationary_two_state_closed_form():
    """μ = (b, a)/(a + b) for P = [[1−a, a], [b, 1−b]], here with a = 1e-30."""
    p = jnp.array([[1.0, 1e-30], [0.5, 0.5]], jnp.float32)
    mu = np.asarray(stationary_distribution(p), np.float64)
    np.testing.assert_allclose(mu, [1.0, 2e-30], rtol=1e-6)


def test_stationary_reducible_chains_stay_finite():
    """Exact zeros (float32 Dirichlet rows underflow at small α) make chains reducible;
    with transient states the mass must go to the closed class, never NaN."""
    from icl_jax.tasks.priors import _gth_masked

    transient = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    masked = jax.jit(lambda p: _gth_masked(p) / _gth_masked(p).sum(-1, keepdims=True))
    for solve in (stationary_distribution, masked):
        np.testing.assert_allclose(np.asarray(solve(transient)), [0, 0, 1], atol=1e-30)
        mu = np.asarray(solve(jnp.eye(4)))
        assert np.all(np.isfinite(mu)) and abs(mu.sum() - 1) < 1e-6 and mu.min() >= 0
    pi = sample_dirichlet(jax.random.key(9), 0.01, (20000, 10), 10)
    assert (np.asarray(pi) == 0).any()  # the hard case is exercised
    mu = np.asarray(stationary_distribution(pi))
    assert np.all(np.isfinite(mu))
    np.testing.assert_allclose(np.einsum("bi,bij->bj", mu, np.asarray(pi)), mu, atol=1e-5)


def test_window_stationary_law_is_invariant():
    """μ(x_{i−1}, x_{i−2}) of a 3-gram chain: Σ_{x_{i−2}} μ(a, c) π(b | a, c) = μ(b, a)."""
    d = 3
    pi = np.asarray(sample_dirichlet(jax.random.key(7), 0.5, (2, d * d), d), np.float64)
    mu = np.asarray(ngram_window_stationary(jnp.asarray(pi, jnp.float32), d, (1, 2)), np.float64)
    for b in range(2):
        kern = pi[b].reshape(d, d, d)  # [x_{i-1}, x_{i-2}, x_i]: most recent parent most significant
        nxt = np.einsum("ac,acb->ba", mu[b], kern)
        np.testing.assert_allclose(nxt, mu[b], atol=1e-6)
        assert abs(mu[b].sum() - 1) < 1e-6


def test_masked_and_unrolled_gth_agree():
    """Above 32 states the solver switches to the masked fori_loop: same answer."""
    from icl_jax.tasks.priors import _gth_masked, _gth_unrolled

    p = sample_dirichlet(jax.random.key(8), 0.3, (20, 40), 40)
    a, b = jax.jit(_gth_masked)(p), jax.jit(_gth_unrolled)(p)
    np.testing.assert_allclose(a / a.sum(-1, keepdims=True), b / b.sum(-1, keepdims=True), rtol=1e-4, atol=1e-12)
    mu = np.asarray(stationary_distribution(p))
    np.testing.assert_allclose(np.einsum("bi,bij->bj", mu, np.asarray(p)), mu, atol=1e-6)
