"""Staged, chunked training: layout, optimisers, data modes, errors, recompiles."""

import chex
import numpy as np
import jax
import jax.numpy as jnp
import optax
import pytest

import icl_jax.engine as E


def _manual(loss, params, batch_at, stages_tx):
    """Hand-written optax loop: the reference the scanned, masked engine must match."""
    losses = []
    step = 0
    for tx, n in stages_tx:
        state = tx.init(params)
        for _ in range(n):
            value, grads = jax.value_and_grad(loss)(params, batch_at(step))
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            losses.append(float(value))
            step += 1
    return params, np.asarray(losses)


def test_staged_training_matches_hand_written_optax_loop(toy, fixed):
    stages = [
        E.Stage(5, groups="A1", learning_rate=0.7, weight_decay=0.01),
        E.Stage(4, groups="A2", learning_rate=0.05, optimizer="adamw", schedule="cosine", weight_decay=0.1),
        E.Stage(3, learning_rate=0.2, momentum=0.9),
    ]
    result = E.train(toy.loss, toy.init, stages, fixed, seed=2, chunk_steps=2, progress=False)
    params0 = toy.init(E.run_keys(2)[0], {})

    def only(group, tx):
        return optax.multi_transform({"on": tx, "off": optax.set_to_zero()},
                                     {k: "on" if k in group else "off" for k in params0})

    reference = [
        (only({"A1"}, optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.7))), 5),
        (only({"A2"}, optax.adamw(optax.cosine_decay_schedule(0.05, 4), weight_decay=0.1)), 4),
        (optax.sgd(0.2, momentum=0.9), 3),
    ]
    params, losses = _manual(toy.loss, params0, lambda t: toy.batch, reference)
    np.testing.assert_allclose(result.loss, losses, rtol=2e-6)
    chex.assert_trees_all_close(result.params, params, rtol=2e-5, atol=1e-7)


def test_frozen_groups_do_not_move_and_each_stage_has_fresh_state(toy, fixed):
    metrics = lambda p, t: {"A1": p["A1"], "A2": p["A2"]}  # noqa: E731
    stages = [E.Stage(4, groups=["A1"], optimizer="adam", learning_rate=0.1),
              E.Stage(4, groups=["A2"], optimizer="adam", learning_rate=0.1)]
    r = E.train(toy.loss, toy.init, stages, fixed, metrics=metrics, record_every=4, progress=False)
    a1, a2 = r.metrics["A1"], r.metrics["A2"]  # records at steps 0, 4, 8
    np.testing.assert_array_equal(r.record_steps, [0, 4, 8])
    np.testing.assert_array_equal(a2[0], a2[1])  # A2 frozen in stage 1
    np.testing.assert_array_equal(a1[1], a1[2])  # A1 frozen in stage 2
    assert not np.allclose(a1[0], a1[1]) and not np.allclose(a2[1], a2[2])
    counts = [s.inner_states["train"].inner_state[0].count for s in r.state.opt_states]
    np.testing.assert_array_equal(counts, [4, 4])  # Adam's count restarts at each stage


def test_record_layout_with_stages_not_multiple_of_interval(toy, fixed):
    stages = [E.Stage(7, groups="A1", learning_rate=0.1), E.Stage(5, groups="A2", learning_rate=0.1)]
    r = E.train(toy.loss, toy.init, stages, fixed, metrics=toy.metrics, record_every=3, chunk_steps=3,
                progress=False)
    expected = [0, 3, 6, 7, 10, 12]  # each stage start, every 3 steps within it, and the end
    np.testing.assert_array_equal(r.record_steps, expected)
    np.testing.assert_array_equal(r.metrics["step"], expected)
    assert r.loss.shape == (12,) and r.stage_starts == (0, 7)
    # The record at the end is the final parameters.
    np.testing.assert_allclose(r.metrics["a1_norm"][-1], np.linalg.norm(r.params["A1"]), rtol=1e-6)
    # Chunking is a host detail: one big chunk gives the same run.
    r2 = E.train(toy.loss, toy.init, stages, fixed, metrics=toy.metrics, record_every=3, chunk_steps=1000,
                 progress=False)
    np.testing.assert_allclose(r2.loss, r.loss, rtol=1e-6)


def test_cosine_schedule_against_closed_form():
    # Linear loss: the gradient is constant, so the parameter path integrates the schedule.
    loss = lambda p, b: jnp.sum(p["w"])  # noqa: E731
    n, lr = 10, 0.5
    r = E.train(loss, lambda k, hp: {"w": jnp.zeros(())}, [E.Stage(n, learning_rate=lr, schedule="cosine")],
                E.FixedDataset(jnp.zeros(())), metrics=lambda p, t: p["w"], progress=False)
    t = np.arange(n)
    expected = -np.concatenate([[0.0], np.cumsum(lr * 0.5 * (1 + np.cos(np.pi * t / n)))])
    np.testing.assert_allclose(r.metrics, expected, rtol=1e-6)


def test_data_modes_draw_what_they_promise(toy):
    # A loss that ignores the parameters reports which batch each step saw.
    def loss(params, batch):
        return jnp.sum(params["w"]) * 0 + jnp.mean(batch.tokens_BxT.astype(jnp.float32))

    def sample(key, hp):
        return toy.task.sample(key, 8)

    def batch_mean(b):
        return float(jnp.mean(b.tokens_BxT.astype(jnp.float32)))

    init = lambda k, hp: {"w": jnp.zeros(())}  # noqa: E731
    stages = [E.Stage(4)]
    _, data_key = E.run_keys(5)  # run_data / run_batch are checked in test_engine_data
    fresh = E.train(loss, init, stages, E.FreshSamples(sample), seed=5, progress=False).loss
    np.testing.assert_allclose(fresh, [batch_mean(sample(jax.random.fold_in(data_key, t), {})) for t in range(4)])
    assert len(set(fresh.tolist())) > 1
    common = E.train(loss, init, stages, E.CommonSamples(sample), seed=5, progress=False).loss
    np.testing.assert_allclose(common, batch_mean(sample(data_key, {})))
    fixed = E.train(loss, init, stages, E.FixedDataset(toy.batch), seed=5, progress=False).loss
    np.testing.assert_allclose(fixed, batch_mean(toy.batch))


def test_hyperparameters_reach_init_and_stages(toy, fixed):
    named = E.train(toy.loss, toy.init, [E.Stage(3, learning_rate="lr", weight_decay="wd")], fixed,
                    hparams={"lr": 0.3, "wd": 0.05, "scale": 2.0}, progress=False)
    literal = E.train(toy.loss, lambda k, hp: toy.init(k, {"scale": 2.0}),
                      [E.Stage(3, learning_rate=0.3, weight_decay=0.05)], fixed, progress=False)
    no_decay = E.train(toy.loss, lambda k, hp: toy.init(k, {"scale": 2.0}), [E.Stage(3, learning_rate=0.3)], fixed,
                       progress=False)
    np.testing.assert_allclose(named.loss, literal.loss, rtol=1e-6)
    chex.assert_trees_all_close(named.params, literal.params, rtol=1e-6, atol=1e-7)
    assert not np.allclose(named.params["A1"], no_decay.params["A1"], rtol=1e-4, atol=0)


def test_parameters_that_blow_up_on_the_last_step_are_caught(tmp_path):
    loss = lambda p, b: jnp.sum(p["w"]) + 0 * b  # noqa: E731
    init = lambda k, hp: {"w": jnp.ones(1)}  # noqa: E731
    # w = 1, −1e38, −2e38, −3e38 are the losses before steps 0..3 (finite); step 3's update gives −inf.
    with pytest.raises(E.NonFiniteLossError, match="non-finite parameters at step 4") as info:
        E.train(loss, init, [E.Stage(4, learning_rate=1e38)], E.FixedDataset(jnp.zeros(())), progress=False)
    assert info.value.step == 4
    with pytest.raises(E.NonFiniteLossError) as info:
        E.train(loss, init, [E.Stage(8, learning_rate=1e38)], E.FixedDataset(jnp.zeros(())), chunk_steps=4,
                out_dir=tmp_path, progress=False)
    assert info.value.checkpoint is None and not (tmp_path / "checkpoint.npz").exists()


def test_custom_optimizer_state_starts_at_its_stage(toy, fixed):
    # A transformation whose state is the parameters it was initialised with.
    def remember(schedule):
        return optax.GradientTransformation(lambda p: p, lambda u, s, p=None: (jax.tree.map(jnp.zeros_like, u), s))

    stages = [E.Stage(3, groups="A1", learning_rate=0.5), E.Stage(2, optimizer=remember)]
    r = E.train(toy.loss, toy.init, stages, fixed, metrics=lambda p, t: p, record_every=3, progress=False)
    remembered = r.state.opt_states[1].inner_states["train"].inner_state
    np.testing.assert_array_equal(remembered["A1"], r.metrics["A1"][1])  # params at step 3, not step 0
    with pytest.raises(ValueError, match="callable optimizer must include its own weight decay"):
        E.Stage(2, optimizer=remember, weight_decay=0.1)


def test_config_values_may_be_numpy_scalars(toy, fixed, tmp_path):
    stage = E.Stage(np.int64(2), learning_rate=np.float32(0.1))
    assert stage.steps == 2 and isinstance(stage.learning_rate, float)
    E.train(toy.loss, toy.init, [stage], fixed, out_dir=tmp_path, config={"lr": np.float32(0.1)}, progress=False)
    assert (tmp_path / "config.json").exists()


def test_integer_parameters_are_refused(fixed, toy):
    init = lambda k, hp: {"A1": jnp.zeros((2, 2)), "count": jnp.zeros((), jnp.int32)}  # noqa: E731
    with pytest.raises(ValueError, match=r"params\['count'\]: has dtype int32"):
        E.train(lambda p, b: jnp.sum(p["A1"]), init, [E.Stage(2)], fixed, progress=False)


def test_non_finite_loss_stops_and_reports(tmp_path):
    # log(w) with w driven below zero by a constant gradient: NaN at a known step.
    loss = lambda p, b: jnp.log(p["w"]) - 0 * b + 0.0 * jnp.sum(p["w"])  # noqa: E731
    init = lambda k, hp: {"w": jnp.asarray(1.0)}  # noqa: E731
    # d/dw log w = 1/w; sgd: w ← w − η/w. With η = 0.3: 1 → 0.7 → 0.271 → −0.836 (log NaN at step 3).
    with pytest.raises(E.NonFiniteLossError) as info:
        E.train(loss, init, [E.Stage(8, learning_rate=0.3)], E.FixedDataset(jnp.zeros(())), seed=4,
                chunk_steps=2, out_dir=tmp_path, progress=False)
    err = info.value
    assert err.step == 3 and err.run["seed"] == 4
    assert err.checkpoint == str(tmp_path / "checkpoint.npz")
    assert "step 3" in str(err) and "seed" in str(err)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(stages=[E.Stage(2, groups="W")]), r"unknown parameter group.*\['W'\].*\['A1', 'A2'\]"),
        (dict(stages=[E.Stage(2, learning_rate="eta")]), "names no hyperparameter"),
        (dict(stages=[]), "at least one Stage"),
        (dict(record_every=0), "record_every"),
        (dict(hparams={"lr": [0.1, 0.2]}), "scalar hyperparameters"),
    ],
)
def test_config_errors(toy, fixed, kwargs, match):
    args = dict(stages=[E.Stage(2)], progress=False)
    args.update(kwargs)
    stages = args.pop("stages")
    with pytest.raises(ValueError, match=match):
        E.train(toy.loss, toy.init, stages, fixed, **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "Stage.steps"),
        (dict(steps=3, optimizer="lion"), "Stage.optimizer"),
        (dict(steps=3, schedule="linear"), "Stage.schedule"),
        (dict(steps=3, learning_rate=-1.0), "Stage.learning_rate"),
        (dict(steps=3, weight_decay=-1.0), "Stage.weight_decay"),
    ],
)
def test_stage_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.Stage(**kwargs)


def test_repeated_train_calls_compile_once(toy, fixed):
    chex.clear_trace_counter()
    # The loss must be traced exactly three times: by the config-time shape check and as the
    # step of the single-run program (the first `train`; it cannot trace fewer), then as the
    # step of the vmapped program (the sweep). A retrace for a new seed or learning rate, or a
    # second trace for the 4 × 3 grid, is a fourth trace and raises. (The sequential "map"
    # mode, the CPU default, traces its program twice: once for the output buffers' shapes,
    # once as the loop body; it is compiled once.)
    loss = chex.assert_max_traces(toy.loss, n=3)
    stages = [E.Stage(4, learning_rate="lr")]
    for seed, lr in [(0, 0.1), (1, 0.2), (2, 0.3), (9, 0.5)]:
        E.train(loss, toy.init, stages, fixed, seed=seed, hparams={"lr": lr}, progress=False)
    E.sweep(loss, toy.init, stages, fixed, seeds=3, hparams={"lr": [0.1, 0.2, 0.3, 0.4]}, progress=False,
            vectorize="vmap")


def test_refine_stages_keeps_flow_time():
    stages = [E.Stage(10, groups="A1", learning_rate=0.5), E.Stage(4, learning_rate=2.0)]
    fine = E.refine_stages(stages, 4)
    assert [s.steps for s in fine] == [40, 16]
    assert [E.flow_duration(s) for s in fine] == [E.flow_duration(s) for s in stages] == [5.0, 8.0]
    with pytest.raises(ValueError, match="plain SGD"):
        E.flow_duration(E.Stage(3, optimizer="adam"))
