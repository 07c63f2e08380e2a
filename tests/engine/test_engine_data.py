"""Data sources: the open `DataSource` protocol, minibatches, and what a run trains on."""

import dataclasses
import importlib
import inspect
import subprocess
import sys
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax.engine as E

N = 16
ROWS = {"x": jnp.arange(N * 2, dtype=jnp.float32).reshape(N, 2), "row": jnp.arange(N)}


def _quadratic(params, batch):
    """A mean over the batch (so row order does not matter): ½‖w − x‖² averaged over rows."""
    return 0.5 * jnp.mean(jnp.sum((params["w"][None] - batch["x"]) ** 2, -1))


def _init(key, hp):
    return {"w": jax.random.normal(key, (2,))}


def _sample(key, hp):
    """A cheap sampler (compiles fast): float rows and integer labels."""
    k1, k2 = jax.random.split(key)
    return {"x": 3.0 * jax.random.normal(k1, (16, 2)), "row": jax.random.randint(k2, (16,), 0, 100)}


def test_run_keys_is_the_documented_split():
    # Pinned: changing the split would silently change every run (and old checkpoints' data).
    init_key, data_key = jax.random.split(jax.random.key(3))
    chex.assert_trees_all_equal(E.run_keys(3), (init_key, data_key))
    chex.assert_trees_all_equal(E.run_keys(np.int64(3)), E.run_keys(jax.random.key(3)), (init_key, data_key))
    with pytest.raises(ValueError, match="seed_or_key"):
        E.run_keys(1.5)


def test_minibatches_are_distinct_rows_that_change_every_step():
    data = E.MinibatchSamples(ROWS, batch_size=6)
    seen = []
    for step in range(4):
        batch = E.run_batch(data, 7, step)
        rows = np.asarray(batch["row"])
        assert rows.shape == (6,) and len(set(rows.tolist())) == 6  # without replacement within a batch
        chex.assert_trees_all_equal(batch["x"], ROWS["x"][rows])  # whole rows of the dataset
        chex.assert_trees_all_equal(batch, E.run_batch(data, 7, step))  # reproducible from the seed
        seen.append(tuple(rows.tolist()))
    assert len(set(seen)) == 4  # a new minibatch every step
    assert tuple(np.asarray(E.run_batch(data, 8, 0)["row"]).tolist()) != seen[0]  # and per seed
    chex.assert_trees_all_equal(E.run_data(data, 7), ROWS)  # the pool the minibatches come from
    with_replacement = E.MinibatchSamples(ROWS, batch_size=N, replace=True)
    repeats = [len(set(np.asarray(E.run_batch(with_replacement, 7, t)["row"]).tolist())) < N for t in range(3)]
    assert all(repeats)  # N draws from N rows with replacement (P(no repeat) = N!/N^N ≈ 1e-6)


def test_training_sees_the_minibatches_of_run_batch_also_in_sweeps():
    data = E.MinibatchSamples(ROWS, batch_size=4)
    loss = lambda p, b: jnp.sum(p["w"]) * 0 + jnp.mean(b["x"])  # noqa: E731  (reports the batch)
    single = E.train(loss, _init, [E.Stage(5)], data, seed=2, progress=False)
    expected = [float(jnp.mean(E.run_batch(data, 2, t)["x"])) for t in range(5)]
    np.testing.assert_array_equal(single.loss, np.asarray(expected, np.float32))
    sw = E.sweep(loss, _init, [E.Stage(5)], data, seeds=[1, 2], vectorize="map", progress=False)
    np.testing.assert_array_equal(sw.loss[0, 1], single.loss)  # each seed draws its own minibatches
    assert not np.array_equal(sw.loss[0, 0], sw.loss[0, 1])


def test_full_minibatch_equals_full_batch_gradient_descent():
    stages = [E.Stage(6, learning_rate=0.1), E.Stage(4, learning_rate=0.05, momentum=0.9)]
    full = E.train(_quadratic, _init, stages, E.MinibatchSamples(ROWS, N), seed=3, progress=False)
    gd = E.train(_quadratic, _init, stages, E.FixedDataset(ROWS), seed=3, progress=False)
    # The same rows in another order: a mean loss differs only by float32 summation order.
    np.testing.assert_allclose(full.loss, gd.loss, rtol=1e-5)
    chex.assert_trees_all_close(full.params, gd.params, rtol=1e-5, atol=1e-6)


def test_minibatch_settings_are_part_of_the_checkpoint_fingerprint(tmp_path):
    E.train(_quadratic, _init, [E.Stage(2)], E.MinibatchSamples(ROWS, 4), out_dir=tmp_path, progress=False)
    for other in (E.MinibatchSamples(ROWS, 5), E.MinibatchSamples(ROWS, 4, replace=True),
                  E.MinibatchSamples(jax.tree.map(lambda x: x[::-1], ROWS), 4)):
        with pytest.raises(ValueError, match="different run setup"):
            E.train(_quadratic, _init, [E.Stage(2)], other, out_dir=tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("batch_size", [0, N + 1, 2.5, True, -1])
def test_minibatch_size_is_validated(batch_size):
    with pytest.raises(ValueError, match=rf"batch_size: must be an integer in 1\.\.{N}"):
        E.MinibatchSamples(ROWS, batch_size)


def test_minibatch_dataset_needs_a_common_leading_axis():
    with pytest.raises(ValueError, match="common leading"):
        E.MinibatchSamples({"x": jnp.zeros((4, 2)), "y": jnp.zeros(3)}, 2)


@dataclasses.dataclass(frozen=True, eq=False)
class Cycle:
    """A user-defined source (no engine base class): step t trains on block t mod k of the rows."""

    dataset: Any
    block: int
    mode = "cycle"

    def prepare(self, data_key, hparams, dataset):
        return dataset

    def batch(self, prepared, data_key, step, hparams):
        k = N // self.block
        return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, (step % k) * self.block, self.block), prepared)


def test_a_user_defined_source_trains(tmp_path):
    data = Cycle(ROWS, block=4)
    assert isinstance(data, E.DataSource)
    reporter = lambda p, b: jnp.sum(p["w"]) * 0 + jnp.mean(b["x"])  # noqa: E731
    seen = E.train(reporter, _init, [E.Stage(6)], data, progress=False).loss
    blocks = np.asarray(ROWS["x"]).reshape(4, 8).mean(1)
    np.testing.assert_array_equal(seen, blocks[np.arange(6) % 4])
    chex.assert_trees_all_equal(E.run_batch(data, 0, 5), jax.tree.map(lambda x: x[4:8], ROWS))
    r = E.train(_quadratic, _init, [E.Stage(40, learning_rate=0.1)], data, out_dir=tmp_path, progress=False)
    params0 = _init(E.run_keys(0)[0], {})
    assert np.all(np.isfinite(r.loss)) and _quadratic(r.params, ROWS) < 0.7 * _quadratic(params0, ROWS)
    config = (tmp_path / "config.json").read_text()
    assert '"data_mode": "cycle"' in config and '"dataset_sha1": null' not in config  # hashed like FixedDataset


def test_objects_that_are_not_sources_are_refused():
    class NoBatch:
        mode, dataset = "x", None

        def prepare(self, data_key, hparams, dataset):
            return None

    for bad, missing in ((ROWS, "'mode', 'dataset', 'prepare', 'batch'"), (NoBatch(), "'batch'")):
        with pytest.raises(ValueError, match=rf"data: expected a data source.*missing \[{missing}\]"):
            E.train(_quadratic, _init, [E.Stage(2)], bad, progress=False)


def _checksum(batch):
    """A function of every bit of the batch, exact in any program (int32 sums wrap, so the
    reduction order does not matter), as a float loss value below 2^16."""
    total = jnp.zeros((), jnp.int32)
    for leaf in jax.tree.leaves(batch):
        bits = leaf if jnp.issubdtype(leaf.dtype, jnp.integer) else jax.lax.bitcast_convert_type(leaf, jnp.int32)
        weights = (jnp.arange(bits.size, dtype=jnp.int32) * 7919 + 1).reshape(bits.shape)
        total = total + jnp.sum(bits.astype(jnp.int32) * weights)
    return (total % 65536).astype(jnp.float32)


def test_run_data_and_run_batch_are_what_training_saw(toy):
    init = lambda k, hp: {"w": jnp.zeros(())}  # noqa: E731
    reporter = lambda p, b: p["w"] * 0 + _checksum(b)  # noqa: E731  (the loss reports the batch)
    common, fresh = E.CommonSamples(_sample), E.FreshSamples(_sample)
    seen = E.train(reporter, init, [E.Stage(3)], common, seed=4, progress=False).loss
    np.testing.assert_array_equal(seen, np.full(3, _checksum(E.run_data(common, 4))))
    seen = E.train(reporter, init, [E.Stage(3)], fresh, seed=4, progress=False).loss
    np.testing.assert_array_equal(seen, [_checksum(E.run_batch(fresh, 4, t)) for t in range(3)])
    assert len(set(seen.tolist())) == 3
    chex.assert_trees_all_equal(E.run_batch(common, 4, 2), E.run_data(common, 4))
    chex.assert_trees_all_equal(E.run_data(E.FixedDataset(toy.batch), 4), toy.batch)
    with pytest.raises(ValueError, match="draws new data at every step.*run_batch"):
        E.run_data(fresh, 4)


def test_run_data_reproduces_the_training_loss():
    data = E.CommonSamples(_sample)
    r = E.train(_quadratic, _init, [E.Stage(3, learning_rate=0.5)], data, seed=4, metrics=lambda p, t: p,
                progress=False)
    batch = E.run_data(data, 4)
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[0], r.metrics), _init(E.run_keys(4)[0], {}))
    for step in range(3):
        params = jax.tree.map(lambda x: x[step], r.metrics)  # the parameters before step `step`
        # Equal up to float32 rounding: XLA may fuse the loss inside the training scan differently.
        np.testing.assert_allclose(r.loss[step], jax.jit(_quadratic)(params, batch), rtol=1e-6)


def test_engine_import_is_light_and_train_is_the_function():
    code = "import sys, icl_jax.engine, icl_jax; assert 'diffrax' not in sys.modules, 'diffrax imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("train", "sweep"):  # no submodule of that name shadows (or is shadowed by) the function
        assert inspect.isfunction(getattr(E, name))
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"icl_jax.engine.{name}")
