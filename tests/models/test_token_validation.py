"""Tokens are validated at the model boundary (docs/models.md#the-model-protocol): every
model's ``apply`` (and the losses built on it) rejects non-integer, non-[B, T] and
out-of-range tokens with a ValueError naming ``tokens_BxT``; under ``jit`` the range check
is a checkify debug check, off unless the call is wrapped by ``icl_jax.models.checked``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax
from icl_jax.models import CatFormer, InductionModel, ReducedModel, Transformer, check_tokens, checked

S, T, B = 5, 6, 3
KEY = jax.random.key(0)

MODELS = {
    "catformer": CatFormer(S, T, (1, 1), init_dist="normal", init_scale=0.5),
    "reduced": ReducedModel(S, T, beta0=2.0),
    "induction": InductionModel(S, 2, 1),
    "transformer": Transformer(S, T, heads=(1,), width=8, mlp=False, layernorm=False),
}


def _tokens(seed=0, b=B, t=T):
    return jnp.asarray(np.random.default_rng(seed).integers(0, S, (b, t)).astype(np.int32))


def _bad_tokens():
    good = np.asarray(_tokens())
    high, low = good.copy(), good.copy()
    high[1, 2] = S
    low[0, 0] = -1
    return {
        "token = S": (high, rf"in \[0, {S - 1}\]; got values in \[\d, {S}\]"),
        "token = -1": (low, rf"in \[0, {S - 1}\]; got values in \[-1, \d\]"),
        "float tokens": (good.astype(np.float32), "got dtype float32"),
        "1-D tokens": (good[0], r"shape \[B, "),
    }


@pytest.fixture(scope="module")
def params():
    return {name: model.init(KEY) for name, model in MODELS.items()}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("case", list(_bad_tokens()))
def test_bad_tokens_raise_naming_the_argument(name, case, params):
    tokens, message = _bad_tokens()[case]
    model = MODELS[name]
    with pytest.raises(ValueError, match=rf"tokens_BxT.*{message}"):
        model.apply(params[name], tokens)
    batch = icl_jax.Batch(tokens, jnp.full((B, S), 1.0 / S), jnp.zeros((B,), jnp.int32))
    with pytest.raises(ValueError, match="tokens_BxT"):
        model.loss(params[name], batch)


@pytest.mark.parametrize("name", MODELS)
def test_jit_valid_tokens_match_eager_and_checked(name, params):
    model, p, x = MODELS[name], params[name], _tokens(1)
    eager = model.apply(p, x)
    jitted = jax.jit(model.apply)
    np.testing.assert_allclose(jitted(p, x), eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(checked(jitted)(p, x), eager, rtol=1e-5, atol=1e-6)
    # grad over params with concrete tokens: the eager check runs once, at trace time
    grads = jax.grad(lambda q: jnp.sum(model.apply(q, x)))(p)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", MODELS)
def test_checked_catches_out_of_range_tokens_under_jit(name, params):
    model, p = MODELS[name], params[name]
    high, _ = _bad_tokens()["token = S"]
    jitted = jax.jit(model.apply)
    jitted(p, high)  # plain jit: the range check is compiled out (no error, garbage output)
    with pytest.raises(ValueError, match=rf"tokens_BxT must be integer token ids in \[0, {S - 1}\]; got values in \[\d, {S}\]"):
        checked(jitted)(p, high)


def test_checked_under_vmap_and_shape_checks_under_jit():
    model = MODELS["reduced"]
    p = model.init(KEY)
    x = np.stack([np.asarray(_tokens(2)), np.asarray(_tokens(3))])  # [2, B, T]
    f = jax.jit(jax.vmap(model.apply, in_axes=(None, 0)))
    np.testing.assert_allclose(checked(f)(p, x), f(p, x))
    x[1, 0, 0] = -1
    with pytest.raises(ValueError, match=r"got values in \[-1, "):
        checked(f)(p, x)
    with pytest.raises(ValueError, match="got dtype float32"):  # static checks still raise while tracing
        jax.jit(model.apply)(p, jnp.zeros((B, T), jnp.float32))


def test_check_tokens_helper():
    x = np.zeros((2, 3), np.uint8)
    assert check_tokens(x, 2) is x and check_tokens(x, 2, seq_len=3) is x
    assert check_tokens([[0, 1]], 2).dtype.kind == "i"  # nested lists are converted
    for bad, match in [
        (np.zeros((2, 3), bool), "got dtype bool"),
        (np.zeros((2, 4), np.int32), r"shape \[B, 3\]"),
        (np.zeros((2, 0), np.int32), r"shape \[B, 3\]"),
        (np.zeros((2, 3, 1), np.int32), r"shape \[B, 3\]"),
        (np.full((2, 3), 2, np.int32), r"in \[0, 1\]; got values in \[2, 2\]"),
    ]:
        with pytest.raises(ValueError, match=f"queries.*{match}"):
            check_tokens(bad, 2, name="queries", seq_len=3)
    with pytest.raises(ValueError, match="traced"):
        check_tokens(x, 2, traced="eager")
    # traced="skip" adds nothing, even under checked
    f = jax.jit(lambda t: check_tokens(t, 2, traced="skip").sum())
    assert int(checked(f)(np.full((1, 3), 7, np.int32))) == 21
