"""Models (docs/models.md): CatFormer, the reduced model, the Fig. 8 preset of the NNX
Transformer (its own tests are in test_transformer.py), and the protocol every model follows."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax
from icl_jax.losses import LABELS
from icl_jax.models import InductionModel, Model
import fig8_reference as mt  # the plain-dict Fig. 8 reference (tests only)
from icl_jax.models.catformer import (
    CatFormer,
    catformer_embed,
    catformer_heads,
    layer1_positional_attention,
    stream_blocks,
)
from icl_jax.models.reduced import ReducedModel, reduced_layer1_attention, reduced_probs
from icl_jax.models.reference import catformer_logits_naive, catformer_stream
from icl_jax.models.transformer import fig8_transformer

HEADS = [(1, 1), (2, 1), (1,), (1, 1, 1), (3, 2)]
S, T = 5, 8  # small default shapes (one compile per model configuration)
RNG = np.random.default_rng

KEY = jax.random.key(0)  # the protocol's init key (zero inits ignore it)
REDUCED = ReducedModel(S, T)

# jitted once per module: every test with the same model and shapes reuses the compiled program
# (models are hashable frozen configs, so they are static arguments)
_cat_apply = jax.jit(lambda model, p, x: model.apply(p, x), static_argnums=0)
# (efficient logits, naive logits, attention maps) in one program per model
_cat_all = jax.jit(
    lambda model, p, x: (model.apply(p, x), catformer_logits_naive(p, x), model.attention(p, x)), static_argnums=0
)
_reduced_probs = jax.jit(REDUCED.apply)
_reduced_loss = jax.jit(lambda p, b, eps, labels: REDUCED.loss(p, b, labels=labels, eps=eps), static_argnames="labels")

def _tokens(seed, b=4, s=S, t=T):
    return jnp.asarray(RNG(seed).integers(0, s, (b, t)).astype(np.int32))


def _normal_like(seed, shapes, scale=lambda path: 1.0):
    """Every leaf ~ scale(path)·N(0, 1)/√(last dim), drawn with numpy (no compiles)."""
    rng = RNG(seed)

    def draw(path, x):
        z = scale(jax.tree_util.keystr(path)) * rng.standard_normal(x.shape) / math.sqrt(x.shape[-1])
        return jnp.asarray(z.astype(np.float32))

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _random_catformer(seed, heads, s=S, t=T):
    """A's at 4·N(0, 1/d) (peaked attention), W at N(0, 1/d_L)."""
    shapes = jax.eval_shape(CatFormer(s, t, heads).init, KEY)
    return _normal_like(seed, shapes, lambda path: 1.0 if path == "['W']" else 4.0)


def _ce(logits, batch):
    return jnp.mean(icl_jax.cross_entropy_logits(logits, batch.label_probs_BxS))


def _np_tree_batch(seed, dag, s, b, alpha=0.3):
    """A task batch drawn with numpy (independent of icl_jax.tasks, and no sampler compile):
    per sequence π ~ Dir(α·1), roots and the query uniform, x_j ~ π(·|x_{p(j)}), soft label
    π(x_T, ·), hard label drawn from it."""
    rng = RNG(seed)
    pi = rng.dirichlet(alpha * np.ones(s), size=(b, s))
    rows = np.arange(b)

    def draw(p_BxS):
        return np.minimum((rng.random((b, 1)) > np.cumsum(p_BxS, -1)).sum(-1), s - 1)

    x = np.zeros((b, len(dag) + 1), np.int64)
    for j, p in enumerate(dag):
        x[:, j] = rng.integers(s, size=b) if p < 0 else draw(pi[rows, x[:, p]])
    x[:, -1] = rng.integers(s, size=b)
    y = pi[rows, x[:, -1]]
    return icl_jax.Batch(jnp.asarray(x, jnp.int32), jnp.asarray(y, jnp.float32), jnp.asarray(draw(y), jnp.int32))


CHAIN = [-1] + list(range(T - 2))


@pytest.fixture(scope="module")
def big_batch():
    """4096 chain sequences, S = 5, T = 8."""
    return _np_tree_batch(0, CHAIN, S, 4096)


@pytest.fixture(scope="module")
def batch():
    return _np_tree_batch(1, CHAIN, S, 16)


# ------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("heads", HEADS)
def test_catformer_shapes_and_widths(heads):
    model = CatFormer(S, T, heads)
    d = [S + T]
    for m in heads:
        d.append((1 + m) * d[-1])
    assert model.widths == tuple(d)
    params = jax.eval_shape(model.init, KEY)
    assert sorted(params) == sorted([f"A{l + 1}" for l in range(len(heads))] + ["W"])
    for l, m in enumerate(heads):
        assert params[f"A{l + 1}"].shape == (m, d[l], d[l])
    assert params["W"].shape == (d[-1], S)
    assert catformer_heads(params) == heads
    assert model.num_params == sum(x.size for x in jax.tree.leaves(params))
    x = _tokens(0, b=3)
    assert jax.eval_shape(model.apply, params, x).shape == (3, S)
    assert jax.eval_shape(catformer_logits_naive, params, x).shape == (3, S)
    h0 = jax.eval_shape(lambda x: catformer_embed(x, S), x)
    assert h0.shape == (3, T, S + T)
    assert jax.eval_shape(catformer_stream, params, h0).shape == (3, T, d[-1])
    maps = jax.eval_shape(model.attention, params, x)
    assert [a.shape for a in maps] == [(3, m, T, T) for m in heads]
    assert jax.eval_shape(model.positional_attention, params).shape == (heads[0], T, T)
    assert model.stream_blocks() == stream_blocks(S, T, heads)


def test_catformer_param_count_official_config():
    model = CatFormer(10, 20, (1, 1))
    assert model.widths == (30, 60, 120)
    assert model.num_params == 5700
    params = model.init(KEY)
    assert sum(x.size for x in jax.tree.leaves(params)) == 5700
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(params))
    assert CatFormer(5, 32, (2, 1)).widths == (37, 111, 222)


def test_catformer_normal_init():
    model = CatFormer(S, T, (2, 1), init_dist="normal", init_scale=1e-4)
    params = model.init(KEY)
    assert 0 < float(jnp.std(params["A1"])) < 2e-4
    assert not np.array_equal(params["A1"][0], params["A1"][1])  # heads differ
    assert np.all(np.asarray(params["W"]) == 0)
    # init(key, scale=...) overrides the config's scale: the same draws, rescaled
    chex.assert_trees_all_close(model.init(KEY, scale=3e-4), jax.tree.map(lambda x: 3.0 * x, params), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="key"):
        model.init(None)


def test_catformer_embed_is_token_then_position_one_hot():
    h = np.asarray(catformer_embed(jnp.array([[2, 0, 1]]), 3))
    np.testing.assert_array_equal(h[0, :, :3], np.eye(3)[[2, 0, 1]])
    np.testing.assert_array_equal(h[0, :, 3:], np.eye(3))


def test_stream_blocks_index_map():
    blocks = {name: (a, b) for name, a, b in stream_blocks(10, 20, (1, 1))}
    assert blocks["token"] == (0, 10) and blocks["position"] == (10, 30)
    assert blocks["L1h0 token"] == (30, 40) and blocks["L1h0 position"] == (40, 60)
    assert blocks["L2h0 token"] == (60, 70) and blocks["L2h0 position"] == (70, 90)
    assert blocks["L2h0 L1h0 token"] == (90, 100) and blocks["L2h0 L1h0 position"] == (100, 120)
    for heads in [(1, 1), (2, 1)]:  # the blocks tile [0, d_L)
        spans = sorted((a, b) for _, a, b in stream_blocks(S, T, heads))
        assert spans[0][0] == 0 and spans[-1][1] == CatFormer(S, T, heads).widths[-1]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_fig8_init_convention():
    """Fig. 8 preset: split(key, 2L+2): 2i → V_i, 2i+1 → MLP_i, −2 → wte, −1 → wpe; N(0, 1/d);
    zeros elsewhere (A, the last MLP weight, every bias, W)."""
    d = S + T
    key = jax.random.key(3)
    params = fig8_transformer(S, T).init(key)
    assert sum(x.size for x in jax.tree.leaves(jax.eval_shape(fig8_transformer(10, 20).init, key))) == 8520
    keys = jax.random.split(key, 6)
    close = dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(params["wte"], jax.random.normal(keys[-2], (S, d)) / math.sqrt(d), **close)
    np.testing.assert_allclose(params["wpe"], jax.random.normal(keys[-1], (T, d)) / math.sqrt(d), **close)
    for l in range(2):
        layer = params[f"L{l + 1}"]
        np.testing.assert_allclose(layer["attn"]["V"][0], jax.random.normal(keys[2 * l], (d, d)) / math.sqrt(d), **close)
        w0 = jax.random.normal(jax.random.split(keys[2 * l + 1], 2)[0], (d, d)) / math.sqrt(d)
        np.testing.assert_allclose(layer["mlp"]["fc1"]["w"], w0, **close)
        assert np.all(np.asarray(layer["attn"]["A"]) == 0) and np.all(np.asarray(layer["mlp"]["fc2"]["w"]) == 0)
        assert all(np.all(np.asarray(layer["mlp"][fc]["b"]) == 0) for fc in ("fc1", "fc2"))
    assert np.all(np.asarray(params["W"]) == 0)
    emb = np.concatenate([np.asarray(params["wte"]).ravel(), np.asarray(params["wpe"]).ravel()])
    assert 0.8 / math.sqrt(d) < emb.std() < 1.2 / math.sqrt(d)


def test_mup_linear_scaling():
    """Stored weight × √(out/in), bias × √out; ReLU between linears, none after the last (the
    reference's MLP against the formula; the NNX preset equals the reference in float64)."""
    w1, b1 = jnp.arange(8.0).reshape(4, 2) - 3.0, jnp.array([0.5, -2.0])
    w2, b2 = jnp.ones((2, 3)), jnp.zeros(3)
    x = jnp.array([[1.0, -1.0, 2.0, 0.5]])
    out = mt._mlp([{"w": w1, "b": b1}, {"w": w2, "b": b2}], x)
    hidden = np.maximum(np.asarray(x) @ np.asarray(w1) * math.sqrt(2 / 4) + np.asarray(b1) * math.sqrt(2), 0)
    np.testing.assert_allclose(out, hidden @ np.ones((2, 3)) * math.sqrt(3 / 2), rtol=1e-6)


# ---------------------------------------------------------- efficient == naive
@pytest.mark.parametrize("heads", HEADS)
def test_catformer_efficient_equals_naive(heads):
    params = _random_catformer(1, heads)
    fast, naive, maps = _cat_all(CatFormer(S, T, heads), params, _tokens(2))
    assert np.std(np.asarray(fast)) > 0.1  # non-trivial logits
    np.testing.assert_allclose(fast, naive, rtol=1e-5, atol=1e-5)
    for attn in maps:  # rows are distributions over j ≤ i, and not uniform
        _check_rows(attn)
        assert np.asarray(attn)[..., -1, :].max() > 2.0 / T


def _grads_both(fast, naive):
    def loss(forward, p, batch):
        return _ce(forward(p, batch.tokens_BxT), batch)

    return jax.jit(lambda p, b: (jax.grad(loss, 1)(fast, p, b), jax.grad(loss, 1)(naive, p, b)))


def test_efficient_gradients_equal_naive(batch):
    """Training differentiates the efficient forward: its gradients match the naive ones."""
    params, fast, naive = _random_catformer(6, (2, 1)), CatFormer(S, T, (2, 1)).apply, catformer_logits_naive
    g_fast, g_naive = _grads_both(fast, naive)(params, batch)
    assert max(np.abs(np.asarray(g)).max() for g in jax.tree.leaves(g_fast)) > 1e-3
    chex.assert_trees_all_close(g_fast, g_naive, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------- causality
def _check_causal_jacobian(jac_TxDxTxD):
    """jac[i, :, j, :] = ∂stream_i/∂input_j: exactly 0 for j > i, non-zero at j = i and some j < i."""
    jac = np.asarray(jac_TxDxTxD)
    t = jac.shape[0]
    norms = np.abs(jac).sum(axis=(1, 3))  # [i, j]
    assert np.all(norms[np.triu_indices(t, k=1)] == 0.0), "a position depends on the future"
    assert np.all(np.diag(norms) > 0)
    assert all(norms[i, :i].max() > 0 for i in range(1, t))


@jax.jit
def _catformer_stream_jacobian(params, h0_TxD):
    return jax.jacrev(lambda h: catformer_stream(params, h[None])[0])(h0_TxD)


@pytest.mark.parametrize("heads", [(1, 1), (2, 1)])
def test_catformer_stream_is_causal(heads):
    s, t = 3, 5
    params = _random_catformer(8, heads, s, t)
    h0 = jnp.asarray(RNG(9).standard_normal((t, s + t)), jnp.float32)  # continuous embedding
    _check_causal_jacobian(_catformer_stream_jacobian(params, h0))


def _check_rows(attn):
    a = np.asarray(attn)
    t = a.shape[-1]
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    upper = np.triu(np.ones((t, t), bool), k=1)
    assert np.all(a[..., upper] == 0.0) and np.all(a >= 0)


def test_layer1_positional_attention_matches_full_attention_without_token_blocks():
    params = _random_catformer(16, (2, 1))
    a1 = params["A1"].at[:, :S, :].set(0.0).at[:, :, :S].set(0.0)  # positions only
    params = dict(params, A1=a1)
    model = CatFormer(S, T, (2, 1))
    pos = layer1_positional_attention(params)
    assert pos.shape == (2, T, T)
    _check_rows(pos)
    np.testing.assert_array_equal(model.positional_attention(params), pos)
    full = _cat_all(model, params, _tokens(17))[2][0]
    np.testing.assert_allclose(full, jnp.broadcast_to(pos, full.shape), rtol=1e-6, atol=1e-7)
    a1 = jnp.asarray(RNG(15).standard_normal((T, T)), jnp.float32)
    reduced = {"A1": a1, "A2": jnp.eye(S)}
    _check_rows(reduced_layer1_attention(reduced))
    np.testing.assert_array_equal(REDUCED.layer1_attention(reduced), reduced_layer1_attention(reduced))


# --------------------------------------------------------------------- zero init
@functools.partial(jax.jit, static_argnums=(0, 1))
def _value_and_grads(cat_model, fig8_model, cat_params, fig8_params, batch):
    return (
        jax.value_and_grad(cat_model.loss)(cat_params, batch),
        jax.value_and_grad(fig8_model.loss)(fig8_params, batch),
    )


@pytest.mark.parametrize("s,t", [(10, 20), (S, T)])
def test_zero_init_loss_is_log_s_and_only_w_learns(s, t, batch):
    if (s, t) != (S, T):
        batch = _np_tree_batch(2, [-1] + list(range(t - 2)), s, 16)
    cat_model, fig8 = CatFormer(s, t, (1, 1)), fig8_transformer(s, t)
    (cat_loss, cat_g), (fig8_loss, fig8_g) = _value_and_grads(
        cat_model, fig8, cat_model.init(KEY), fig8.init(jax.random.key(2)), batch
    )
    for loss, grads in [(cat_loss, cat_g), (fig8_loss, fig8_g)]:
        assert abs(float(loss) - math.log(s)) < 1e-6
        assert np.abs(np.asarray(grads["W"])).max() > 0
        others = {k: v for k, v in grads.items() if k != "W"}
        assert others and all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(others))
    assert set(cat_g) == {"A1", "A2", "W"} and set(fig8_g) == {"wte", "wpe", "L1", "L2", "W"}


# ------------------------------------------------------------------ reduced model
def test_reduced_at_zero_is_unigram_frequency():
    x = _tokens(18, b=5)
    probs = _reduced_probs({"A1": jnp.zeros((T, T)), "A2": jnp.zeros((S, S))}, x)
    assert probs.shape == (5, S)
    expected = np.stack([np.bincount(row, minlength=S) / T for row in np.asarray(x)])
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)


def test_reduced_init_and_shapes():
    params = ReducedModel(S, T, beta0=2.0).init(KEY)
    assert params["A1"].shape == (T, T) and params["A2"].shape == (S, S)
    np.testing.assert_array_equal(params["A1"], np.zeros((T, T)))
    np.testing.assert_array_equal(params["A2"], 2.0 * np.eye(S))
    probs = _reduced_probs(params, _tokens(19, b=5))
    assert probs.shape == (5, S)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs, reduced_probs(params, _tokens(19, b=5)))  # the config-free forward
    # init(beta0=...) overrides the config's β0
    np.testing.assert_array_equal(REDUCED.init(KEY, beta0=2.0)["A2"], params["A2"])


def test_reduced_eps_floor(batch):
    params = REDUCED.init(KEY)
    # every token is 0, so tokens 1..S−1 get f_b = 0 exactly
    tokens = jnp.zeros((16, T), jnp.int32)
    absent = icl_jax.Batch(tokens, jnp.full((16, S), 1.0 / S), jnp.ones(16, jnp.int32))
    for labels in ("soft", "hard"):
        assert np.isposinf(float(_reduced_loss(params, absent, 0.0, labels=labels)))
        assert np.isfinite(float(_reduced_loss(params, absent, 1e-3, labels=labels)))
        assert np.isfinite(float(_reduced_loss(params, batch, 1e-2, labels=labels)))  # sampled data, floored
    np.testing.assert_allclose(_reduced_loss(params, absent, 1e-3, labels="hard"), -math.log(1e-3), rtol=1e-5)
    probs = np.asarray(_reduced_probs(params, batch.tokens_BxT), np.float64)
    y = np.asarray(batch.label_probs_BxS, np.float64)
    manual = -(y * np.log(probs + 1e-2)).sum(-1).mean()
    np.testing.assert_allclose(_reduced_loss(params, batch, 1e-2, labels="soft"), manual, rtol=1e-5)


def test_reduced_hard_and_soft_labels_agree_in_expectation(big_batch):
    params = {"A1": jnp.asarray(RNG(22).standard_normal((T, T)), jnp.float32), "A2": 2.0 * jnp.eye(S)}
    eps = 1e-2
    probs = _reduced_probs(params, big_batch.tokens_BxT)
    soft = icl_jax.cross_entropy_probs(probs, big_batch.label_probs_BxS, eps=eps)
    hard = icl_jax.cross_entropy_probs(probs, jax.nn.one_hot(big_batch.label_B, S), eps=eps)
    diff = np.asarray(hard - soft, np.float64)  # paired: E[hard − soft | X] = 0
    se = diff.std() / math.sqrt(diff.size)
    assert abs(diff.mean()) < 5 * se + 1e-3


# --------------------------------------------------------- reference construction
def _count_estimator(dag, tokens_BxT, s):
    """Empirical conditional of x_j over non-root j whose parent token equals the query."""
    x = np.asarray(tokens_BxT)
    counts = np.zeros((len(x), s))
    for b, seq in enumerate(x):
        for j, p in enumerate(dag):
            if p >= 0 and seq[p] == seq[-1]:
                counts[b, seq[j]] += 1
    n = counts.sum(-1)
    return counts / np.maximum(n, 1)[:, None], n


def _reference_error(dag, tokens, s, c, gamma=2.0):
    est, n = _count_estimator(dag, tokens, s)
    assert n.min() > 0
    model = CatFormer(s, len(dag) + 1, (1, 1))
    params = model.reference_params(dag, c=c, beta=c, gamma=gamma)
    logits = _cat_apply(model, params, jnp.asarray(tokens, jnp.int32))
    return float(np.abs(np.asarray(logits) / gamma - est).max())


def test_reference_construction_hand_made():
    dag = [-1, 0, 1, 2, 3]  # chain, T = 6
    tokens = np.array([[0, 1, 0, 2, 1, 0], [2, 2, 2, 1, 0, 2], [1, 0, 1, 1, 2, 1]])
    est, _ = _count_estimator(dag, tokens, 3)
    np.testing.assert_allclose(est, [[0, 0.5, 0.5], [0, 1 / 3, 2 / 3], [1 / 3, 1 / 3, 1 / 3]])
    err10, err40 = (_reference_error(dag, tokens, 3, c) for c in (10.0, 40.0))
    assert err40 < err10 and err40 < 1e-4


@pytest.mark.parametrize("graph", ["chain", "random"])
def test_reference_construction_sampled(graph):
    s = 4
    dag = icl_jax.tree_task(graph, vocab_size=s, seq_len=12).graph.dag_array
    tokens = np.asarray(_np_tree_batch(23, dag, s, 96).tokens_BxT)
    _, n = _count_estimator(dag, tokens, s)
    tokens = tokens[n > 0][:32]
    assert len(tokens) == 32
    err10, err40 = (_reference_error(dag, tokens, s, c) for c in (10.0, 40.0))
    assert err40 < 0.1 * err10 and err40 < 1e-4


# ------------------------------------------------------------------ the protocol
PROTOCOL_MODELS = {
    "catformer": CatFormer(S, T, (2, 1)),
    "reduced": REDUCED,
    "induction": InductionModel(S, 3, 2),
    "induction_full": InductionModel(S, 3, 2, full=True),
}


@pytest.mark.parametrize("name", list(PROTOCOL_MODELS))
def test_every_model_follows_the_protocol(name, batch):
    """isinstance(model, Model); init(key) is a dict; apply is [B, S]; loss is the batch mean
    of per_example_loss for both label conventions; a bad ``labels`` is a ValueError."""
    model = PROTOCOL_MODELS[name]
    assert isinstance(model, Model)
    assert model.output in ("logits", "probs")
    params = model.init(jax.random.key(0))
    assert isinstance(params, dict) and params
    rng = RNG(40)  # away from the (often symmetric) init, so the per-example losses differ
    params = jax.tree.map(lambda x: x + 0.5 * jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)

    @jax.jit
    def run(p, b):
        per = {lab: (model.loss(p, b, labels=lab), model.per_example_loss(p, b, labels=lab)) for lab in LABELS}
        return model.apply(p, b.tokens_BxT), per

    out, losses = run(params, batch)
    b = batch.tokens_BxT.shape[0]
    assert out.shape == (b, S) and np.all(np.isfinite(out))
    if model.output == "probs":
        np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, rtol=1e-5)
    assert set(losses) == {"soft", "hard"}
    for lab, (mean, per) in losses.items():
        assert mean.shape == () and per.shape == (b,), lab
        assert np.all(np.isfinite(per)) and np.std(np.asarray(per)) > 0, lab
        np.testing.assert_allclose(mean, np.mean(np.asarray(per, np.float64)), rtol=1e-6, err_msg=lab)
    for fn in (model.loss, model.per_example_loss):
        with pytest.raises(ValueError, match="labels"):
            jax.eval_shape(lambda p, fn=fn: fn(p, batch, labels="sampled"), params)


# -------------------------------------------------------------------- bad input
def test_bad_configs():
    for kwargs, name in [
        (dict(vocab_size=1, seq_len=T), "vocab_size"),
        (dict(vocab_size=S, seq_len=1), "seq_len"),
        (dict(vocab_size=S, seq_len=T, heads=(1, 0)), "heads"),
        (dict(vocab_size=S, seq_len=T, heads=()), "heads"),
    ]:
        with pytest.raises(ValueError, match=name):
            CatFormer(**kwargs)
    with pytest.raises(ValueError, match="init"):
        CatFormer(S, T, init_dist="uniform")
    with pytest.raises(ValueError, match="seq_len"):
        ReducedModel(S, 1)
    with pytest.raises(ValueError, match="vocab_size"):
        ReducedModel(1, T)


def test_bad_catformer_inputs():
    model = CatFormer(S, T, (1, 1))
    params = jax.eval_shape(model.init, KEY)
    x = _tokens(24)

    def check(fn, p, xs, name):
        with pytest.raises(ValueError, match=name):
            jax.eval_shape(fn, p, xs)

    for fn in (model.apply, catformer_logits_naive, model.attention):
        check(fn, params, x[:, :-1], "tokens_BxT")
        check(fn, params, x[0], "tokens_BxT")
    f32 = jnp.float32
    check(model.apply, dict(params, A2=jax.ShapeDtypeStruct((1, 26, 25), f32)), x, "A2")
    check(model.apply, dict(params, W=jax.ShapeDtypeStruct((51, S), f32)), x, "W")
    check(model.apply, dict(params, W=jax.ShapeDtypeStruct((52,), f32)), x, "W")
    check(model.apply, {"A1": params["A1"], "A3": params["A2"], "W": params["W"]}, x, "params")
    check(model.apply, dict(params, wte=jax.ShapeDtypeStruct((S, S + T), f32)), x, "params")


def test_bad_reduced_inputs(batch):
    params = REDUCED.init(KEY)
    with pytest.raises(ValueError, match="tokens_BxT"):
        REDUCED.apply(params, _tokens(26, t=T + 1))
    with pytest.raises(ValueError, match="A1"):
        REDUCED.apply(dict(params, A1=jnp.zeros((T, T + 1))), _tokens(26))
    with pytest.raises(ValueError, match="labels"):
        REDUCED.loss(params, batch, labels="sampled")


# -------------------------------------------------------------------------- jit
def test_efficient_forward_traces_once():
    params, forward = _random_catformer(28, (1, 1)), CatFormer(S, T, (1, 1)).apply
    chex.clear_trace_counter()  # the counter is keyed by source and call stack

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(p, x):
        return forward(p, x)

    for i in range(3):
        out = f(jax.tree.map(lambda a, i=i: a * (1.0 + i), params), _tokens(30 + i))
        assert out.shape == (4, S)


def test_apply_refuses_params_of_another_shape():
    """A config whose shapes differ from the parameters' is caught at the model boundary."""
    params = CatFormer(5, 8).init(KEY)
    with pytest.raises(ValueError, match="params"):
        CatFormer(5, 9).apply(params, jnp.zeros((2, 9), jnp.int32))
    with pytest.raises(ValueError, match="params"):
        CatFormer(5, 8, (2, 1)).apply(params, jnp.zeros((2, 8), jnp.int32))
    reduced = ReducedModel(4, 6).init(KEY)
    with pytest.raises(ValueError, match="params"):
        ReducedModel(4, 7).apply(reduced, jnp.zeros((2, 7), jnp.int32))


@pytest.mark.parametrize("heads", [(1, 1), (3, 2)])
def test_two_layer_path_equals_the_general_path_in_float64(heads, batch):
    """The two-layer forward that never builds the layer-1 stream (catformer._logits_two_layer)
    equals the general stream-building path and the naive dense design in float64: logits and
    the gradient of the loss w.r.t. every parameter (rtol 1e-12)."""
    from icl_jax.models import catformer as cf

    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), _random_catformer(21, heads))
        b64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, batch)
        x = b64.tokens_BxT

        def general(p, tokens):
            layers, w = cf._split(p)
            return cf._logits_general(layers, w, tokens, S, T)

        forwards = {"two_layer": CatFormer(S, T, heads).apply, "general": general, "naive": catformer_logits_naive}
        logits = {k: f(params, x) for k, f in forwards.items()}
        grads = {k: jax.grad(lambda p, f=f: _ce(f(p, x), b64))(params) for k, f in forwards.items()}
        assert np.std(np.asarray(logits["two_layer"])) > 0.1
        assert min(np.abs(np.asarray(g)).max() for g in jax.tree.leaves(grads["two_layer"])) > 1e-6
        for other in ("general", "naive"):
            np.testing.assert_allclose(logits["two_layer"], logits[other], rtol=1e-12, atol=1e-12)
            for name in params:
                scale = np.abs(np.asarray(grads[other][name])).max()
                np.testing.assert_allclose(grads["two_layer"][name], grads[other][name], rtol=1e-12,
                                           atol=1e-12 * scale, err_msg=f"{other}: {name}")
