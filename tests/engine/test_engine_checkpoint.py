"""Checkpoints: an interrupted run resumes bit-identical; run folders hold config and metrics."""

import json

import chex
import numpy as np
import pytest

import icl_jax.engine as E

STAGES = (E.Stage(6, groups="A1", learning_rate=0.5, optimizer="adam"), E.Stage(5, learning_rate=0.2, momentum=0.9))


class Interrupt(Exception):
    pass


def _stop_after(chunk):
    def callback(info):
        if info["chunk"] == chunk:
            raise Interrupt

    return callback


def _assert_same(a, b):
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.record_steps, b.record_steps)
    chex.assert_trees_all_equal(a.metrics, b.metrics)
    chex.assert_trees_all_equal(a.state, b.state)


@pytest.mark.parametrize("runner", ["train", "sweep"])
def test_interrupted_run_resumes_bit_identical(toy, fresh, tmp_path, runner):
    if runner == "train":
        run = lambda **kw: E.train(toy.loss, toy.init, STAGES, fresh, seed=1, **kw)  # noqa: E731
    else:
        run = lambda **kw: E.sweep(toy.loss, toy.init, STAGES, fresh, seeds=2,  # noqa: E731
                                   hparams={"scale": [0.5, 1.0]}, **kw)
    common = dict(metrics=toy.metrics, record_every=2, chunk_steps=2, progress=False)
    reference = run(**common)
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        run(out_dir=out, checkpoint_every=2, callback=_stop_after(3), **common)
    _, meta = E.load_checkpoint(out / "checkpoint.npz")
    assert meta["chunks_done"] == 2  # the interrupt came after chunk 3; the last save was after chunk 2
    seen = []
    resumed = run(out_dir=out, resume=True, checkpoint_every=2, callback=lambda i: seen.append(i["chunk"]), **common)
    assert seen[0] == 3 and seen[-1] == 5  # it resumed after chunk 2 (of 5), not from scratch
    _assert_same(resumed, reference)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "checkpoint.npz", "metrics.json", "trajectory.npz", "params.npz"} <= files
    summary = json.loads((out / "metrics.json").read_text())
    np.testing.assert_allclose(summary["final_loss"], reference.final_loss, rtol=1e-6)
    traj = np.load(out / "trajectory.npz")
    np.testing.assert_array_equal(traj["loss"], reference.loss)
    np.testing.assert_array_equal(traj["metrics['a1_norm']"], reference.metrics["a1_norm"])


def test_resume_refuses_a_different_configuration(toy, fixed, tmp_path):
    E.train(toy.loss, toy.init, [E.Stage(3, learning_rate=0.1)], fixed, out_dir=tmp_path, progress=False)
    config_before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match=r"different run setup \(differs in: program\.stages"):
        E.train(toy.loss, toy.init, [E.Stage(3, learning_rate=0.2)], fixed, out_dir=tmp_path, resume=True,
                progress=False)
    assert (tmp_path / "config.json").read_text() == config_before  # the refused run left the folder alone
    with pytest.raises(ValueError, match="resume: needs out_dir"):
        E.train(toy.loss, toy.init, [E.Stage(3)], fixed, resume=True, progress=False)


def test_resume_of_a_finished_run_returns_it(toy, fixed, tmp_path):
    first = E.train(toy.loss, toy.init, [E.Stage(4, learning_rate=0.1)], fixed, out_dir=tmp_path, chunk_steps=2,
                    progress=False)
    calls = []
    again = E.train(toy.loss, toy.init, [E.Stage(4, learning_rate=0.1)], fixed, out_dir=tmp_path, chunk_steps=2,
                    resume=True, callback=calls.append, progress=False)
    assert calls == []
    np.testing.assert_array_equal(again.loss, first.loss)
    chex.assert_trees_all_equal(again.state, first.state)


def test_bfloat16_run_resumes(tmp_path):
    import jax.numpy as jnp

    loss = lambda p, b: jnp.sum((p["w"].astype(jnp.float32) - b) ** 2)  # noqa: E731
    init = lambda k, hp: {"w": jnp.ones(3, jnp.bfloat16)}  # noqa: E731
    args = (loss, init, [E.Stage(6, learning_rate=0.1)], E.FixedDataset(jnp.arange(3.0)))
    reference = E.train(*args, chunk_steps=2, progress=False)
    with pytest.raises(Interrupt):
        E.train(*args, chunk_steps=2, out_dir=tmp_path, callback=_stop_after(2), progress=False)
    resumed = E.train(*args, chunk_steps=2, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.params["w"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(resumed.params["w"], np.float32), np.asarray(reference.params["w"], np.float32))
    np.testing.assert_array_equal(resumed.loss, reference.loss)


def test_a_resumed_run_reports_the_training_time_of_every_call(toy, fixed, tmp_path):
    """A run trained across sessions reports its whole training-loop time: the checkpoint keeps
    the time of the calls that wrote it, a resume that trains adds its own, and a resume of a
    finished run (a re-evaluation) reports the checkpoint's time, adding nothing."""
    from icl_jax.engine import checkpoint as ckpt

    stages = [E.Stage(4, learning_rate=0.1)]
    kwargs = dict(out_dir=tmp_path, chunk_steps=2, progress=False)
    with pytest.raises(Interrupt):
        E.train(toy.loss, toy.init, stages, fixed, callback=_stop_after(1), **kwargs)
    arrays, meta = ckpt.load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 2 and meta["train_seconds"] > 0
    ckpt.save_npz(tmp_path / "checkpoint.npz", arrays, {**meta, "train_seconds": 1000.0})  # as if trained for long
    again = E.train(toy.loss, toy.init, stages, fixed, resume=True, **kwargs)
    assert 1000.0 < again.wall_seconds < 1000.0 + 60.0
    assert json.loads((tmp_path / "metrics.json").read_text())["wall_seconds"] == again.wall_seconds
    _, meta = ckpt.load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["step"] == 4 and 0 < meta["train_seconds"] - 1000.0 <= again.wall_seconds - 1000.0
    finished = E.train(toy.loss, toy.init, stages, fixed, resume=True, **kwargs)
    assert finished.wall_seconds == meta["train_seconds"]
