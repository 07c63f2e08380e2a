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
    lag_match_attention,
    parent_attention,
    per_position_nll,
    prefix_matching_score,
    previous_token_score,
    repeated_random_tokens,
)
from icl_jax.models.transformer import Transformer


def _uniform_causal(t: int) -> np.ndarray:
    return np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]


def _selective_map(tokens, lag: int) -> np.ndarray:
    """Row t on the latest key s in [lag, t] with x_{s−lag} == x_{t+1−lag}, else on itself."""
    t = len(tokens)
    attn = np.zeros((t, t))
    for i in range(t):
        keys = [s for s in range(lag, i + 1) if i + 1 - lag >= 0 and tokens[s - lag] == tokens[i + 1 - lag]]
        attn[i, keys[-1] if keys else i] = 1.0
    return attn


def test_lag_match_attention_on_uniform_attention_closed_form():
    # tokens 0 0 1 0 under uniform causal attention (row t: 1/(t+1) on each key s <= t).
    # lag 1: rows 1 and 3 have matching keys ({1}: x_0 = x_1; {1, 2}: x_0 = x_1 = x_3) -> (1/2 + 2/4) / 2;
    # lag 2: only row 2 ({2}: x_0 = x_1) -> 1/3; lag 3: only row 3 ({3}: x_0 = x_1) -> 1/4.
    tokens = jnp.asarray([[0, 0, 1, 0]])
    attn = jnp.asarray(_uniform_causal(4)[None, None])
    got = [float(lag_match_attention(attn, tokens, lag)[0, 0]) for lag in (1, 2, 3)]
    np.testing.assert_allclose(got, [0.5, 1 / 3, 1 / 4], rtol=1e-6)
    assert float(lag_match_attention(attn, tokens, 4)[0, 0]) == 0.0  # no key has a context 4 back


def test_lag_match_attention_is_one_for_the_selective_head_of_its_lag_and_per_sequence():
    tokens = np.asarray([[0, 1, 2, 0, 1, 1, 2, 0, 2, 1, 0, 0, 2, 1], [2, 2, 0, 1, 0, 2, 1, 1, 0, 2, 2, 1, 0, 0]])
    b, t = tokens.shape
    on_zero = np.zeros((t, t))
    on_zero[:, 0] = 1.0  # key 0 has no token ℓ >= 1 back: never a match
    for lag in (1, 2, 3):
        heads = np.stack([np.stack([_selective_map(x, lag), on_zero]) for x in tokens])  # [B, 2, T, T]
        np.testing.assert_array_equal(np.asarray(lag_match_attention(jnp.asarray(heads), jnp.asarray(tokens), lag)),
                                      [[1.0, 0.0], [1.0, 0.0]])
    # one lag per sequence: sequence 0 is scored at lag 1, sequence 1 at lag 3
    heads = jnp.asarray(np.stack([_selective_map(tokens[0], 1), _selective_map(tokens[1], 3)])[:, None])
    per_seq = np.asarray(lag_match_attention(heads, jnp.asarray(tokens), jnp.asarray([1, 3])))
    np.testing.assert_array_equal(per_seq, [[1.0], [1.0]])
    # the lag-1 head scored at lag 2 sits on a lag-2 match only where the two contexts agree
    other = float(lag_match_attention(heads[:1], jnp.asarray(tokens[:1]), 2)[0, 0])
    assert 0.0 < other < 1.0
    traced = jax.jit(lag_match_attention)(heads, jnp.asarray(tokens), jnp.asarray([1, 3]))
    np.testing.assert_array_equal(np.asarray(traced), per_seq)


def test_lag_match_attention_rejects_bad_inputs():
    attn = jnp.asarray(_uniform_causal(4)[None, None])
    with pytest.raises(ValueError, match="lag must be an integer >= 1"):
        lag_match_attention(attn, jnp.zeros((1, 4), jnp.int32), 0)
    with pytest.raises(ValueError, match="tokens_BxT must be integer tokens of shape"):
        lag_match_attention(attn, jnp.zeros((1, 5), jnp.int32), 1)
    with pytest.raises(ValueError, match="tokens_BxT must be integer tokens of shape"):
        lag_match_attention(attn, jnp.zeros((1, 4)), 1)
    with pytest.raises(ValueError, match="attn_BxHxTxT must have shape"):
        lag_match_attention(attn[0], jnp.zeros((1, 4), jnp.int32), 1)


def test_lag_match_attention_scores_only_the_rows_asked_for():
    # tokens 0 0 1 0 under uniform causal attention: at lag 1 rows 1 and 3 have matching keys
    # (scores 1/2 and 2/4); the trigger task asks for its induction rows only
    tokens = jnp.asarray([[0, 0, 1, 0]])
    attn = jnp.asarray(_uniform_causal(4)[None, None])
    only_row_3 = jnp.asarray([[False, False, False, True]])
    assert float(lag_match_attention(attn, tokens, 1, only_row_3)[0, 0]) == pytest.approx(0.5)
    only_row_2 = jnp.asarray([[False, False, True, False]])  # no matching key there: nothing scored
    assert float(lag_match_attention(attn, tokens, 1, only_row_2)[0, 0]) == 0.0
    with pytest.raises(ValueError, match="rows_BxT must be a boolean mask"):
        lag_match_attention(attn, tokens, 1, jnp.ones((1, 4)))


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


def test_parent_attention_is_attention_on_the_lag_parent_of_the_predicted_token():
    """Row t predicts x_{t+1}, whose lag-ℓ parent is x_{t+1−ℓ}: a head on t + 1 − ℓ scores 1 at ℓ,
    the closed forms elsewhere, and a per-sequence lag scores each sequence at its own lag."""
    t = 9
    rng = np.random.default_rng(0)
    maps = rng.random((2, 3, t, t)) * np.tril(np.ones((t, t)))  # random causal maps
    maps = maps / maps.sum(-1, keepdims=True)
    for lag in (1, 2, 3):
        want = np.stack([[np.mean([maps[b, h, i, i + 1 - lag] for i in range(lag - 1, t)]) for h in range(3)]
                         for b in range(2)])
        np.testing.assert_allclose(np.asarray(parent_attention(jnp.asarray(maps), lag)), want, rtol=1e-6)
        if lag >= 2:  # the parent of x_{t+1} at ℓ is the token ℓ − 1 back of the query
            np.testing.assert_allclose(np.asarray(parent_attention(jnp.asarray(maps), lag)),
                                       np.asarray(lag_attention(jnp.asarray(maps), lag - 1)), rtol=1e-6)
    # a head on the query itself (ℓ = 1) and one on t − 1 (ℓ = 2; row 0 on itself)
    heads = jnp.asarray(np.stack([np.eye(t), _lag_map(t, 1)])[None])  # [1, 2, T, T]
    np.testing.assert_allclose(np.asarray(parent_attention(heads, 1)), [[1.0, 1 / t]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(parent_attention(heads, 2)), [[0.0, 1.0]], atol=1e-7)
    per_seq = np.asarray(parent_attention(jnp.concatenate([heads, heads]), jnp.asarray([1, 2])))
    np.testing.assert_allclose(per_seq, [[1.0, 1 / t], [0.0, 1.0]], atol=1e-7)
    traced = jax.jit(parent_attention)(jnp.concatenate([heads, heads]), jnp.asarray([1, 2]))
    np.testing.assert_allclose(np.asarray(traced), per_seq, atol=1e-7)
    # on common rows (first_row): the head on the query loses nothing, the t − 1 head's row 0
    # (all its mass on itself, the lag-1 parent) no longer counts
    np.testing.assert_allclose(np.asarray(parent_attention(heads, 1, first_row=2)), [[1.0, 0.0]], atol=1e-7)
    for lag in (1, 2, 3):
        want = np.stack([[np.mean([maps[b, h, i, i + 1 - lag] for i in range(max(lag - 1, 4), t)]) for h in range(3)]
                         for b in range(2)])
        np.testing.assert_allclose(np.asarray(parent_attention(jnp.asarray(maps), lag, first_row=4)), want, rtol=1e-6)
    with pytest.raises(ValueError, match="lag must be an integer >= 1"):
        parent_attention(heads, 0)
    with pytest.raises(ValueError, match="attn_BxHxTxT must have shape"):
        parent_attention(heads[0], 1)
    for bad in (-1, t, 1.5):
        with pytest.raises(ValueError, match=rf"first_row must be an integer in \[0, T − 1\] = \[0, {t - 1}\]"):
            parent_attention(heads, 1, first_row=bad)


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
