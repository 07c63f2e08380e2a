"""Progress measures (icl_jax.analysis.progress) on attention maps and predictions whose values
are known in closed form, and on a real transformer's maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_jax.analysis.progress import (
    icl_score,
    kl_to_strategies,
    lag_attention,
    per_position_nll,
    prefix_matching_score,
    previous_token_score,
    repeated_random_tokens,
)
from icl_jax.models.transformer import Transformer


def _lag_map(t: int, lag: int) -> np.ndarray:
    """Row i puts all its weight on i − lag (on 0 where i < lag)."""
    attn = np.zeros((t, t))
    for i in range(t):
        attn[i, max(i - lag, 0)] = 1.0
    return attn


def _uniform_causal(t: int) -> np.ndarray:
    return np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]


def test_lag_and_previous_token_scores_on_known_maps():
    t = 12
    heads = np.stack([_lag_map(t, 1), _lag_map(t, 2), _uniform_causal(t)])[None]  # [1, 3, T, T]
    score = np.asarray(previous_token_score(jnp.asarray(heads)))
    want_uniform = np.mean([1 / (i + 1) for i in range(1, t)])  # row i spreads 1/(i+1) over i+1 keys
    # the lag-2 map's row 1 has no token two back and sits on token 0, its previous token
    np.testing.assert_allclose(score, [1.0, 1 / (t - 1), want_uniform], rtol=1e-6)
    per_seq = np.asarray(lag_attention(jnp.asarray(np.concatenate([heads, heads])), jnp.array([1, 2])))
    np.testing.assert_allclose(per_seq[0], [1.0, 1 / (t - 1), want_uniform], rtol=1e-6)
    np.testing.assert_allclose(per_seq[1, :2], [0.0, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="attn_BxHxTxT must have shape"):
        previous_token_score(jnp.ones((3, 4, 4)))
    with pytest.raises(ValueError, match="lag must be an integer >= 1"):
        lag_attention(jnp.asarray(heads), 0)


def test_prefix_matching_scores_one_for_an_induction_head_and_zero_for_a_previous_token_head():
    n = 5
    t = 2 * n
    induction = np.zeros((t, t))
    for i in range(t):
        induction[i, i - n + 1 if i >= n else i] = 1.0
    heads = jnp.asarray(np.stack([induction, _lag_map(t, 1)])[None])
    np.testing.assert_allclose(prefix_matching_score(heads, n), [1.0, 0.0])
    tokens = repeated_random_tokens(jax.random.key(0), 7, n, 3)
    np.testing.assert_array_equal(tokens[:, :n], tokens[:, n:])
    with pytest.raises(ValueError, match="2 × length = 8"):
        prefix_matching_score(heads, 4)


def test_scores_run_on_a_transformer_inside_jit():
    model = Transformer(5, 8, heads=(1, 2), width=8, positions="relative", mlp=False)
    params = model.init(jax.random.key(0))
    tokens = repeated_random_tokens(jax.random.key(1), 5, 4, 6)

    @jax.jit
    def scores(p):
        maps = model.attention(p, tokens)
        return previous_token_score(maps[0]), prefix_matching_score(maps[1], 4)

    prev, prefix = scores(params)
    assert prev.shape == (1,) and prefix.shape == (2,)
    assert np.all((np.asarray(prev) > 0) & (np.asarray(prev) < 1)) and np.all(np.asarray(prefix) > 0)


def test_icl_score_and_per_position_nll():
    loss = jnp.broadcast_to(jnp.linspace(2.0, 1.0, 11), (4, 11))  # falls linearly over 11 positions
    assert float(icl_score(loss, early=0.0, late=1.0)) == pytest.approx(-1.0)
    assert float(icl_score(loss)) == pytest.approx(1.1 - 1.9)  # positions 1 and 9
    with pytest.raises(ValueError, match="0 <= early < late <= 1"):
        icl_score(loss, early=0.5, late=0.5)
    probs = jnp.asarray([[[0.25, 0.75], [1.0, 0.0]]])
    np.testing.assert_allclose(per_position_nll(probs, jnp.asarray([[1, 0]])), [[-np.log(0.75), 0.0]], rtol=1e-6)
    assert np.isfinite(float(per_position_nll(probs, jnp.asarray([[1, 1]]), eps=1e-6)[0, 1]))


def test_kl_to_strategies_closed_form():
    model = jnp.asarray([[[0.5, 0.5], [0.9, 0.1]]])
    strat = {"same": model, "point": jnp.asarray([[[1.0, 0.0], [1.0, 0.0]]])}
    kl = kl_to_strategies(model, strat)
    assert float(kl["same"]) == pytest.approx(0.0, abs=1e-7)
    assert float(kl["point"]) == pytest.approx((np.log(2) + np.log(1 / 0.9)) / 2, rel=1e-6)
    assert float(kl_to_strategies(model, strat, positions=slice(1, None))["point"]) == pytest.approx(np.log(1 / 0.9), rel=1e-6)
