"""Sweeps: vmapped/mapped runs reproduce single runs; sharding over fake CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

import icl_jax.engine as E

STAGES = (E.Stage(5, groups="A1", learning_rate="lr"),
          E.Stage(4, groups="A2", learning_rate=0.1, optimizer="adam", schedule="cosine"))


def _assert_trees(a, b, exact):
    if exact:
        chex.assert_trees_all_equal(a, b)
    else:
        chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vectorize, exact", [("map", True), ("vmap", False)])
def test_sweep_members_reproduce_single_runs(toy, fresh, fixed, vectorize, exact):
    # The exact mode is checked on the hardest case (on-device sampling); vmap on a fixed set.
    data = fresh if exact else fixed
    grid = {"lr": [0.3, 1.0]}
    sw = E.sweep(toy.loss, toy.init, STAGES, data, seeds=[4, 9], hparams=grid, metrics=toy.metrics,
                 record_every=2, vectorize=vectorize, progress=False)
    assert sw.loss.shape == (2, 2, 9) and sw.metrics["a1_norm"].shape == (2, 2, len(sw.record_steps))
    assert sw.params["A1"].shape == (2, 2, toy.T, toy.T)
    for g, lr in enumerate(grid["lr"]):
        for n, seed in enumerate([4, 9]):
            single = E.train(toy.loss, toy.init, STAGES, data, seed=seed, hparams={"lr": lr},
                             metrics=toy.metrics, record_every=2, progress=False)
            pick = lambda x: x[g, n]  # noqa: E731
            _assert_trees(pick(sw.loss), single.loss, exact)
            _assert_trees(jax.tree.map(pick, sw.params), single.params, exact)
            _assert_trees(jax.tree.map(pick, sw.metrics), single.metrics, exact)
            _assert_trees(jax.tree.map(pick, sw.state.opt_states), single.state.opt_states, exact)


def test_product_grid_and_grid_errors(toy, fixed):
    grid = E.product_grid(lr=[0.1, 1.0], scale=[0.5, 1.0, 2.0])
    np.testing.assert_array_equal(grid["lr"], [0.1] * 3 + [1.0] * 3)
    np.testing.assert_array_equal(grid["scale"], [0.5, 1.0, 2.0] * 2)
    stages = [E.Stage(2, learning_rate="lr")]
    with pytest.raises(ValueError, match=r"same length.*'lr': 2.*'scale': 3"):
        E.sweep(toy.loss, toy.init, stages, fixed, hparams={"lr": [0.1, 1.0], "scale": [1, 2, 3]}, progress=False)
    with pytest.raises(ValueError, match=r"hparams\['lr'\].*1-D"):
        E.sweep(toy.loss, toy.init, stages, fixed, hparams={"lr": 0.1}, progress=False)
    with pytest.raises(ValueError, match="names no hyperparameter"):
        E.sweep(toy.loss, toy.init, stages, fixed, hparams={"eta": [0.1]}, progress=False)
    with pytest.raises(ValueError, match="vectorize"):
        E.sweep(toy.loss, toy.init, stages, fixed, hparams={"lr": [0.1]}, vectorize="pmap", progress=False)
    with pytest.raises(ValueError, match=r"hparams\['lr'\].*non-empty"):
        E.sweep(toy.loss, toy.init, stages, fixed, hparams={"lr": []}, progress=False)
    with pytest.raises(ValueError, match=r"hparams\['lr'\]: must be numeric"):
        E.sweep(toy.loss, toy.init, stages, fixed, hparams={"lr": ["fast"]}, progress=False)
    with pytest.raises(ValueError, match="distinct"):
        E.sweep(toy.loss, toy.init, stages, fixed, seeds=[1, 1], hparams={"lr": [0.1]}, progress=False)


def test_sweep_non_finite_names_the_run():
    import jax.numpy as jnp

    loss = lambda p, b: jnp.log(p["w"]) + 0 * b  # noqa: E731
    init = lambda k, hp: {"w": jnp.asarray(1.0)}  # noqa: E731
    # lr 0.3 reaches w < 0 at step 3 (see the train test); lr 0.01 never does.
    with pytest.raises(E.NonFiniteLossError) as info:
        E.sweep(loss, init, [E.Stage(6, learning_rate="lr")], E.FixedDataset(jnp.zeros(())), seeds=2,
                hparams={"lr": [0.01, 0.3]}, progress=False)
    assert info.value.step == 3
    assert info.value.run["grid_index"] == 1 and info.value.run["lr"] == pytest.approx(0.3)


SHARDED = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.environ["TESTS_DIR"])
    import jax, numpy as np
    import icl_jax, icl_jax.engine as E
    from conftest import Toy
    assert jax.device_count() == 4, jax.devices()
    task = icl_jax.tree_task(icl_jax.chain_graph(6), vocab_size=4, alpha=0.5)
    toy = Toy(task=task, batch=task.sample(jax.random.key(7), 32))
    data = E.FreshSamples(lambda key, hp: task.sample(key, 32))
    stages = [E.Stage(3, groups="A1", learning_rate="lr"), E.Stage(3, groups="A2", learning_rate=0.1, optimizer="adam")]
    out = {}
    # vmap with fresh on-device samples; the exact sequential map on a fixed dataset.
    for vec, data in (("vmap", E.FreshSamples(lambda key, hp: task.sample(key, 32))), ("map", E.FixedDataset(toy.batch))):
        kw = dict(seeds=3, hparams={"lr": [0.3, 1.0]}, metrics=toy.metrics, record_every=3, vectorize=vec,
                  progress=False)
        seen = []
        cb = lambda info: seen.append(len(info["state_devices"]))
        sharded = E.sweep(toy.loss, toy.init, stages, data, callback=cb, **kw)
        single_device = E.sweep(toy.loss, toy.init, stages, data, devices=jax.devices()[:1], **kw)
        out[vec] = {
            "devices_used": seen,
            "num_devices": [sharded.num_devices, single_device.num_devices],
            "max_abs_loss": float(np.abs(sharded.loss - single_device.loss).max()),
            "max_abs_params": max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
                                  zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single_device.params))),
            "finite": bool(np.isfinite(sharded.loss).all()),
        }
    one = E.train(toy.loss, toy.init, stages, data, seed=2, hparams={"lr": 1.0}, metrics=toy.metrics,
                  record_every=3, progress=False)
    out["map"]["max_abs_vs_train"] = float(np.abs(sharded.loss[1, 2] - one.loss).max())
    print(json.dumps(out))
    """
)


def test_sharded_sweep_equals_unsharded_on_four_fake_devices():
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4",
               TESTS_DIR=os.path.dirname(__file__), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for vec, res in out.items():
        assert res["finite"]
        assert res["num_devices"] == [4, 1]
        assert set(res["devices_used"]) == {4}, res  # the run axis really lives on 4 devices
        # 6 runs padded to 8 and split 2 per device; equal to the unsharded sweep up to float32
        # rounding (XLA compiles the per-device program separately).
        assert res["max_abs_loss"] < 1e-5 and res["max_abs_params"] < 1e-4, (vec, res)
    assert out["map"]["max_abs_vs_train"] < 1e-5, out
