"""The Flax NNX Transformer: Fig. 8 preset vs the plain-dict reference (tests/models/fig8_reference.py), forwards, causality,
seed vmaps, engine training and config validation (tiny shapes, one core)."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax
from icl_jax import engine
from icl_jax.losses import cross_entropy_logits
import fig8_reference as mt  # the pre-NNX plain-dict Fig. 8 model, kept in tests as the reference
from icl_jax.models.protocol import Model
from icl_jax.models.transformer import Transformer, fig8_transformer

S, T, B, N = 5, 8, 3, 16
TASK = icl_jax.tree_task("chain", vocab_size=S, seq_len=T, alpha=1.0)

CONFIGS = {
    "default": Transformer(S, T),  # qk, absolute, mlp, pre-LN, standard blocks, untied
    "qk-relative-tied-noln": Transformer(S, T, heads=(2, 1), positions="relative", width=12, mlp_width=7,
                                         tied_readout=True, layernorm=False),
    "bilinear-disentangled-nomlp": Transformer(S, T, heads=(1, 1, 1), positions="disentangled",
                                               attention_kind="bilinear", mlp=False, layernorm=False),
    "bilinear-relative-composed-ln": Transformer(S, T, heads=(2, 2), positions="relative", attention_kind="bilinear",
                                                 block="composed", mlp_init="mup", zero_scores=True),
    "fig8": fig8_transformer(S, T),  # bilinear, absolute, composed, mup, no LN, zero inits
}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _call(model, method, params, x):
    """model.<method>(params, x), compiled once per (model, method, shapes)."""
    return getattr(model, method)(params, x)


@pytest.fixture(scope="module")
def batch():
    """One sampled batch of the chain task, shared (the sampler compiles once per batch size)."""
    return TASK.sample(jax.random.key(3), N)


def _tokens(seed=0, b=B):
    return jax.random.randint(jax.random.key(seed), (b, T), 0, S)


def _random_params(model, seed=0, scale=0.3):
    """Params in ``model.init``'s layout with every leaf scale·N(0, 1), so the zero-initialised
    A, W, last MLP weights and biases are non-zero too (numpy draws: nothing to compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), shapes)


def _to_old(params: dict, num_layers: int) -> dict:
    """Fig. 8 preset params (or gradients) → the old mlp_transformer dict."""
    out = {"wte": params["wte"], "wpe": params["wpe"], "W": params["W"]}
    for l in range(num_layers):
        layer = params[f"L{l + 1}"]
        out[f"L{l + 1}"] = {
            "A": layer["attn"]["A"][0],
            "V": layer["attn"]["V"][0],
            "mlp": [dict(layer["mlp"][f"fc{k}"]) for k in (1, 2)],
        }
    return out


# ------------------------------------------------------------------ Fig. 8 vs the old model
@pytest.mark.parametrize("num_layers", [3])
def test_fig8_init_matches_old(num_layers):
    model = fig8_transformer(S, T, num_layers)
    key = jax.random.key(7)
    new = _to_old(model.init(key), num_layers)
    old_init = jax.jit(mt.mlp_transformer_init, static_argnums=1)  # init is compiled; eager draws differ by 1 ulp
    old = old_init(key, mt.MLPTransformer(S, T, num_layers))
    # same shapes and the same draws, bit for bit (hence the same distribution and zero pattern)
    chex.assert_trees_all_equal(new, old)
    zeros = jax.tree.map(lambda x: bool(jnp.all(x == 0)), new)
    assert zeros["W"] and not zeros["wte"] and not zeros["wpe"]
    for l in range(num_layers):
        layer = zeros[f"L{l + 1}"]
        assert layer["A"] and not layer["V"]
        assert [(lin["w"], lin["b"]) for lin in layer["mlp"]] == [(False, True), (True, True)]


@functools.partial(jax.jit, static_argnums=0)
def _fig8_vs_old(model, params, batch):
    """Logits, attention, loss and gradients of the preset and of the old model (mapped)."""
    n, tokens = model.num_layers, batch.tokens_BxT
    old_params = _to_old(params, n)

    def old_loss(p):
        return jnp.mean(cross_entropy_logits(mt.mlp_transformer_logits(p, tokens), batch.label_probs_BxS))

    new_loss, new_grad = jax.value_and_grad(model.loss)(params, batch)
    old_loss, old_grad = jax.value_and_grad(old_loss)(old_params)
    new = {"logits": model.apply(params, tokens), "naive": model.apply_all(params, tokens)[:, -1],
           "maps": [m[:, 0] for m in model.attention(params, tokens)], "loss": new_loss, "grad": _to_old(new_grad, n)}
    old = {"logits": mt.mlp_transformer_logits(old_params, tokens),
           "naive": mt.mlp_transformer_logits_naive(old_params, tokens),
           "maps": mt.mlp_transformer_attention(old_params, tokens), "loss": old_loss, "grad": old_grad}
    return new, old


@pytest.mark.parametrize("num_layers", [2])
def test_fig8_logits_and_grads_match_old_in_float64(num_layers, batch):
    model = fig8_transformer(S, T, num_layers)
    params32 = _random_params(model, seed=num_layers)  # A, W, the last MLP weights, biases: all non-zero
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params32)
        batch = dataclasses.replace(batch, label_probs_BxS=jnp.asarray(batch.label_probs_BxS, jnp.float64))
        new, old = _fig8_vs_old(model, params, batch)
        assert new["logits"].dtype == jnp.float64 and old["logits"].dtype == jnp.float64
        chex.assert_trees_all_close(new, old, atol=1e-10, rtol=1e-10)
    assert all(np.abs(np.asarray(g)).max() > 1e-4 for g in jax.tree.leaves(old["grad"]))  # every gradient counts


# ------------------------------------------------------------------ forwards
@functools.partial(jax.jit, static_argnums=0)
def _forwards(model, params, tokens):
    return model.apply(params, tokens), model.apply_all(params, tokens), model.attention(params, tokens)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_apply_is_last_row_of_apply_all(name):
    model = CONFIGS[name]
    params = _random_params(model)
    logits, every, maps = _forwards(model, params, _tokens())
    chex.assert_shape([logits, every], [(B, S), (B, T, S)])
    chex.assert_trees_all_close(logits, every[:, -1], atol=1e-5, rtol=1e-5)
    assert [m.shape for m in maps] == [(B, h, T, T) for h in model.heads]
    chex.assert_trees_all_close([m.sum(-1) for m in maps], [jnp.ones((B, h, T)) for h in model.heads], atol=1e-5)
    assert all(float(jnp.max(jnp.triu(m, 1))) == 0.0 for m in maps)


@functools.partial(jax.jit, static_argnums=0)
def _input_jacobian(model, params, x0_1xTxD):
    """max |∂ logits_i / ∂ x0_j| over (output, input) coordinates, as a [T, T] array (i, j)."""
    jac = jax.jacrev(lambda x: model.apply_embedded(params, x))(x0_1xTxD)[0, :, :, 0]  # [T, S, T, d]
    return jnp.max(jnp.abs(jac), axis=(1, 3))


@pytest.mark.parametrize("name", ["qk-relative-tied-noln", "bilinear-relative-composed-ln", "fig8"])
def test_causality_jacobian(name):
    model = CONFIGS[name]
    params = _random_params(model)
    x0 = model.embed(params, _tokens(b=1)) + 0.1 * jax.random.normal(jax.random.key(5), (1, T, model.d))
    norms = np.asarray(_input_jacobian(model, params, x0))
    future = np.triu(np.ones((T, T), bool), 1)
    assert np.all(norms[future] == 0.0)  # exactly zero, not merely small
    assert np.all(norms[~future] > 0)  # logits at i depend on every j <= i


# ------------------------------------------------------------------ seeds, engine, tracing
def test_vmap_over_seeds():
    model = CONFIGS["fig8"]
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.tree.map(np.asarray, jax.vmap(model.init)(keys))  # numpy: no eager op per leaf below
    shifted = jax.tree.map(lambda x: x + np.float32(0.1), batched)  # non-trivial logits for the zero init
    tokens = _tokens()
    logits = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(shifted, tokens)
    for r, k in enumerate(keys):
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[r], batched), model.init(k))
        single = _call(model, "apply", jax.tree.map(lambda x: x[r], shifted), tokens)
        chex.assert_trees_all_close(logits[r], single, atol=1e-6, rtol=1e-6)
    assert not np.allclose(logits[0], logits[1])


# Training through engine.sweep over 2 seeds (loss decreases for both) is the README example,
# executed by tests/test_readme.py::test_readme_transformer_example.


def test_staged_readout_only_freezes_other_groups():
    model = fig8_transformer(S, T)
    init = _random_params(model)
    result = engine.train(model.loss, init, [engine.Stage(3, groups=("W",), learning_rate=0.3)],
                          engine.FreshSamples(lambda key, hp: TASK.sample(key, 64)), seed=0, progress=False)
    final = result.params
    assert set(final) == {"wte", "wpe", "L1", "L2", "W"}
    for group in ("wte", "wpe", "L1", "L2"):
        chex.assert_trees_all_equal(final[group], init[group])
    assert not np.array_equal(final["W"], init["W"])


def test_jitted_apply_traces_once():
    model = CONFIGS["default"]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def logits(params, tokens):
        return model.apply(params, tokens)

    a = logits(_random_params(model, seed=1), _tokens())
    b = logits(_random_params(model), _tokens(1))
    assert not np.allclose(a, b)


@functools.partial(jax.jit, static_argnums=0)
def _losses(model, params, batch):
    return (model.apply(params, batch.tokens_BxT), model.per_example_loss(params, batch),
            model.per_example_loss(params, batch, labels="hard"), model.loss(params, batch, labels="hard"))


def test_hard_and_soft_losses(batch):
    model = CONFIGS["fig8"]
    assert isinstance(model, Model) and model.output == "logits"
    params = _random_params(model)
    logits, soft, hard, mean_hard = _losses(model, params, batch)
    logp = jax.nn.log_softmax(logits)
    chex.assert_trees_all_close(hard, -logp[jnp.arange(N), batch.label_B], atol=1e-6)
    chex.assert_trees_all_close(soft, -jnp.sum(batch.label_probs_BxS * logp, -1), atol=1e-6)
    chex.assert_trees_all_close(mean_hard, hard.mean(), atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        model.per_example_loss(params, batch, labels="sampled")


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, name", [
    (dict(vocab_size=1), "vocab_size"),
    (dict(seq_len=1), "seq_len"),
    (dict(seq_len=2.5), "seq_len"),
    (dict(heads=()), "heads"),
    (dict(heads=(1, 0)), "heads"),
    (dict(width=0), "width"),
    (dict(width=13, heads=(2,)), "width"),
    (dict(width=10, positions="disentangled"), "width"),
    (dict(mlp_width=0), "mlp_width"),
    (dict(positions="rotary"), "positions"),
    (dict(attention_kind="linear"), "attention_kind"),
    (dict(block="parallel"), "block"),
    (dict(mlp_init="xavier"), "mlp_init"),
    (dict(mlp=1), "mlp"),
    (dict(layernorm="yes"), "layernorm"),
    (dict(tied_readout=True, positions="disentangled"), "tied_readout"),
    (dict(tied_readout=True, zero_readout=True), "zero_readout"),
    (dict(zero_scores=None), "zero_scores"),
])
def test_bad_config_raises(kwargs, name):
    base = dict(vocab_size=S, seq_len=T)
    with pytest.raises(ValueError, match=name):
        Transformer(**{**base, **kwargs})


def test_bad_inputs_raise():
    model = CONFIGS["fig8"]
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match="num_layers"):
        fig8_transformer(S, T, 0)
    with pytest.raises(ValueError, match="tokens_BxT"):
        model.apply(params, jnp.zeros((2, T + 1), jnp.int32))
    with pytest.raises(ValueError, match="params"):
        model.apply({k: v for k, v in params.items() if k != "W"}, _tokens())
    with pytest.raises(ValueError, match="params"):
        fig8_transformer(S, T, 3).apply(params, _tokens())
    with pytest.raises(ValueError, match="x0_BxTxD"):
        model.apply_embedded(params, jnp.zeros((1, T, model.d + 1)))


def test_per_position_loss_ends_with_the_last_position_loss():
    """On a SequenceBatch the loss at every position; its last column is per_example_loss on the
    Batch the same key draws (the same sequences), for soft and hard labels."""
    from icl_jax.tasks.switching import SwitchingChainTask

    task = SwitchingChainTask(8, p=0.7, q=0.4)
    model = Transformer(2, 8, heads=(1, 1), width=8, positions="relative")
    params = model.init(jax.random.key(0))
    key = jax.random.key(1)
    seqs, batch = task.sample_sequences(key, 16), task.sample(key, 16)
    for labels in ("soft", "hard"):
        per_pos = model.per_position_loss(params, seqs, labels=labels)
        assert per_pos.shape == (16, 8)
        np.testing.assert_allclose(per_pos[:, -1], model.per_example_loss(params, batch, labels=labels), rtol=1e-5)
    assert float(model.sequence_loss(params, seqs)) == pytest.approx(float(jnp.mean(model.per_position_loss(params, seqs))))
