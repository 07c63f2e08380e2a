"""Nichani et al. theory (docs/nichani-theory.md): first-order gradient vs autodiff, exact
enumeration, joint laws, χ² special values and the DPI argmax (all in float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax
from icl_jax.models import ReducedModel
from icl_jax.tasks.priors import stationary_distribution
from icl_jax.theory import chi2, nichani as N


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _dirichlet_kernels(rng, alpha, shape, s):
    """Kernels from numpy's Dirichlet (an independent exact sampler; no compile)."""
    return rng.dirichlet(np.full(s, alpha), size=tuple(shape))


def _numpy_batch(task, pis, rng):
    """Ancestral sampling in numpy (one π per sequence): roots ~ μ_π, children ~ π(·|parent),
    query uniform, soft label π(x_T, ·), hard label ~ π(·|x_T)."""
    b, s = pis.shape[0], task.vocab_size
    mu = np.asarray(stationary_distribution(jnp.asarray(pis)))
    t = task.seq_len
    tokens = np.zeros((b, t), np.int32)

    def draw(p_BxS):
        return (rng.random((b, 1)) > np.cumsum(p_BxS, axis=1)[:, :-1]).sum(axis=1)

    rows = np.arange(b)
    for i, ps in enumerate(task.graph.parents):
        tokens[:, i] = draw(pis[rows, tokens[:, ps[0]]] if ps else mu)
    tokens[:, -1] = rng.integers(0, s, b)
    label_probs = pis[rows, tokens[:, -1]]
    return icl_jax.Batch(jnp.asarray(tokens), jnp.asarray(label_probs), jnp.asarray(draw(label_probs), jnp.int32))


def _rel(x, ref):
    return float(jnp.linalg.norm(x - ref) / jnp.linalg.norm(ref))


@pytest.fixture(scope="module")
def chain_batch():
    task = icl_jax.tree_task("chain", vocab_size=4, seq_len=8, alpha=0.3)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        return task, _numpy_batch(task, _dirichlet_kernels(rng, 0.3, (2048, 4), 4), rng)


# ------------------------------------------------------------------------------ χ²
def test_chi2_values_and_zero_marginals():
    s = 4
    u = jnp.full((s,), 1.0 / s)
    assert float(chi2.chi2_mutual_information(u[:, None] * u[None, :])) == pytest.approx(0.0, abs=1e-15)
    assert float(chi2.chi2_mutual_information(jnp.diag(u))) == pytest.approx(s - 1.0)
    # zero marginal cells: a row and a column of zeros, no NaN, same value as the sub-table
    p = jnp.zeros((s, s)).at[:2, :2].set(jnp.array([[0.3, 0.2], [0.1, 0.4]]))
    sub = p[:2, :2]
    assert np.isfinite(float(chi2.chi2_mutual_information(p)))
    assert float(chi2.chi2_mutual_information(p)) == pytest.approx(float(chi2.chi2_mutual_information(sub)))
    direct = float(jnp.sum(sub**2 / (sub.sum(1)[:, None] * sub.sum(0)[None, :])) - 1)
    assert float(chi2.chi2_mutual_information(sub)) == pytest.approx(direct)
    assert float(chi2.chi2_divergence(p, p)) == pytest.approx(0.0, abs=1e-15)
    # batched = vmapped = one by one
    tables = jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(s * s), size=5).reshape(5, s, s))
    batched = chi2.chi2_mutual_information(tables)
    np.testing.assert_allclose(jax.vmap(chi2.chi2_mutual_information)(tables), batched, rtol=1e-13)
    np.testing.assert_allclose([chi2.chi2_mutual_information(t) for t in tables], batched, rtol=1e-13)
    px, py = chi2.marginals(tables)
    np.testing.assert_allclose(chi2.chi2_inner(tables, tables, px, py) - 1, batched, rtol=1e-13)


# ------------------------------------------------------------ first order vs autodiff
def test_first_order_matches_autodiff_error_halves(chain_batch):
    _, batch = chain_batch
    for labels in ("soft", "hard"):
        errs = []
        for beta0 in (2e-3, 1e-3):
            ad = N.autodiff_gradient(batch, beta0, 1e-3, labels)
            fo = N.first_order_gradient(batch, beta0, 1e-3, labels)
            assert ad.dtype == jnp.float64
            errs.append(_rel(fo, ad))
        assert 1.7 < errs[0] / errs[1] < 2.3, (labels, errs)
        assert errs[1] < 1e-3, (labels, errs)  # ≈ 0.1·β0 here


def test_first_order_rows_sum_to_zero_and_causal(chain_batch):
    _, batch = chain_batch
    fo = N.first_order_gradient(batch, 1e-3, 1e-3, "soft", chunk_size=1024)
    t = fo.shape[0]
    scale = float(jnp.abs(fo).max())
    assert float(jnp.abs(fo.sum(axis=1)).max()) < 1e-12 * scale
    assert float(jnp.abs(jnp.triu(fo, 1)).max()) == 0.0
    np.testing.assert_allclose(fo, N.first_order_gradient(batch, 1e-3, 1e-3, "soft"), rtol=1e-12, atol=1e-20)
    assert fo.shape == (t, t) and float(jnp.abs(fo[0]).max()) < 1e-12 * scale  # one key: no gradient


def test_exact_closed_form_matches_autodiff_at_large_beta0(chain_batch):
    """The derivation behind the first-order formula, to rounding error at any β0."""
    _, batch = chain_batch
    for labels in ("soft", "hard"):
        for beta0 in (0.7, 3.0):
            ad = N.autodiff_gradient(batch, beta0, 1e-2, labels)
            ex = N.exact_gradient_at_init(batch, beta0, 1e-2, labels)
            assert _rel(ex, ad) < 1e-12


# ---------------------------------------------------------------- exact enumeration
@pytest.fixture(scope="module")
def manual():
    task = icl_jax.tree_task("manual", vocab_size=3, seq_len=6, alpha=0.5)
    with jax.enable_x64(True):
        return task, jnp.asarray(_dirichlet_kernels(np.random.default_rng(3), 0.5, (3,), 3))


def test_enumeration_weights_and_joint_laws(manual):
    task, pi = manual
    batch, w = N.enumerate_sequences(task, pi)
    assert batch.tokens_BxT.shape == (3**6, 6) and float(w.sum()) == pytest.approx(1.0, abs=1e-14)
    x = jax.nn.one_hot(batch.tokens_BxT, 3)
    brute = jnp.einsum("n,nka,nib->kiab", w, x, x)
    np.testing.assert_allclose(N.pairwise_joint_laws(pi, task), brute, atol=1e-14)
    # hard labels: S^(T+1) rows, same exact population loss and gradient as soft labels
    hard, wh = N.enumerate_sequences(task, pi, labels="hard")
    assert hard.tokens_BxT.shape[0] == 3**7 and float(wh.sum()) == pytest.approx(1.0, abs=1e-14)
    g_soft = N.exact_population_gradient(task, pi, 0.1, 1e-3, "soft")
    g_hard = N.exact_population_gradient(task, pi, 0.1, 1e-3, "hard")
    np.testing.assert_allclose(g_hard, g_soft, rtol=1e-10, atol=1e-16)


def test_enumeration_first_order_vs_exact_gradient_halves(manual):
    task, pi = manual
    errs = []
    for beta0 in (1e-2, 5e-3):
        exact = N.exact_population_gradient(task, pi, beta0)
        batch, w = N.enumerate_sequences(task, pi)
        # the weighted batch gradient is the exact population gradient
        np.testing.assert_allclose(N.autodiff_gradient(batch, beta0, weights_B=w), exact, rtol=1e-10, atol=1e-18)
        errs.append(_rel(N.first_order_gradient(batch, beta0, weights_B=w), exact))
    assert 1.9 < errs[0] / errs[1] < 2.1, errs
    assert errs[1] < 1e-2, errs
    # and on the enumerated batch as a plain (unweighted) batch: grad of the model's loss itself
    plain = N.autodiff_gradient(batch, 5e-3)
    ref = jax.jit(jax.grad(lambda a1: _reduced_loss(a1, batch, 5e-3)))(jnp.zeros((6, 6)))
    np.testing.assert_allclose(plain, ref, rtol=1e-12, atol=1e-20)
    assert _rel(N.first_order_gradient(batch, 5e-3), plain) < 5e-3


def _reduced_loss(a1, batch, beta0):
    """ReducedModel(S=3, T=6).loss at A2 = β0·I, ε = 1e-3, soft labels."""
    return ReducedModel(3, 6).loss({"A1": a1, "A2": beta0 * jnp.eye(3)}, batch, labels="soft", eps=1e-3)


TWO_COMPONENTS = icl_jax.tree_from_dag_array([-1, 0, -1, 1, 2])  # components {0, 1, 3}, {2, 4}


@pytest.mark.parametrize("graph", ["manual", TWO_COMPONENTS])
def test_population_form_is_exact_with_mu_in_place_of_frequencies(graph):
    """E over sequences and query of the first-order formula with p̂ → μ_π (ε = 0) equals
    −β0/(S·T·(i+1))·(g − row mean) exactly, query row included (fixed π, enumeration)."""
    s = 3
    task = icl_jax.tree_task(graph, vocab_size=s, seq_len=6, alpha=0.5)
    pi = jnp.asarray(_dirichlet_kernels(np.random.default_rng(4), 0.5, (s,), s))
    mu = stationary_distribution(pi)
    batch, w = N.enumerate_sequences(task, pi)
    lhs = N.first_order_gradient(batch, 0.3, 0.0, weights_B=w, frequencies=mu)
    rhs = N.predicted_gradient(N.population_g(pi, task), 0.3, s)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-14 * float(jnp.abs(rhs).max()))


def test_enumeration_size_error():
    task = icl_jax.tree_task("chain", vocab_size=10, seq_len=20)
    with pytest.raises(ValueError, match=r"10\*\*20 = 100000000000000000000 rows \(S = 10, T = 20"):
        N.enumerate_sequences(task, jnp.eye(10))


# --------------------------------------------------------------------- joint laws
def test_joint_laws_match_sampler_frequencies():
    """P_π(x_k, x_i) vs pair frequencies of the task's own sampler for one fixed π (two
    components, so independent pairs are covered, plus the query)."""
    task = icl_jax.tree_task(TWO_COMPONENTS, vocab_size=3, alpha=0.5)
    pi = jnp.asarray(_dirichlet_kernels(np.random.default_rng(5), 0.5, (3,), 3), jnp.float32)
    b = 40000
    batch = task.sample_with_kernels(jax.random.key(0), {"pi": jnp.broadcast_to(pi, (b, 3, 3))})
    x = jax.nn.one_hot(batch.tokens_BxT, 3, dtype=jnp.float64)
    freq = jnp.einsum("nka,nib->kiab", x, x) / b
    exact = N.pairwise_joint_laws(pi.astype(jnp.float64), task)
    se = jnp.sqrt(exact * (1 - exact) / b) + 1e-12
    assert float(jnp.max(jnp.abs(freq - exact) / se)) < 5.0
    st = N.tree_pair_structure(task)
    assert st["kind"][0, 2] == 0 and st["kind"][1, 3] == 1 and st["kind"][5, 5] == 3 and st["kind"][0, 5] == 2
    assert (st["dk"][0, 3], st["di"][0, 3]) == (0, 2)  # 0 is the grandparent of 3
    assert (st["dk"][3, 4], st["kind"][3, 4]) == (0, 0)  # different components


# -------------------------------------------------------- special values and DPI
def test_special_values_fixed_pi():
    task = icl_jax.tree_task("icl", vocab_size=4, seq_len=8, alpha=0.3)  # pairs (0,1) (2,3) (4,5), root 6
    rng = np.random.default_rng(7)
    for pi in _dirichlet_kernels(rng, 0.3, (4, 4), 4):
        pi = jnp.asarray(pi)
        mu = stationary_distribution(pi)
        g = N.population_g(pi, task)
        edge = float(N.edge_chi2_information(pi))
        assert edge == pytest.approx(float(chi2.chi2_mutual_information(mu[:, None] * pi)))
        for i, p in ((1, 0), (3, 2), (5, 4)):
            assert float(g[i, p]) == pytest.approx(edge, rel=1e-10)  # k = p(i): I_χ² of the edge
        for i in range(7):
            assert float(g[i, i]) == pytest.approx(float(jnp.trace(pi)) - 1, rel=1e-10, abs=1e-12)  # self
        # independent pairs (other component, or row of a root): exactly 0
        for i, k in ((2, 0), (2, 1), (3, 0), (3, 1), (4, 3), (6, 5), (6, 0)):
            assert abs(float(g[i, k])) < 1e-12
        np.testing.assert_allclose(g[7, :7], float(jnp.trace(pi)) - 1, rtol=1e-10)  # query row


def test_monte_carlo_under_the_prior():
    """E[tr π − 1] ≈ 0 under the exchangeable prior; E[g at the parent] = E[I_χ²(edge)];
    standard errors are honest (the chain's parent entries agree within noise)."""
    task = icl_jax.tree_task("chain", vocab_size=4, seq_len=8, alpha=0.2)
    kernels = _dirichlet_kernels(np.random.default_rng(11), 0.2, (4000, 4), 4)
    mc = N.population_g_monte_carlo(task, kernels=kernels, chunk=256)
    assert abs(float(mc["trace_minus_one"])) < 4 * float(mc["trace_minus_one_se"])
    assert float(mc["trace_minus_one_se"]) < 0.05
    parents = jnp.array([mc["g"][i, i - 1] for i in range(1, 7)])
    np.testing.assert_allclose(parents, float(mc["edge_chi2"]), rtol=1e-10)
    assert bool(jnp.all(jnp.isnan(mc["g"][7]))) and not bool(jnp.any(jnp.isnan(mc["g"][:7])))
    # the closed form (S−1)/(Sα+1) = 5/3 overestimates at small α
    # (docs/nichani-theory.md#crude-closed-form-for-the-edge-information)
    assert 0.3 < float(mc["edge_chi2"]) < 5 / 3


@pytest.mark.parametrize("seed", [0, 1])
def test_dpi_on_random_trees(seed):
    """Per fixed π: |g_ik| ≤ I_χ²(edge) = g_{i,p(i)} for every k < i
    (docs/nichani-theory.md#special-values-and-the-dpi-argument); under the prior the population
    −gradient's argmax over k ≤ i (self included) is the parent."""
    task = icl_jax.tree_task("random", vocab_size=4, seq_len=8, alpha=0.1, graph_seed=seed)
    dag = task.graph.dag_array
    kernels = _dirichlet_kernels(np.random.default_rng(seed), 0.1, (300, 4), 4)
    for pi in kernels[:10]:
        pi = jnp.asarray(pi)
        g = np.asarray(N.population_g(pi, task))
        edge = float(N.edge_chi2_information(pi))
        for i in range(len(dag)):
            if dag[i] >= 0:
                assert np.all(np.abs(g[i, :i]) <= edge * (1 + 1e-9) + 1e-12)
                assert g[i, dag[i]] == pytest.approx(edge, rel=1e-9)
    mc = N.population_g_monte_carlo(task, kernels=kernels)
    pred = N.predicted_gradient(mc["g"], 1.0, 4)
    assert N.dpi_parent_is_argmax(pred, task) and N.argmax_recovery(pred, task) == 1.0


def test_population_normalisation_against_large_batch():
    """Sign and normalisation of the χ² form (the −β0/(S·T·(i+1)) prefactor and the row
    centring): at α = 1 (μ_π away from 0) the context rows of the first-order gradient of a
    large sampled batch are close to the population prediction. The remaining gap is the
    finite-T error (p̂ ≠ μ_π), which halves when T doubles (measured: 0.27, 0.14, 0.07 at
    T = 20, 40, 80 with 65536 sequences); a wrong factor S or T, or a sign, fails here."""
    rng = np.random.default_rng(0)
    t = 16
    task = icl_jax.tree_task("chain", vocab_size=3, seq_len=t, alpha=1.0)
    batch = _numpy_batch(task, _dirichlet_kernels(rng, 1.0, (16384, 3), 3), rng)
    fo = np.asarray(N.first_order_gradient(batch, 1e-3))[:-1]
    mc = N.population_g_monte_carlo(task, kernels=_dirichlet_kernels(rng, 1.0, (2048, 3), 3), chunk=1024)
    pop = np.asarray(N.predicted_gradient(mc["g"], 1e-3, 3))[:-1]
    tri = np.tril_indices(t - 1)
    a, b = pop[tri], fo[tri]
    assert np.corrcoef(a, b)[0, 1] > 0.93
    assert 0.8 < (a @ b) / (a @ a) < 1.6  # least-squares slope of first order on population
