"""Gradient flow by ODE: Euler = gradient descent, first-order convergence, closed forms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax.engine as E


def _params0(toy):
    return toy.init(jax.random.key(3), {})


def test_explicit_euler_is_gradient_descent_bit_for_bit(toy, fixed):
    eta, n = 0.25, 12  # powers of two: the flow times k·η are exact in float32
    stages = [E.Stage(8, groups="A1", learning_rate=eta), E.Stage(n - 8, groups="A2", learning_rate=eta)]
    params0 = _params0(toy)
    gd = E.train(toy.loss, params0, stages, fixed, progress=False)
    flow = E.gradient_flow(toy.loss, params0, toy.batch, stages, ts=[0.0, 8 * eta, n * eta], solver="euler", dt0=eta)
    np.testing.assert_array_equal(flow.ts, [0.0, 2.0, 3.0])
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[0], flow.params), params0)
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[-1], flow.params), gd.params)
    assert flow.num_steps == (8, 4)
    np.testing.assert_allclose(flow.loss[-1], toy.loss(gd.params, toy.batch), rtol=1e-6)


def test_gradient_descent_converges_to_the_flow_at_first_order(toy, fixed):
    T = 2.0
    params0 = _params0(toy)
    exact = E.gradient_flow(toy.loss, params0, toy.batch, T, ts=[T], rtol=1e-7, atol=1e-9)
    etas, gaps = [], []
    for factor in (4, 8, 16, 32):
        stages = E.refine_stages([E.Stage(1, learning_rate=T)], factor)
        gd = E.train(toy.loss, params0, stages, fixed, progress=False)
        gap = np.sqrt(sum(float(jnp.sum((gd.params[k] - exact.params[k][-1]) ** 2)) for k in params0))
        etas.append(T / factor)
        gaps.append(gap)
    slope = np.polyfit(np.log(etas), np.log(gaps), 1)[0]
    assert 0.85 < slope < 1.15, (slope, gaps)
    assert gaps[-1] < gaps[0] / 6


def test_tsit5_matches_the_closed_form_of_a_quadratic_flow():
    # L = ½ θᵀHθ: θ(t) = exp(−tH) θ0, here with H diagonal (a stiff-ish spread of rates).
    h = jnp.asarray([0.1, 1.0, 5.0])
    loss = lambda p, b: 0.5 * jnp.sum(h * p["w"] ** 2)  # noqa: E731
    ts = np.linspace(0, 3, 7)
    flow = E.gradient_flow(loss, {"w": jnp.ones(3)}, None, 3.0, ts=ts, rtol=1e-7, atol=1e-9)
    h = np.asarray(h)
    np.testing.assert_allclose(flow.params["w"], np.exp(-np.outer(ts, h)), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(flow.loss, 0.5 * np.sum(h * np.exp(-2 * np.outer(ts, h)), -1), rtol=5e-5)


def test_staged_flow_moves_only_its_groups(toy):
    params0 = _params0(toy)
    stages = [E.Stage(4, groups="A1", learning_rate=0.5), E.Stage(2, groups="A2", learning_rate=1.0)]
    flow = E.gradient_flow(toy.loss, params0, toy.batch, stages, ts=[0.0, 1.0, 2.0, 3.0, 4.0],
                           metrics=lambda p, t: jnp.sum(p["A2"]))
    assert flow.stage_times == ((0.0, 2.0), (2.0, 4.0))
    a1, a2 = flow.params["A1"], flow.params["A2"]
    for i in (1, 2):
        np.testing.assert_array_equal(a2[i], params0["A2"])
    np.testing.assert_array_equal(a1[3], a1[2])
    np.testing.assert_array_equal(a1[4], a1[2])
    assert not np.allclose(a1[2], params0["A1"]) and not np.allclose(a2[4], params0["A2"])
    assert np.all(np.diff(flow.loss) < 0)  # a gradient flow never increases the loss
    np.testing.assert_allclose(flow.metrics, np.sum(a2, axis=(1, 2)), rtol=1e-5)


def test_save_times_on_inexact_stage_boundaries(toy):
    # 0.1·3 = 0.30000000000000004 in floats: the boundary must still be saved once.
    stages = [E.Stage(1, groups="A1", learning_rate=0.1), E.Stage(2, groups="A2", learning_rate=0.1)]
    flow = E.gradient_flow(toy.loss, _params0(toy), toy.batch, stages, num_saves=4,
                           metrics=lambda p, t: jnp.sum(p["A1"]))
    np.testing.assert_allclose(flow.ts, [0.0, 0.1, 0.2, 0.3])
    assert flow.params["A1"].shape[0] == flow.loss.shape[0] == flow.metrics.shape[0] == 4
    np.testing.assert_array_equal(flow.params["A1"][2], flow.params["A1"][3])  # A1 frozen after t = 0.1
    flow = E.gradient_flow(toy.loss, _params0(toy), toy.batch, [E.Stage(3, learning_rate=0.1)], ts=[0.0, 0.3])
    assert flow.params["A1"].shape[0] == 2


def test_flow_vmaps_over_initial_parameters(toy):
    inits = jax.vmap(lambda k: toy.init(k, {}))(jax.random.split(jax.random.key(1), 3))
    flow = E.gradient_flow_fn(toy.loss, 1.0, [0.5, 1.0], _params0(toy), rtol=1e-6, atol=1e-8)
    params_t, steps, ok = jax.jit(jax.vmap(flow, in_axes=(0, None)))(inits, toy.batch)
    assert bool(jnp.all(ok)) and params_t["A1"].shape == (3, 2, toy.T, toy.T)
    for i in range(3):
        single = E.gradient_flow(toy.loss, jax.tree.map(lambda x: x[i], inits), toy.batch, 1.0, ts=[0.5, 1.0])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], params_t), single.params, rtol=1e-4, atol=1e-5)


def test_flow_errors(toy):
    p0 = _params0(toy)
    with pytest.raises(ValueError, match="plain SGD"):
        E.gradient_flow(toy.loss, p0, toy.batch, [E.Stage(3, optimizer="adam")])
    with pytest.raises(ValueError, match=r"ts: save times must lie in \[0, 2.0\]"):
        E.gradient_flow(toy.loss, p0, toy.batch, 2.0, ts=[0.0, 3.0])
    with pytest.raises(ValueError, match="dt0"):
        E.gradient_flow(toy.loss, p0, toy.batch, 2.0, solver="euler")
    with pytest.raises(ValueError, match="unknown parameter group"):
        E.gradient_flow(toy.loss, p0, toy.batch, [E.Stage(2, groups="W")])
    with pytest.raises(RuntimeError, match="max_steps"):
        E.gradient_flow(toy.loss, p0, toy.batch, 50.0, ts=[50.0], max_steps=3)
