"""Chen et al.'s copier / selector / classifier model (docs/models.md#chen-induction-model,
docs/models.md#tests).

Banded vs dense copier (values and gradients), exact shift as w_+ → ∞, selector
kernel vs explicit Kronecker features, the generalised induction head
(docs/chen-theory.md#generalised-induction-head), loss bounds and ε floor (docs/models.md#losses),
init / subsets, config validation, vmap and jit. float64 throughout, except where float32 itself is
the point (the GIH reference is float32).

Compiles dominate the runtime on CPU, so each test runs one jitted program (several
configurations inside it) and eager calls are kept to small shapes."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax
from icl_jax.losses import DEFAULT_EPS
from icl_jax.models.induction import LOSSES, InductionModel
from icl_jax.models.induction_layers import copier_attention, copier_features, selector_similarity, subset_shares
from icl_jax.models.reference import copier_features_dense

F64 = jnp.float64
RNG = np.random.default_rng
NORM_EPS = 1e-7  # the model's default unit-norm ε (official SimplifiedLayerNorm)
B, L = 16, 24  # the n-gram batch slice shared by the GIH, a = 0 and vmap tests
OFFICIAL = InductionModel(3, 3, 2, window="official")

# XLA's backend optimisation level 0 halves the CPU compile time of these small programs
# (compiles are nearly all of this file's runtime); the float semantics are unchanged.
_FAST = {"xla_backend_optimization_level": 0}


def _jit(fn=None, **kw):
    return jax.jit(fn, compiler_options=_FAST, **kw) if fn is not None else lambda f: _jit(f, **kw)


_probs = _jit(lambda p, x, model: model.apply(p, x), static_argnames="model")  # one compile per (model, shapes)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _np_ngram_batch(seed, b, length, d=3, alpha=0.1):
    """Chen's n-gram task with parents {1, 2} in numpy (no sampler compile): per sequence
    π(·|x_{i−2}, x_{i−1}) ~ Dirichlet(α), x_1, x_2 uniform, then the chain up to x_{L+1};
    the soft label is π(·|x_{L−1}, x_L), the hard label x_{L+1}."""
    rng = RNG(seed)
    pi = rng.dirichlet(np.full(d, alpha), size=(b, d, d))  # [B, d, d, d]
    x = np.zeros((b, length + 1), np.int64)
    x[:, :2] = rng.integers(0, d, (b, 2))
    rows = np.arange(b)
    for i in range(2, length + 1):
        cdf = np.cumsum(pi[rows, x[:, i - 2], x[:, i - 1]], -1)
        x[:, i] = np.minimum((rng.random((b, 1)) > cdf).sum(-1), d - 1)
    label_probs = pi[rows, x[:, length - 2], x[:, length - 1]]
    return icl_jax.Batch(
        jnp.asarray(x[:, :length], jnp.int32), jnp.asarray(label_probs), jnp.asarray(x[:, length], jnp.int32)
    )


@pytest.fixture(scope="module")
def ngram_batch():
    """d = 3, L = 24, parents {1, 2}, 1024 sequences, float64 soft labels."""
    with jax.enable_x64(True):
        return _np_ngram_batch(0, 1024, L)


@pytest.fixture(scope="module")
def small_batch(ngram_batch):
    return icl_jax.Batch(ngram_batch.tokens_BxT[:B], ngram_batch.label_probs_BxS[:B], ngram_batch.label_B[:B])


def _tokens(seed, b, length, d):
    return jnp.asarray(RNG(seed).integers(0, d, (b, length)).astype(np.int32))


def _perturbed(model, seed, scale=1.0):
    """Random float64 parameters of ``model``'s shapes (numpy draws, shapes by tracing
    model.init: no compiles): N(0, scale²) on every leaf around 0, except a ≈ 2 and
    the LayerNorm γ ≈ 1; the full model's Q/K/OV are far from proj_init·I, so its content
    logits matter."""
    shapes = jax.eval_shape(lambda: model.init(dtype=F64))
    rng = RNG(seed)
    base = {"a": 2.0, "ln_scale": 1.0}
    return {k: jnp.asarray(base.get(k, 0.0) + scale * rng.standard_normal(v.shape)) for k, v in shapes.items()}


def _onehot(tokens, d):
    return np.eye(d)[np.asarray(tokens)]


def _padded_onehot(tokens, d):
    """X̃: one-hot tokens and the all-zero query slot."""
    x = _onehot(tokens, d)
    return np.concatenate([x, np.zeros_like(x[:, :1])], axis=1)


# ------------------------------------------------------------ banded vs dense layer 1
# include_raw does not touch layer 1; it enters through the selector term (C) of the
# scalar whose gradient is compared. "paper_M4_self" covers both the wider paper window and
# the self offset on the simplified model; "full_unit" is the full model on the paper window
# with unit norm (self offset on, the full-model default: see the finite-gradient test below for off).
COPIER_CONFIGS = {
    "paper": dict(),
    "paper_M4_self": dict(window_size=4, self_offset=True),
    "official_raw": dict(window="official", include_raw=True),
    "full": dict(window="official", full=True),
    "full_unit": dict(full=True, norm="unit"),
}
SELECTOR_CONFIG = "official_raw"  # the compared scalar also runs through the selector (C, a)
B1, L1 = 3, 10


@pytest.fixture(scope="module")
def copier_results():
    """Every configuration in one compiled program (compiles dominate this file's time).

    Per configuration and copier: the features, the value and the gradient (w.r.t. every
    parameter) of a scalar function of them, ⟨R, v⟩, plus Σ_l r_l·a·sim(q, l) for
    SELECTOR_CONFIG (so C, a and the include_raw normaliser enter; the selector itself does
    not depend on the copier, so one configuration suffices), and the content-free
    attention table."""
    with jax.enable_x64(True):
        models = {n: InductionModel(3, 3, 2, **kw) for n, kw in COPIER_CONFIGS.items()}
        no_self = InductionModel(3, 3, 2, full=True, norm="unit", self_offset=False)
        params = {n: _perturbed(m, 1, scale=1.5 if m.full else 1.0) for n, m in models.items()}
        tokens = _tokens(2, B1, L1, 3)
        proj = jnp.asarray(RNG(4).standard_normal((B1, L1 + 1, 3, 3)))
        r = jnp.asarray(RNG(3).standard_normal((B1, L1)))

        @_jit
        def run(ps):
            out = {}
            for n, m in models.items():

                def f(p, copier, m=m, n=n):
                    v = copier(p, tokens, m)
                    if n != SELECTOR_CONFIG:
                        return jnp.sum(proj * v), v
                    return jnp.sum(proj * v) + jnp.sum(r * p["a"] * selector_similarity(p, v, tokens, m)), v

                out[n] = {
                    c.__name__: jax.value_and_grad(f, has_aux=True)(ps[n], c)
                    for c in (copier_features, copier_features_dense)
                }
                out[n]["attn"] = copier_attention(ps[n], m, L1)
                if m.full:  # Q = 0: no content logits
                    out[n]["q0"] = copier_features(dict(ps[n], Q=jnp.zeros_like(ps[n]["Q"])), tokens, m)

            # the regression case: full model, unit norm, no self offset (banded only)
            def g(p):
                v = copier_features(p, tokens, no_self)
                return jnp.sum(proj * v), v

            (_, v), grads = jax.value_and_grad(g, has_aux=True)(ps["full_unit"])
            out["full_unit_no_self"] = v, grads
            return out

        return models, params, tokens, jax.device_get(run(params))


@pytest.mark.parametrize("name", list(COPIER_CONFIGS))
def test_banded_copier_equals_dense(name, copier_results):
    models, params, _, results = copier_results
    (f_band, v_band), g_band = results[name]["copier_features"]
    (f_dense, v_dense), g_dense = results[name]["copier_features_dense"]
    assert v_band.shape == (B1, L1 + 1, 3, 3) and v_band.dtype == np.float64
    np.testing.assert_allclose(v_band, v_dense, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(f_band, f_dense, rtol=1e-12)
    assert set(g_band) == set(params[name])
    unused = {"ln_scale", "ln_bias"} if models[name].norm_kind == "unit" else set()
    if name != SELECTOR_CONFIG:
        unused |= {"C", "a"}  # they do not enter layer 1
    for k in g_band:
        assert np.all(np.isfinite(g_band[k])), k
        assert (np.max(np.abs(g_band[k])) > 0) == (k not in unused), k  # every used parameter is live
    chex.assert_trees_all_close(g_band, g_dense, rtol=1e-9, atol=1e-12)


def test_full_model_content_logits_matter(copier_results):
    """The perturbed Q/K make the full model's attention content-dependent: its features
    are not those of the RPE table alone (copier_attention) pushed through OV and LN."""
    models, params, tokens, results = copier_results
    for name in ("full", "full_unit"):
        m, p = models[name], params[name]
        attn = results[name]["attn"]  # [L+1, K', H], RPE part only
        xt = _padded_onehot(tokens, 3)
        offsets = np.concatenate([[0] if m.use_self_offset else [], np.arange(1, m.max_offset + 1)]).astype(int)
        # attn is 0 where i − o < 0, so np.roll's wrap-around never contributes
        u = sum(attn[None, :, k, :, None] * np.roll(xt, o, axis=1)[:, :, None, :] for k, o in enumerate(offsets))
        u = np.einsum("bihd,hde->bihe", u, np.asarray(p["OV"]))
        v = results[name]["copier_features"][0][1]
        if m.norm_kind == "unit":
            rpe_only = u / (np.linalg.norm(u, axis=-1, keepdims=True) + NORM_EPS)
        else:
            c = u - u.mean(-1, keepdims=True)
            scale, bias = np.asarray(p["ln_scale"]), np.asarray(p["ln_bias"])
            rpe_only = c / np.sqrt((c**2).mean(-1, keepdims=True) + m.ln_eps) * scale + bias
        assert np.max(np.abs(v - rpe_only)) > 1e-2
        # with Q = 0 the content logits vanish and the same reconstruction is exact
        np.testing.assert_allclose(results[name]["q0"], rpe_only, rtol=1e-10, atol=1e-12)


def test_full_model_unit_norm_without_self_offset_has_finite_gradients(copier_results):
    """Full model, norm="unit", self_offset=False: position 1 has no valid offset, so u = 0
    there; v = u/(‖u‖ + ε) is 0, and the NaN-safe norm keeps ∂/∂OV finite (a plain
    ‖u‖ has gradient 0/0 at 0, which reached ∂/∂OV before the fix). (The
    simplified model is safe: there the NaN only meets masked attention cells, which the
    masked softmax's where() cuts off; LayerNorm is smooth at 0.)"""
    v, grads = copier_results[3]["full_unit_no_self"]
    assert np.all(v[:, 0] == 0)  # the forward is fine
    bad = [k for k, g in grads.items() if not np.all(np.isfinite(g))]
    assert not bad, f"non-finite gradients: {bad}"


@pytest.mark.parametrize("name", ["paper_M4_self", "official_raw"])
def test_copier_attention_reproduces_features(name, copier_results):
    """The simplified copier is Σ_k α_{i,k,h} x̃_{i−k} (copier_attention's table), then unit norm."""
    models, _, tokens, results = copier_results
    m = models[name]
    attn = results[name]["attn"]
    offsets = np.concatenate([[0] if m.use_self_offset else [], np.arange(1, m.max_offset + 1)]).astype(int)
    assert attn.shape == (L1 + 1, len(offsets), 3)
    xt = _padded_onehot(tokens, 3)
    u = np.zeros((B1, L1 + 1, 3, 3))
    for i, (k, o) in itertools.product(range(L1 + 1), enumerate(offsets)):
        if i - o >= 0:
            u[:, i] += attn[i, k][None, :, None] * xt[:, i - o][:, None, :]
        else:
            assert np.all(attn[i, k] == 0)  # before the start of the sequence
    window = m.window_mask()
    assert not np.any(attn[:, len(offsets) - m.max_offset :][:, ~window])  # outside each head's window
    sums = attn.sum(1)  # [L+1, H]: 1 where head h has a valid offset at position i, else exactly 0
    first = np.array([0 if m.use_self_offset else min(m.head_offsets(h)) for h in range(1, 4)])
    np.testing.assert_allclose(sums, (np.arange(L1 + 1)[:, None] >= first[None, :]).astype(float), atol=1e-12)
    v = u / (np.linalg.norm(u, axis=-1, keepdims=True) + NORM_EPS)
    np.testing.assert_allclose(results[name]["copier_features"][0][1], v, rtol=1e-12, atol=1e-14)


# -------------------------------------------------------------- exact shift
SHIFT_D, SHIFT_L = 4, 8


@pytest.fixture(scope="module")
def shift_results():
    """One program: both windows, w_+ = 60, w_− = 0 in float64 (banded and dense), and
    w_+ = ±1e4 in float32 (banded)."""
    with jax.enable_x64(True):
        models = {w: InductionModel(SHIFT_D, 3, 2, window=w) for w in ("paper", "official")}
        params = {w: m.init(w_plus=60.0, w_minus=0.0, dtype=F64) for w, m in models.items()}
        tokens = _tokens(7, 3, SHIFT_L, SHIFT_D)

        @_jit
        def run(ps, wps):
            f64 = {
                w: (copier_features(ps[w], tokens, m), copier_features_dense(ps[w], tokens, m))
                for w, m in models.items()
            }
            f32 = {
                w: [copier_features(m.init(w_plus=wps[i], w_minus=0.0), tokens, m) for i in range(2)]
                for w, m in models.items()
            }
            return f64, f32

        return tokens, jax.device_get(run(params, jnp.asarray([1e4, -1e4], jnp.float32)))


def test_exact_shift_as_w_plus_grows(shift_results):
    tokens, (feats, _) = shift_results
    d, length = SHIFT_D, SHIFT_L
    x = _onehot(tokens, d)
    for window, pair in feats.items():
        for v in pair:
            assert v.shape == (3, length + 1, 3, d) and np.all(np.isfinite(v))
            for p, h in itertools.product(range(length + 1), range(1, 4)):  # p = i − 1 (0-indexed); query p = L
                got = v[:, p, h - 1]
                if p - h >= 0:  # x_{i−h} exists: exact copy (up to the norm's ε)
                    np.testing.assert_allclose(got, x[:, p - h] / (1 + NORM_EPS), rtol=0, atol=1e-15)
                elif window == "official" or p == 0:
                    # no valid offset (official: head h sees only h..h+H−1; paper: i = 1)
                    assert np.all(got == 0.0)
                else:
                    # paper window, 1 <= i−1 < h: offset h is not valid yet, so head h spreads
                    # over the valid offsets 1..i−1 (all at w_− = 0): the normalised mean of
                    # x_1..x_{i−1}, not a zero vector and not a copy of x_{i−h}
                    u = x[:, :p].mean(1)
                    want = u / (np.linalg.norm(u, axis=-1, keepdims=True) + NORM_EPS)
                    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)
        # the query slot holds the target's parents x_{L+1−h}
        np.testing.assert_allclose(
            pair[0][:, -1], x[:, [length - 1, length - 2, length - 3]] / (1 + NORM_EPS), atol=1e-15
        )


def test_huge_logits_stay_finite_in_float32(shift_results):
    """The masked softmax subtracts the peak: w_+ = ±1e4 in float32 gives finite features,
    rows with no valid offset stay exactly 0 and w_+ = 1e4 copies exactly. (Gradients at
    the zero rows are checked in float64 by the banded-vs-dense test.)"""
    tokens, (_, feats) = shift_results
    x = _onehot(tokens, SHIFT_D)
    for window, (big, small) in feats.items():
        for v in (big, small):
            assert v.dtype == np.float32 and np.all(np.isfinite(v))
            assert np.all(v[:, 0] == 0)
        for p, h in itertools.product(range(SHIFT_L + 1), range(1, 4)):
            if p - h >= 0:
                np.testing.assert_allclose(big[:, p, h - 1], x[:, p - h], rtol=0, atol=2e-7)
            elif window == "official":
                assert np.all(big[:, p, h - 1] == 0) and np.all(small[:, p, h - 1] == 0)


# ----------------------------------------------------------- Kronecker kernel
def _phi(components, subsets, c):
    """φ(U) = (c_S ⊗_{h∈S} U^{(h)})_S built explicitly with np.kron; ∅ → (c_∅,)."""
    parts = []
    for cs, s in zip(c, subsets):
        feat = np.ones(1)
        for comp in s:
            feat = np.kron(feat, components[comp])
        parts.append(cs * feat)
    return np.concatenate(parts)


@pytest.mark.parametrize("max_degree,include_raw", [(2, False), (2, True), (3, False)])
def test_selector_is_kronecker_feature_inner_product(max_degree, include_raw):
    """sim(q, l) = ⟨φ(U_q), φ(U_l)⟩ / Σ c² with U = [x̃, v^{(1)}, …, v^{(H)}] (the raw
    component x̃ is the zero token at the query, so raw subsets only add to Σ c²)."""
    b, length, h, d = 2, 5, 3, 3
    rng = RNG(9 + max_degree + include_raw)
    v = rng.standard_normal((b, length + 1, h, d))
    tokens = _tokens(10, b, length, d)
    xt = _padded_onehot(tokens, d)
    for relu, vv in ((False, v), (True, np.abs(v))):  # ReLU is the identity on nonnegative products
        model = InductionModel(d, h, max_degree, include_raw=include_raw, relu=relu)
        c = rng.standard_normal(model.num_subsets)
        sim = np.asarray(selector_similarity({"C": jnp.asarray(c)}, jnp.asarray(vv), tokens, model))
        ref = np.zeros((b, length))
        for bi in range(b):

            def comps(i, bi=bi, vv=vv):
                return [xt[bi, i]] + [vv[bi, i, k] for k in range(h)]

            q = _phi(comps(length), model.subsets(), c)
            assert q.size == sum(d ** len(s) for s in model.subsets())
            for li in range(length):
                ref[bi, li] = q @ _phi(comps(li), model.subsets(), c) / np.sum(c**2)
        np.testing.assert_allclose(sim, ref, rtol=1e-12, atol=1e-14)
    # ReLU with signed features: each head's inner product is clipped before the product
    model = InductionModel(d, h, max_degree, include_raw=include_raw, relu=True)
    c = rng.standard_normal(model.num_subsets)
    ip = np.maximum(np.einsum("bhd,blhd->blh", v[:, -1], v[:, :-1]), 0)
    kern = np.stack([np.prod(ip[..., [k - 1 for k in s]], -1) * (0 not in s) for s in model.subsets()], -1)
    sim = selector_similarity({"C": jnp.asarray(c)}, jnp.asarray(v), tokens, model)
    np.testing.assert_allclose(sim, kern @ c**2 / np.sum(c**2), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------- GIH
def _hard_params(model, subset, a):
    """Exact copying (w_+ = 60, w_− = 0) and c one-hot on ``subset``."""
    params = model.init(w_plus=60.0, w_minus=0.0, a_init=a, dtype=F64)
    onehot = np.array([s == tuple(subset) for s in model.subsets()], np.float64)
    assert onehot.sum() == 1
    return dict(params, C=jnp.asarray(onehot))


_gih = _jit(icl_jax.gih_predictive, static_argnums=2)


@pytest.mark.parametrize(
    "subset,max_degree", [((1, 2), 2), ((1,), 2), ((2,), 2), ((2, 3), 2), ((1, 2, 3), 3), ((1, 2), 3)]
)
def test_hard_parameters_give_the_generalised_induction_head(subset, max_degree, small_batch):
    """Official window (head h sees offsets h..h+H−1, so key positions without a full
    S-context have zero features and never match, as in ngram_match)."""
    model = InductionModel(3, 3, max_degree, window="official")
    tokens = small_batch.tokens_BxT
    match = icl_jax.ngram_match(subset, tokens)
    assert 0 < int(match.sum()) < match.size
    for a in (0.0, 1.0, 4.0, 30.0):
        got = _probs(_hard_params(model, subset, a), tokens, model=model)
        want = _gih(tokens, match, 3, a)
        # residual: on matches sim = (1 + 1e−7)^{−2|S|} (the norm ε), and a float32 reference
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=f"a={a}")


def test_a_zero_is_the_in_context_unigram(small_batch):
    """softmax(0·sim) is uniform for any copier / selector: ŷ = N(e)/L exactly."""
    tokens = small_batch.tokens_BxT
    unigram = _onehot(tokens, 3).mean(1)
    for model in (OFFICIAL, InductionModel(3, 3, 3, window="official")):  # both compiled by the GIH test
        params = dict(_perturbed(model, 12), a=jnp.asarray(0.0, F64))
        np.testing.assert_allclose(_probs(params, tokens, model=model), unigram, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(_gih(tokens, jnp.ones(tokens.shape, bool), 3, 0.0), unigram, atol=1e-7)


# -------------------------------------------------------------- window statistics
# The sufficient-statistics forward (docs/models.md#window-statistics) against the
# position-wise one in float64: per-example losses (both losses × both label kinds) and the
# gradient w.r.t. every parameter, at the official init and at random parameters (vmapped:
# one compile for both), on host-compressed statistics (merged entries, counts, count-0
# padding) and on raw statistics computed inside the program (as the engine's samplers do).
# Compiles dominate (~2.5 s per gradient program), so each case's four losses share one
# gradient, of Σ_{loss, labels} Σ_b r ℓ with independent random weights r, and each case
# checks the statistics inputs it needs (raw and compressed run the same forward).
STATS_CASES = {  # name: (model kwargs, sequence lengths, statistics inputs)
    "full": (dict(full=True), (16,), ("raw", "compressed")),  # the FULL recipe's model
    # L = 3 < K = 5: two pads in the query window
    "full_official_no_relu": (dict(full=True, window="official", relu=False), (16, 3), ("compressed",)),
    "full_unit_no_self": (dict(full=True, norm="unit", self_offset=False), (16,), ("compressed",)),
    "paper_M4_self": (dict(window_size=4, self_offset=True), (16,), ("compressed",)),
    "official_raw": (dict(window="official", include_raw=True), (16,), ("raw",)),
}
STATS_B = 8
LOSS_COMBOS = tuple(itertools.product(LOSSES, ("hard", "soft")))


def _stats_results(name):
    """Per sequence length and input (the Batch, raw and/or compressed statistics): the
    per-example losses of every (loss, labels) and the gradient of their weighted sum, for
    the stacked parameter sets (official init, random: N(0, 0.5²) around 0 on every leaf,
    a ≈ 2, γ ≈ 1; larger random scales saturate the classifier softmax, where float64
    rounding of the similarities, ~1e−16 relative in both paths, is amplified in the
    gradient of C beyond 1e−10)."""
    kw, lengths, inputs = STATS_CASES[name]
    m = InductionModel(3, 3, 2, **kw)
    seed = list(STATS_CASES).index(name)
    params = jax.tree.map(lambda *x: jnp.stack(x), m.init(dtype=F64), _perturbed(m, 40 + seed, scale=0.5))
    batches = {length: _np_ngram_batch(50 + length, STATS_B, length) for length in lengths}
    compressed = {length: m.window_stats(b, compress=True) for length, b in batches.items()}
    r = jnp.asarray(RNG(60 + seed).standard_normal((len(LOSS_COMBOS), STATS_B)))

    def f(p, data):
        per = [m.per_example_loss(p, data, loss=loss, labels=labels) for loss, labels in LOSS_COMBOS]
        return sum(jnp.sum(w * x) for w, x in zip(r, per)), per

    vg = jax.vmap(jax.value_and_grad(f, has_aux=True), in_axes=(0, None))

    @_jit
    def run(ps, batches, compressed):
        out = {}
        for length, b in batches.items():
            data = {"batch": b, "raw": m.window_stats(b), "compressed": compressed[length]}
            out[length] = {k: vg(ps, data[k]) for k in ("batch", *inputs)}
        return out

    return m, params, compressed, jax.device_get(run(params, batches, compressed))


@pytest.mark.parametrize("name", list(STATS_CASES))
def test_window_stats_equal_the_position_wise_model(name):
    m, params, compressed, results = _stats_results(name)
    for length, res in results.items():
        (_, per_ref), g_ref = res["batch"]
        for kind in STATS_CASES[name][2]:
            (_, per), grads = res[kind]
            for i, (loss, labels) in enumerate(LOSS_COMBOS):
                assert per_ref[i].shape == (2, STATS_B) and np.all(np.isfinite(per_ref[i]))
                np.testing.assert_allclose(per[i], per_ref[i], rtol=1e-10, atol=0,
                                           err_msg=f"{name}, L={length}, {kind}, {loss}, {labels}")
            assert set(grads) == set(params)
            for k, g in grads.items():
                for j, pset in enumerate(("official init", "random")):
                    want = g_ref[k][j]
                    assert np.all(np.isfinite(want))
                    np.testing.assert_allclose(g[j], want, rtol=1e-10, atol=1e-12 * np.max(np.abs(want)),
                                               err_msg=f"{name}, L={length}, {kind}, {pset}: gradient of {k}")
        # the comparison is not vacuous: every parameter is live (LayerNorm's only with LayerNorm)
        unused = {"ln_scale", "ln_bias"} if m.norm_kind == "unit" else set()
        for k, g in g_ref.items():
            assert np.all(np.max(np.abs(g.reshape(2, -1)), axis=1) > 0) == (k not in unused), (k, length)
        stats = compressed[length]
        assert stats.query_pads == max(0, m.max_offset - length)
        if length > m.max_offset:  # repeated (code, token) pairs were merged, short rows padded with count 0
            count = np.asarray(stats.count_BxP)
            assert stats.code_BxP.shape[1] < length and np.any(count > 1) and np.any(count == 0)


def test_window_stats_gather_with_table_copies_is_the_plain_gather():
    """Large batches read per-sequence copies of the table (a better-conditioned float32
    gradient, induction_stats._gather): the value and the gradient are the plain gather's
    (gradient: the scatter-add of the cotangents, np.add.at)."""
    from icl_jax.models.induction_stats import MIN_GRADIENT_COPIES, _gather

    rng = RNG(70)
    table = jnp.asarray(rng.standard_normal((3, 4)))
    index = jnp.asarray(rng.integers(0, 12, (64, 10)))
    assert 64 * 10 // (2 * 12) >= MIN_GRADIENT_COPIES  # the copies are used
    cot = rng.standard_normal((64, 10))
    value, vjp = jax.vjp(lambda t: _gather(t, index), table)
    np.testing.assert_array_equal(value, np.asarray(table).reshape(-1)[np.asarray(index)])
    want = np.zeros(12)
    np.add.at(want, np.asarray(index), cot)
    np.testing.assert_allclose(vjp(jnp.asarray(cot))[0], want.reshape(3, 4), rtol=1e-13, atol=1e-13)


def test_window_stats_table_size_counts_the_own_token_digit():
    """The full model's table has d times the columns (the x_l digit): d = 3, K = 6 fits the
    simplified model (3^6·4^6 ≈ 3.0M entries) but not the full one (≈ 8.9M > 2^22), which falls
    back to the position-wise forward; the FULL recipe (K = 3: 27 × 3·64) trains on statistics."""
    from icl_jax.experiments.chen.common import chen_model, uses_window_stats
    from icl_jax.experiments.chen.recipes import FULL
    from icl_jax.models.induction_stats import MAX_TABLE_ENTRIES, table_entries

    full = chen_model(FULL)
    assert full.full and full.use_self_offset and full.max_offset == 3
    assert uses_window_stats(full) and table_entries(full) == 27 * 64 * 3
    wide = InductionModel(3, 6, 2)
    wide_full = InductionModel(3, 6, 2, full=True)
    assert table_entries(wide) <= MAX_TABLE_ENTRIES < table_entries(wide_full) == 3 * table_entries(wide)
    assert uses_window_stats(wide) and not uses_window_stats(wide_full)
    batch = _np_ngram_batch(0, 2, 8)
    wide.window_stats(batch)
    with pytest.raises(ValueError, match="similarity table would have"):
        wide_full.window_stats(batch)


@pytest.mark.parametrize("full", [False, True])
def test_on_device_compression_equals_the_host_compression(full):
    """compress_window_stats_to (traced, static width) gives exactly the host
    compress_window_stats (same entries, same order, same counts) at the width
    compressed_width reports, so train_chen's training sets are the host-compressed ones; one
    slot too few poisons the overflowing sequences with NaN counts (no entry silently lost)."""
    from icl_jax.models.induction_stats import compress_window_stats, compress_window_stats_to, compressed_width

    model = InductionModel(3, 3, 2, full=full)
    batch = _np_ngram_batch(3, 300, 40)
    stats = model.window_stats(batch)
    host = compress_window_stats(stats)
    width = compressed_width(stats)
    assert width == host.code_BxP.shape[1] < 40  # entries are merged
    dev = jax.jit(lambda s: compress_window_stats_to(s, width, model.vocab_size))(stats)
    for field in ("query_B", "code_BxP", "token_BxP", "count_BxP", "label_B"):
        np.testing.assert_array_equal(np.asarray(getattr(dev, field)), np.asarray(getattr(host, field)), err_msg=field)
    short = compress_window_stats_to(stats, width - 1, model.vocab_size)
    lost = np.isnan(np.asarray(short.count_BxP)).any(axis=1)
    distinct = np.asarray(host.count_BxP > 0).sum(axis=1)
    np.testing.assert_array_equal(lost, distinct == width)


# ------------------------------------------------------------------- losses



LOG_E2 = math.log(math.e + 2)


def test_official_loss_bounds_for_three_tokens():
    probs = jnp.asarray([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1.0, 0]], F64)
    y = jax.nn.one_hot(jnp.zeros(3, jnp.int32), 3, dtype=F64)
    np.testing.assert_allclose(
        _jit(icl_jax.official_double_softmax_ce)(probs, y), [LOG_E2 - 1, math.log(3), LOG_E2], rtol=1e-14
    )


def test_official_loss_through_the_model_on_a_one_hot_output():
    """Tokens 0 1 2 2 0 1: the query context (x_{L−1}, x_L) = (0, 1) occurs once, at l = 3
    with x_3 = 2, so hard parameters on {1, 2} with a = 200 give ŷ = e_2 exactly."""
    params = _hard_params(OFFICIAL, (1, 2), 200.0)
    tokens = jnp.asarray([[0, 1, 2, 2, 0, 1]] * 3, jnp.int32)
    assert np.array_equal(np.asarray(icl_jax.ngram_match((1, 2), tokens))[0], [0, 0, 1, 0, 0, 0])
    label = jnp.asarray([2, 0, 1], jnp.int32)
    batch = icl_jax.Batch(tokens, jax.nn.one_hot(label, 3, dtype=F64), label)

    @_jit
    def run(p, b):
        per = {lab: OFFICIAL.per_example_loss(p, b, loss="official", labels=lab) for lab in ("hard", "soft")}
        return OFFICIAL.apply(p, b.tokens_BxT), per

    probs, per = run(params, batch)
    np.testing.assert_allclose(probs, np.tile([0.0, 0, 1], (3, 1)), rtol=0, atol=1e-15)
    want = [LOG_E2 - 1, LOG_E2, LOG_E2]  # target = the one-hot token, then two wrong targets
    for labels in ("hard", "soft"):
        np.testing.assert_allclose(per[labels], want, rtol=1e-12)


def test_prob_ce_floor_when_the_target_never_occurs():
    """Context all 0s, so ŷ = e_0 for any parameters: targets 1, 2 never occur and score
    −log(ε/(1 + dε)) (finite), target 0 scores −log((1 + ε)/(1 + dε)); ε = 0 gives +inf."""
    model = InductionModel(3, 3, 2)
    params = _perturbed(model, 13)
    label = jnp.asarray([1, 2, 0], jnp.int32)
    batch = icl_jax.Batch(jnp.zeros((3, 9), jnp.int32), jax.nn.one_hot(label, 3, dtype=F64), label)
    run = _jit(lambda p: (model.per_example_loss(p, batch), model.per_example_loss(p, batch, eps=0.0)))
    floored, raw = run(params)
    eps = DEFAULT_EPS
    assert eps > 0 and np.all(np.isfinite(floored))
    np.testing.assert_allclose(
        floored, [-math.log(eps / (1 + 3 * eps))] * 2 + [-math.log((1 + eps) / (1 + 3 * eps))], rtol=1e-12
    )
    assert np.all(np.isposinf(raw[:2])) and abs(raw[2]) < 1e-15  # no floor: +inf, never NaN


def test_hard_and_soft_labels_agree_in_expectation(ngram_batch):
    """Hard labels are draws from the soft label: over 32 fresh label draws per sequence
    (1024 sequences) the mean hard loss is within 5 standard errors of the soft loss, and
    the soft loss is exactly the π-weighted average of the hard loss over every label."""
    params = _hard_params(OFFICIAL, (1, 2), 2.0)
    pi = np.asarray(ngram_batch.label_probs_BxS)
    cdf = np.cumsum(pi, -1)
    draws = np.minimum((RNG(16).random((32, pi.shape[0], 1)) > cdf[None]).sum(-1), 2)  # [K, B]
    every = np.broadcast_to(np.arange(3)[:, None], (3, pi.shape[0]))
    labels = jnp.asarray(np.concatenate([every, draws]), jnp.int32)

    @_jit
    def run(p, batch, labels_KxB):
        out = {}
        for loss in LOSSES:
            soft = OFFICIAL.per_example_loss(p, batch, loss=loss, labels="soft")
            hard = jax.vmap(
                lambda y, loss=loss: OFFICIAL.per_example_loss(
                    p, icl_jax.Batch(batch.tokens_BxT, batch.label_probs_BxS, y), loss=loss
                )
            )(labels_KxB)
            out[loss] = (soft, hard)
        return out

    for loss, (soft, hard) in run(params, ngram_batch, labels).items():
        np.testing.assert_allclose((hard[:3].T * pi).sum(-1), soft, rtol=1e-10, err_msg=loss)
        diff = np.asarray(hard[3:].mean(0) - soft)  # per sequence: E[· | X] = 0
        se = diff.std() / math.sqrt(diff.size)
        assert se > 0 and abs(diff.mean()) < 5 * se, loss


def test_bad_loss_arguments(small_batch):
    params = OFFICIAL.init()
    for kw, name in [
        (dict(loss="cross_entropy"), "loss"),
        (dict(labels="sampled"), "labels"),
        (dict(eps=-1e-3), "eps"),
        (dict(eps=float("nan")), "eps"),
    ]:
        with pytest.raises(ValueError, match=name):
            OFFICIAL.per_example_loss(params, small_batch, **kw)
        with pytest.raises(ValueError, match=name):
            OFFICIAL.loss(params, small_batch, **kw)
    for bad in (small_batch.tokens_BxT[0], small_batch.tokens_BxT[:, :0]):
        with pytest.raises(ValueError, match="tokens_BxT"):
            OFFICIAL.apply(params, bad)
    with pytest.raises(ValueError, match="init"):
        OFFICIAL.init(w_pluss=3.0)  # unknown override


# ------------------------------------------------------------------- init and subsets
@pytest.mark.parametrize("kw,rows", [(dict(), 3), (dict(window_size=4), 4), (dict(window="official"), 5)])
def test_init_pattern(kw, rows):
    model = InductionModel(4, 3, 2, **kw)
    assert model.max_offset == rows  # M (paper) or 2H − 1 (official)
    params = model.init(w_plus=3.0, w_minus=0.1, c_init=0.02, a_init=0.5, dtype=F64)
    assert set(params) == {"W", "C", "a"}
    # the same values as config fields; the key is accepted and ignored
    configured = InductionModel(4, 3, 2, w_plus=3.0, w_minus=0.1, c_init=0.02, a_init=0.5, **kw)
    chex.assert_trees_all_equal(configured.init(jax.random.key(1), dtype=F64), params)
    want = np.full((rows, 3), 0.1)
    want[[0, 1, 2], [0, 1, 2]] = 3.0  # row k−1 = offset k, column h−1 = head h
    np.testing.assert_array_equal(params["W"], want)
    assert params["W"].dtype == F64
    np.testing.assert_array_equal(params["C"], np.full(7, 0.02))
    assert params["a"].shape == () and float(params["a"]) == 0.5
    # the full model adds Q = K = OV = proj_init·I and LayerNorm (γ, β) = (1, 0)
    full = InductionModel(4, 3, 2, full=True, **kw)
    fp = full.init(proj_init=0.001)
    assert set(fp) == {"W", "C", "a", "Q", "K", "OV", "ln_scale", "ln_bias"}
    for k in ("Q", "K", "OV"):
        np.testing.assert_array_equal(fp[k], np.broadcast_to(0.001 * np.eye(4, dtype=np.float32), (3, 4, 4)))
    np.testing.assert_array_equal(fp["ln_scale"], np.ones(4))
    np.testing.assert_array_equal(fp["ln_bias"], np.zeros(4))
    assert fp["W"].dtype == jnp.float32 and full.use_self_offset and full.norm_kind == "layernorm"


def test_traced_init_under_vmap():
    model = InductionModel(3, 3, 2, window="official", full=True)
    scales = [1.0, 2.0, 3.0]
    s = jnp.asarray(scales)
    batched = _jit(jax.vmap(lambda wp, c, p: model.init(w_plus=wp, c_init=c, a_init=2 * c, proj_init=p)))(
        s, 0.01 * s, 1e-3 * s
    )
    assert batched["W"].shape == (3, 5, 3) and batched["Q"].shape == (3, 3, 3, 3)
    for i, x in enumerate(scales):
        single = model.init(w_plus=x, c_init=0.01 * x, a_init=0.02 * x, proj_init=1e-3 * x)
        chex.assert_trees_all_close(jax.tree.map(lambda v, i=i: v[i], batched), single, rtol=1e-6, atol=0)


def test_subset_enumeration_and_labels():
    m = InductionModel(3, 3, 2)
    assert m.subset_labels() == ("000", "001", "010", "011", "100", "101", "110")
    assert m.subsets() == ((), (3,), (2,), (2, 3), (1,), (1, 3), (1, 2))
    assert m.num_subsets == 7 and m.live_subsets().all()
    raw = InductionModel(3, 3, 2, include_raw=True)
    assert raw.subset_labels() == (
        "0000",
        "0001",
        "0010",
        "0011",
        "0100",
        "0101",
        "0110",
        "1000",
        "1001",
        "1010",
        "1100",
    )
    np.testing.assert_array_equal(raw.live_subsets(), [True] * 7 + [False] * 4)
    assert raw.subsets()[7:] == ((0,), (0, 3), (0, 2), (0, 1))
    d3 = InductionModel(3, 3, 3)
    assert d3.num_subsets == 8 and d3.subset_labels()[-1] == "111"
    assert InductionModel(3, 3, 0).subsets() == ((),)
    assert InductionModel(3, 3, 2, window="official").head_offsets(2) == (2, 3, 4)
    assert InductionModel(3, 3, 2, window_size=4).head_offsets(3) == (1, 2, 3, 4)
    c = jnp.asarray([[1.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 4.0]])
    np.testing.assert_allclose(subset_shares({"C": c}), [[1 / 6, 4 / 6, 0, 1 / 6], [9 / 25, 0, 0, 16 / 25]], rtol=1e-14)


# ----------------------------------------------------------------- config validation
def test_bad_configs():
    for kw, name in [
        (dict(vocab_size=1), "vocab_size"),
        (dict(vocab_size=2.5), "vocab_size"),
        (dict(vocab_size=3, num_heads=0), "num_heads"),
        (dict(vocab_size=3, num_heads=True), "num_heads"),
        (dict(vocab_size=3, num_heads=3, max_degree=4), "max_degree"),
        (dict(vocab_size=3, max_degree=-1), "max_degree"),
        (dict(vocab_size=3, window="code"), "window"),
        (dict(vocab_size=3, window_size=0), "window_size"),
        (dict(vocab_size=3, num_heads=3, window="official", window_size=4), "window_size"),
        (dict(vocab_size=3, norm="batch"), "norm"),
        (dict(vocab_size=3, norm_eps=0.0), "norm_eps"),
        (dict(vocab_size=3, ln_eps=-1e-5), "ln_eps"),
    ]:
        with pytest.raises(ValueError, match=name):
            InductionModel(**kw)
    InductionModel(3, 3, 3, window="official", window_size=3)  # M = H is allowed


# -------------------------------------------------------------------- vmap and jit
def test_vmap_over_parameter_sets_equals_per_set_calls(small_batch):
    """Three parameter sets (different W, C, a) in one vmapped loss equal per-set forwards."""
    sets = [_perturbed(OFFICIAL, 20 + i) for i in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *sets)
    run = _jit(jax.vmap(lambda p, b: OFFICIAL.per_example_loss(p, b, loss="official"), in_axes=(0, None)))
    losses = run(stacked, small_batch)
    y = jax.nn.one_hot(small_batch.label_B, 3, dtype=F64)
    singles = [_probs(p, small_batch.tokens_BxT, model=OFFICIAL) for p in sets]
    for i, single in enumerate(singles):
        np.testing.assert_allclose(losses[i], icl_jax.official_double_softmax_ce(single, y), rtol=1e-13)
    assert float(jnp.max(jnp.abs(singles[0] - singles[1]))) > 1e-3  # the sets really differ


def test_jitted_loss_traces_once(small_batch):
    chex.clear_trace_counter()

    @_jit
    @chex.assert_max_traces(n=1)
    def step(p, b):
        return OFFICIAL.loss(p, b, labels="soft")

    l0, l1 = step(OFFICIAL.init(dtype=F64), small_batch), step(_perturbed(OFFICIAL, 30), small_batch)
    assert float(l0) != float(l1)


def test_init_fields_are_validated():
    for name in ("w_plus", "w_minus", "c_init", "a_init", "proj_init"):
        with pytest.raises(ValueError, match=name):
            InductionModel(3, **{name: "big"})
        with pytest.raises(ValueError, match=name):
            InductionModel(3, **{name: float("nan")})
    with pytest.raises(ValueError, match="c_init"):
        InductionModel(3, c_init=None)
    InductionModel(3, w_plus=None, w_minus=None, c_init=0.5)  # None = the official value for w±
