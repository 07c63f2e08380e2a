"""Head interventions (icl_jax.models.interventions): ablation and clamping against independent
constructions (zeroed output / score weights), their validation, and an intervention held for
one engine stage only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax import engine
from icl_jax.models.interventions import Interventions
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.switching import SwitchingChainTask

F64 = jnp.float64


@pytest.fixture(scope="module")
def model_and_tokens():
    with jax.enable_x64():
        model = Transformer(4, 7, heads=(2, 2), width=8, positions="relative")
        params = jax.tree.map(lambda x: x.astype(F64), model.init(jax.random.key(0)))
        params["L1"]["attn"]["rel"] = jax.random.normal(jax.random.key(2), params["L1"]["attn"]["rel"].shape, F64)
        tokens = jax.random.randint(jax.random.key(1), (5, 7), 0, 4)
    return model, params, tokens


def test_ablating_a_head_equals_zeroing_its_output_projection(model_and_tokens):
    model, params, tokens = model_and_tokens
    with jax.enable_x64():
        got = model.apply_all(params, tokens, interventions=Interventions(ablate=((1, 1), (2, 0))))
        zeroed = jax.tree.map(lambda x: x, params)
        zeroed["L1"]["attn"]["o"] = params["L1"]["attn"]["o"].at[1].set(0.0)
        zeroed["L2"]["attn"]["o"] = params["L2"]["attn"]["o"].at[0].set(0.0)
        np.testing.assert_allclose(got, model.apply_all(zeroed, tokens), rtol=1e-12, atol=1e-12)
        assert not np.allclose(got, model.apply_all(params, tokens))
        # the last-position path agrees with every position
        last = model.apply(params, tokens, interventions=Interventions(ablate=((2, 0),)))
        np.testing.assert_allclose(last, model.apply_all(params, tokens, interventions=Interventions(ablate=((2, 0),)))[:, -1],
                                   rtol=1e-10)


def test_clamping_to_uniform_equals_zero_scores_and_previous_token_is_exact(model_and_tokens):
    model, params, tokens = model_and_tokens
    with jax.enable_x64():
        flat = jax.tree.map(lambda x: x, params)
        flat["L1"]["attn"]["q"] = params["L1"]["attn"]["q"].at[0].set(0.0)  # scores 0 → uniform softmax
        flat["L1"]["attn"]["rel"] = params["L1"]["attn"]["rel"].at[0].set(0.0)
        got = model.apply_all(params, tokens, interventions=Interventions(clamp=((1, 0, "uniform"),)))
        np.testing.assert_allclose(got, model.apply_all(flat, tokens), rtol=1e-12, atol=1e-12)
        maps = model.attention(params, tokens, interventions=Interventions(clamp=((2, 1, "previous_token"), (1, 1, "self"))))
    prev = np.zeros((7, 7))
    prev[np.arange(7), np.maximum(np.arange(7) - 1, 0)] = 1.0
    np.testing.assert_array_equal(np.asarray(maps[1][:, 1]), np.broadcast_to(prev, (5, 7, 7)))
    np.testing.assert_array_equal(np.asarray(maps[0][:, 1]), np.broadcast_to(np.eye(7), (5, 7, 7)))
    # the last-position path clamps its one query row the same way
    with jax.enable_x64():
        clamp = Interventions(clamp=((2, 0, "previous_token"), (1, 0, "uniform")))
        np.testing.assert_allclose(model.apply(params, tokens, interventions=clamp),
                                   model.apply_all(params, tokens, interventions=clamp)[:, -1], rtol=1e-10)


@pytest.mark.parametrize("kw,match", [({"ablate": ((3, 0),)}, "\\(3, 0\\) is not a head of this model"),
                                      ({"clamp": ((1, 2, "self"),)}, "\\(1, 2\\) is not a head"),
                                      ({"clamp": ((1, 0, "induction"),)}, "pattern must be one of"),
                                      ({"clamp": ((1, 0, "self"), (1, 0, "uniform"))}, "clamped twice"),
                                      ({"ablate": (1, 0)}, "every entry must be a 2-tuple"),
                                      ({"ablate": ((True, 0),)}, "\\(True, 0\\) is not a head")])
def test_bad_interventions_are_refused(model_and_tokens, kw, match):
    model, params, tokens = model_and_tokens
    with jax.enable_x64(), pytest.raises(ValueError, match=match):
        model.apply_all(params, tokens, interventions=Interventions(**kw))


def test_a_head_ablated_for_one_stage_receives_no_update_then_trains():
    """Stage 1 ablates head (1, 0): its q, k, v, o get zero gradients and stay put (Adam, no
    decay); stage 2 lifts the ablation and they move. One compiled engine run."""
    task = SwitchingChainTask(8, p=0.8, q=0.6)
    model = Transformer(2, 8, heads=(2,), width=8, positions="relative")
    ablate = Interventions(ablate=((1, 0),))
    stages = [engine.Stage(5, optimizer="adam", learning_rate=1e-2, loss_kwargs={"interventions": ablate}),
              engine.Stage(5, optimizer="adam", learning_rate=1e-2)]
    with pytest.raises(ValueError, match="Stage.loss_kwargs: must be a mapping"):
        engine.Stage(5, loss_kwargs=[1, 2])
    init = model.init(jax.random.key(0))
    data = engine.FreshSamples(lambda key, hp: task.sample_sequences(key, 16))
    after1 = engine.train(model.sequence_loss, init, stages[:1], data, seed=0, progress=False).params
    after2 = engine.train(model.sequence_loss, init, stages, data, seed=0, progress=False).params
    for name in ("q", "k", "v", "o"):
        head0 = lambda p: np.asarray(p["L1"]["attn"][name][0])  # noqa: E731
        np.testing.assert_array_equal(head0(after1), head0(init))
        assert not np.allclose(head0(after2), head0(init))
        assert not np.allclose(np.asarray(after1["L1"]["attn"][name][1]), np.asarray(init["L1"]["attn"][name][1]))
    bad = [engine.Stage(5, loss_kwargs={"interventions": Interventions(ablate=((2, 0),))})]
    with pytest.raises(ValueError, match="\\(2, 0\\) is not a head"):
        engine.train(model.sequence_loss, init, bad, data, seed=0, progress=False)
