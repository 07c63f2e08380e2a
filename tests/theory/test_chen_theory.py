"""Chen et al. theory (docs/chen-theory.md): exact window laws and χ² selection vs brute-force
enumeration, the I_χ² tie / Ĩ_χ² size penalty, S* = {1, 2}, the stage-I first-order gradient vs autodiff,
the replicator solution vs gradient descent, and ℓ_∞(a) (all in float64).

Kernels and sequences come from numpy (independent exact samplers, no compile)."""

import functools
import itertools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax.models.induction import InductionModel
from icl_jax.tasks.sampling import Batch
from icl_jax.theory import chen as C
from icl_jax.theory.chi2 import chi2_mutual_information, weighted_chi2_mutual_information

D3_SUBSETS = ((), (3,), (2,), (2, 3), (1,), (1, 3), (1, 2), (1, 2, 3))


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _kernels(seed, alpha, draws, d=3, rows=9):
    return np.random.default_rng(seed).dirichlet(np.full(d, alpha), size=(draws, rows))


def ngram_batch(rng, pis, d, seq_len, offsets=(1, 2)):
    """numpy n-gram sampler (one π per sequence): first K tokens uniform (official), then
    x_i ~ π(·|parents); inputs x_1..x_L, hard label x_{L+1}, soft label π(·|its parents)."""
    b, k = pis.shape[0], max(offsets)
    x = np.zeros((b, seq_len + 1), np.int32)
    x[:, :k] = rng.integers(0, d, (b, k))
    rows = np.arange(b)
    radix = d ** np.arange(len(offsets) - 1, -1, -1)
    cdf = np.cumsum(pis, axis=-1)

    def row(i):
        return sum(x[:, i - o] * w for o, w in zip(offsets, radix))

    for i in range(k, seq_len + 1):
        x[:, i] = np.minimum((rng.random(b)[:, None] > cdf[rows, row(i)]).sum(1), d - 1)
    return Batch(jnp.asarray(x[:, :seq_len]), jnp.asarray(pis[rows, row(seq_len)]), jnp.asarray(x[:, seq_len]))


# ----------------------------------------------------------------- brute-force reference
def _exact_stationary(p_NxN):
    """μQ = 0, Σμ = 1 with the generator Q = P − I, Q_ii = −Σ_{j≠i} P_ij, by Gauss–Jordan
    elimination in exact rationals. α = 0.1 chains are nearly reducible, so μ is relatively
    well conditioned only w.r.t. the off-diagonal entries: a float64 solve, or using the
    rounded diagonal P_ii − 1, would change tiny entries of μ in their 7th digit."""
    n = p_NxN.shape[0]
    off = [[Fraction(float(p_NxN[i, j])) if i != j else Fraction(0) for j in range(n)] for i in range(n)]
    gen = [[off[i][j] if i != j else -sum(off[i]) for j in range(n)] for i in range(n)]
    rows = [[gen[j][i] for j in range(n)] + [Fraction(0)] for i in range(n - 1)]
    rows.append([Fraction(1)] * n + [Fraction(1)])
    for col in range(n):
        piv = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[piv] = rows[piv], rows[col]
        inv = 1 / rows[col][col]
        rows[col] = [v * inv for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [v - f * w for v, w in zip(rows[r], rows[col])]
    return np.array([float(r[n]) for r in rows])


def brute_force(pi_RxS, d, offsets, subsets):
    """Plain-python enumeration: stationary law of the parents' window by an exact rational
    solve, every window (x_i, …, x_{i−W}) by the chain rule, then Ĩ, I and H(X_0|Z_S) by
    their definitions (docs/chen-theory.md#modified-chi-square-mutual-information)."""
    k = max(offsets)
    w = max([k] + [max(s) for s in subsets if s])
    states = list(itertools.product(range(d), repeat=k))  # (x_{j-1}, ..., x_{j-K})
    index = {s: i for i, s in enumerate(states)}

    def row(ctx):  # ctx[o] = x_{-o}; most recent parent most significant
        return sum(ctx[o] * d ** (len(offsets) - 1 - q) for q, o in enumerate(offsets))

    p = np.zeros((len(states), len(states)))
    for s in states:
        for x in range(d):
            p[index[s], index[(x,) + s[:-1]]] += pi_RxS[row({o: s[o - 1] for o in offsets}), x]
    mu = _exact_stationary(p)
    full = {}
    for win in itertools.product(range(d), repeat=w + 1):  # win[m] = x_{i-m}
        prob = mu[index[win[w - k + 1 :]]]
        for m in range(w - k, -1, -1):
            prob *= pi_RxS[row({o: win[m + o] for o in offsets}), win[m]]
        full[win] = prob
    out = []
    for sub in subsets:
        joint = {}
        for win, prob in full.items():
            key = (win[0], tuple(win[s] for s in sub))
            joint[key] = joint.get(key, 0.0) + prob
        mu_e, mu_z = {}, {}
        for (e, z), v in joint.items():
            mu_e[e] = mu_e.get(e, 0.0) + v
            mu_z[z] = mu_z.get(z, 0.0) + v
        mod = std = ent = 0.0
        for z, pz in mu_z.items():
            div = sum((joint[(e, z)] / pz) ** 2 / mu_e[e] for e in range(d)) - 1.0
            mod += pz**2 * div
            std += pz * div
            ent -= sum(joint[(e, z)] * np.log(joint[(e, z)] / pz) for e in range(d) if joint[(e, z)] > 0)
        out.append((mod, std, ent))
    return full, np.array(out)


@pytest.fixture(scope="module")
def prior_d3():
    """4096 kernels of the default configuration (d = 3, parents (1, 2), α = 0.1) and the
    exact per-kernel statistics of every subset with H = 3, D = 3."""
    kernels = _kernels(0, 0.1, 4096)
    with jax.enable_x64(True):
        per = C.subset_information(kernels, 3, (1, 2), D3_SUBSETS)
        return kernels, {k: np.asarray(v) for k, v in per.items()}


def test_weighted_chi2_definitions():
    p = np.random.default_rng(2).dirichlet(np.ones(12)).reshape(3, 4)
    p[:, 2] = 0.0  # a zero z-marginal: no NaN
    p /= p.sum()
    pe, pz = p.sum(1), p.sum(0)
    nz = pz > 0
    div = ((p[:, nz] / pz[nz]) ** 2 / pe[:, None]).sum(0) - 1
    weighted = jax.jit(weighted_chi2_mutual_information, static_argnums=1)  # one program per power
    for power in (1, 2, 1.5):
        assert float(weighted(p, power)) == pytest.approx(float((pz[nz] ** power * div).sum()), rel=1e-12)
    assert float(weighted(p, 1)) == pytest.approx(float(jax.jit(chi2_mutual_information)(p)), rel=1e-12)
    with pytest.raises(ValueError, match="power must be a finite number > 0"):
        weighted_chi2_mutual_information(jnp.asarray(p), 0)


def test_exact_laws_match_brute_force(prior_d3):
    """Window law and Ĩ, I, H(X_0|Z) per fixed π vs enumeration: the default task, and
    d = 2 with non-contiguous parents (1, 3) and heads up to offset 4 (window extended by π
    past the parents, offset 2 a non-parent in between)."""
    kernels, per = prior_d3
    window = np.asarray(C.window_joint_law(kernels, 3, (1, 2), 3))
    for b in range(3):
        full, ref = brute_force(kernels[b], 3, (1, 2), D3_SUBSETS)
        np.testing.assert_allclose([window[(b,) + w] for w in full], list(full.values()), rtol=1e-9, atol=1e-30)
        got = np.stack([per["modified_chi2"][b], per["chi2"][b], per["conditional_entropy"][b]], axis=1)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    subsets = C.chen_subsets(4, 3)
    pis = _kernels(1, 0.5, 2, d=2, rows=4)
    per2 = C.subset_information(pis, 2, (1, 3), subsets)
    for b in range(2):
        _, ref = brute_force(pis[b], 2, (1, 3), subsets)
        got = np.stack([np.asarray(per2[k][b]) for k in ("modified_chi2", "chi2", "conditional_entropy")], axis=1)
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    joint = C.subset_joint_law(C.window_joint_law(pis, 2, (1, 3), 4), (2, 4))
    assert joint.shape == (2, 2, 4) and np.allclose(np.asarray(joint).sum((1, 2)), 1.0, atol=1e-13)


def test_non_parent_offset_tie_and_size_penalty(prior_d3):
    """Once all parents are in S, adding offset 3 leaves I_χ² unchanged (per π) and lowers
    Ĩ_χ² strictly (docs/chen-theory.md#size-penalty-and-the-tie)."""
    _, per = prior_d3
    i12, i123 = D3_SUBSETS.index((1, 2)), D3_SUBSETS.index((1, 2, 3))
    np.testing.assert_allclose(per["chi2"][:, i123], per["chi2"][:, i12], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(per["conditional_entropy"][:, i123], per["conditional_entropy"][:, i12], rtol=1e-9, atol=1e-12)
    mod12, mod123 = per["modified_chi2"][:, i12], per["modified_chi2"][:, i123]
    assert np.all(mod123 <= mod12)
    # strictly, except where x_i is determined (a point-mass stationary law: both are 0)
    informative = mod12 > 1e-12
    assert informative.mean() > 0.99 and np.all(mod123[informative] < mod12[informative])
    # a single parent: adding the other parent raises both
    i1 = D3_SUBSETS.index((1,))
    assert np.all(per["chi2"][:, i12] >= per["chi2"][:, i1] - 1e-12)


def test_selected_set_default_config(prior_d3):
    """Expected (docs/chen-theory.md#values-in-the-default-configuration): S* = {1, 2} for d = 3,
    parents {1, 2}, H = 3, D = 2, α = 0.1 (and D = 3, where only Ĩ breaks the I_χ² tie with
    {1, 2, 3}); also at α = 1."""
    kernels, _ = prior_d3
    mc = C.selection_monte_carlo(3, (1, 2), 3, 2, 0.1, kernels=kernels)
    assert mc["subsets"] == D3_SUBSETS[:-1] and mc["labels"][-1] == "110"
    assert mc["selected"] == (1, 2) and mc["gap"] > 5 * mc["gap_se"]
    assert mc["modified_chi2"][0] == 0.0 and mc["chi2"][0] == 0.0
    assert np.all(mc["modified_chi2_se"][1:] > 0) and np.all(mc["modified_chi2_se"] < 0.01)
    assert mc["win_fraction"].sum() == pytest.approx(1.0) and mc["win_fraction"][-1] == mc["win_fraction"].max()
    mc3 = C.selection_monte_carlo(3, (1, 2), 3, 3, 0.1, kernels=kernels)
    assert mc3["selected"] == (1, 2) and mc3["chi2"][-1] == pytest.approx(mc3["chi2"][-2], rel=1e-12)
    assert mc3["modified_chi2"][-1] < mc3["modified_chi2"][-2] - 5 * mc3["modified_chi2_se"][-1]
    np.testing.assert_allclose(mc3["modified_chi2"][:-1], mc["modified_chi2"], rtol=1e-12)
    mc_a1 = C.selection_monte_carlo(3, (1, 2), 3, 2, 1.0, kernels=_kernels(1, 1.0, 4096))
    assert mc_a1["selected"] == (1, 2) and mc_a1["gap"] > 5 * mc_a1["gap_se"]


def test_asymptotic_loss_decreases_to_conditional_entropy(prior_d3):
    """ℓ_∞(a) (docs/chen-theory.md#stage-iii-classifier-scale): H(X_0) at a = 0, strictly
    decreasing, → E_π H(X_0 | X_{−S})."""
    kernels, per = prior_d3
    grid = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, np.inf]
    out = C.asymptotic_loss_monte_carlo(3, (1, 2), (1, 2), grid, kernels=kernels)
    loss = out["loss"]
    assert np.all(np.diff(loss[:-2]) < 0)  # strictly, while e^{-a} is above rounding
    assert np.all(np.diff(loss) <= 1e-15)
    assert loss[0] == pytest.approx(per["conditional_entropy"][:, 0].mean(), rel=1e-10)  # H(X_0)
    assert out["limit"] == pytest.approx(per["conditional_entropy"][:, D3_SUBSETS.index((1, 2))].mean(), rel=1e-10)
    assert loss[-1] == pytest.approx(out["limit"], rel=1e-12)
    assert 0 < loss[-3] - out["limit"] < 1e-6  # a = 16: O(e^{-a}) away
    assert np.all(out["loss_se"] > 0)
    # per π as well, and for a subset that misses a parent the limit is higher
    joint = C.subset_joint_law(C.window_joint_law(kernels, 3, (1, 2), 3), (1,))
    per_pi = np.asarray(C.asymptotic_loss(joint, jnp.asarray(grid)))
    assert np.all(np.diff(per_pi, axis=1) <= 1e-12)
    assert per_pi[:, -1].mean() > out["limit"]


# ---------------------------------------------------------------- stage I (model batch)
@pytest.fixture(scope="module")
def stage_one():
    """A batch of 256 sequences (d = 3, L = 50, parents (1, 2), α = 0.1) and the paper-window
    model at the official init (w_+ = 3, w_− = 0.1, c_S = 0.01)."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        batch = ngram_batch(rng, _kernels(2, 0.1, 256), 3, 50)
        return batch, InductionModel(3, 3, 2)


@functools.partial(jax.jit, static_argnames=("model",))
def _grad_c(c, params, batch, model):
    """``jax.grad`` of the model's default loss (prob_ce, hard labels, ε = 1e-3) w.r.t. C."""
    return jax.grad(lambda c: model.loss({**params, "C": c}, batch))(c)


def _rel(x, ref):
    return float(jnp.linalg.norm(x - ref) / jnp.linalg.norm(ref))


def test_first_order_c_gradient_error_halves_with_a(stage_one):
    """∂ℓ/∂c ≈ −a(2c/‖c‖²)(G − Σ p G) (docs/chen-theory.md#first-order-coefficient): relative error
    vs ``jax.grad`` of the model's ε-floored hard-label loss is O(a); the closed form at any a is exact."""
    batch, model = stage_one
    grad = functools.partial(_grad_c, batch=batch, model=model)
    errs = []
    for a in (0.01, 0.005):
        p = model.init(a_init=a, dtype=jnp.float64)
        ad = grad(p["C"], p)
        assert ad.dtype == jnp.float64
        errs.append(_rel(C.first_order_c_gradient(p, batch, model), ad))
    assert 1.8 < errs[0] / errs[1] < 2.2, errs
    assert errs[1] < 2e-3, errs
    p = {**model.init(a_init=3.0, dtype=jnp.float64), "C": jnp.linspace(0.3, 2.0, 7)}
    assert _rel(C.exact_c_gradient(p, batch, model), grad(p["C"], p)) < 1e-10
    g = C.first_order_g(p, batch, model)
    assert abs(float(g[0])) < 1e-12  # ∅: K = 1, exactly no signal
    assert np.all(np.isfinite(np.asarray(C.first_order_g(p, batch, model, eps=0.0))))


def test_replicator_matches_stage_one_gradient_descent(stage_one):
    """Small-lr GD on c only (a = 0.01 frozen, official init) follows p_S(t) ∝ p_S(0)e^{κtG_S}
    with t = lr × step (docs/chen-theory.md#replicator-flow). Measured: max |p_GD − p_rep| ≈ 0.0064
    over 100 steps of lr 0.02 (0.0031 over 200 steps of lr 0.01: the O(lr) GD error), final share of {1, 2}
    0.960 (predicted 0.962), ‖c‖² grows by ≈ 1.7 % (0.9 % at lr 0.01)."""
    batch, model = stage_one
    p0 = model.init(a_init=0.01, dtype=jnp.float64)
    lr, steps = 0.02, 100

    cs, c = [], np.asarray(p0["C"])
    for _ in range(steps):  # the compiled gradient of the previous test, no new program
        c = c - lr * np.asarray(_grad_c(c, p0, batch, model))
        cs.append(c)
    cs = np.stack(cs)
    shares = cs**2 / np.sum(cs**2, axis=1, keepdims=True)
    g = np.asarray(C.first_order_g(p0, batch, model))
    times = lr * np.arange(steps)  # cs[k] is after k + 1 steps: t = lr·(k + 1)
    pred = np.asarray(C.replicator_shares(g, times + lr, 0.01, p0["C"]))
    assert np.max(np.abs(shares - pred)) < 0.02
    assert model.subsets()[int(np.argmax(g))] == (1, 2) and shares[-1, -1] > 0.9
    np.testing.assert_array_equal(np.argsort(shares[-1]), np.argsort(g))  # final order = order of G
    norm2 = np.sum(cs**2, axis=1) / float(jnp.sum(p0["C"] ** 2))
    assert np.max(np.abs(norm2 - 1)) < 0.03
    # the (p0, ‖c‖²) form is the same curve
    c2 = np.square(np.asarray(p0["C"]))
    alt = np.asarray(C.replicator_shares(g, times, 0.01, p0_S=c2 / c2.sum(), c_norm2=c2.sum()))
    np.testing.assert_allclose(alt[1:], pred[:-1], rtol=1e-12)
    np.testing.assert_allclose(alt[0], c2 / c2.sum(), rtol=1e-12)  # t = 0: the initial shares


def test_finite_length_g_ranks_subsets_like_modified_chi2(prior_d3):
    """Exact copiers (official window, w_+ = 40, w_− = 0): batch G_S ≈ Ĩ_χ²(S) of the same
    kernels with a small positive finite-L bias, and S* = {1, 2} wins
    (docs/chen-theory.md#first-order-coefficient). Measured at L = 100, 4096 sequences: bias
    0.01–0.02 on every non-empty S."""
    kernels, _ = prior_d3
    batch = ngram_batch(np.random.default_rng(3), kernels, 3, 100)
    model = InductionModel(3, 3, 2, window="official")
    params = model.init(w_plus=40.0, w_minus=0.0, dtype=jnp.float64)
    g = np.asarray(C.first_order_g(params, batch, model))
    mc = C.selection_monte_carlo(3, (1, 2), 3, 2, 0.1, kernels=kernels)
    assert model.subsets() == mc["subsets"]
    assert mc["selected"] == (1, 2) and model.subsets()[int(np.argmax(g))] == (1, 2)
    bias = g[1:] - mc["modified_chi2"][1:]
    assert np.all(bias > -0.01) and np.all(bias < 0.05), bias
    tilde = mc["modified_chi2"]
    for i, j in itertools.combinations(range(len(g)), 2):
        if abs(tilde[i] - tilde[j]) > 0.01:  # well-separated pairs keep their order
            assert (g[i] > g[j]) == (tilde[i] > tilde[j]), (mc["subsets"][i], mc["subsets"][j])


def test_errors():
    with pytest.raises(ValueError, match=r"max_degree must be an integer in \[0, num_heads=3\]"):
        C.chen_subsets(3, 4)
    with pytest.raises(ValueError, match="kernel_BxRxS must have shape"):
        C.window_joint_law(np.ones((2, 3, 3)) / 3, 3, (1, 2), 3)
    with pytest.raises(ValueError, match="at most 256 are supported"):
        C.window_joint_law(np.ones((1, 9, 9)) / 9, 9, (1, 3), 3)
    with pytest.raises(ValueError, match="alpha must be a finite scalar > 0"):
        C.selection_monte_carlo(3, (1, 2), alpha=0.0, key=jax.random.key(0), draws=8)
    with pytest.raises(ValueError, match="draws must be an integer >= 2"):
        C.selection_monte_carlo(3, (1, 2), key=jax.random.key(0), draws=1)
    with pytest.raises(ValueError, match="needs c0_S, or both p0_S and c_norm2"):
        C.replicator_shares(jnp.ones(3), [0.0], 0.01)
    with pytest.raises(ValueError, match="a_A must be a 1-D grid"):
        C.asymptotic_loss_monte_carlo(3, (1, 2), (1, 2), [-1.0], kernels=_kernels(0, 0.1, 4))
