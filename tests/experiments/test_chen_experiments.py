"""Smoke tests of the Chen experiments at toy size: registration, outputs with the keys the
issue names, and one real learning check (the three-stage recipe selects {1,2})."""

import json

import jax
import numpy as np
import pytest

from icl_jax.experiments import get_experiment, list_experiments, run_experiment
from icl_jax.experiments.chen import chen_stages

NAMES = {"chen-three-stage-d2", "chen-three-stage-d3", "chen-cw-a", "chen-cwa", "chen-full-model",
         "chen-bigram", "chen-generalization"}
TINY = {"seq_len": 24, "num_train": 256, "test_size": 256, "record_every": 2, "seeds": 2}
CASES = {
    # stage I at lr 1 selects {1,2} within tens of steps even at toy size
    "chen-three-stage-d2": TINY | {"stage_steps": [30, 4, 4], "flow_size": 64, "theory_draws": 64},
    "chen-full-model": TINY | {"stage_steps": [6], "seeds": 1},
    "chen-generalization": TINY | {"stage_steps": [6, 4], "eval_lengths": [24], "eval_alphas": [1.0],
                                   "eval_size": 128, "seeds": 1},
}
KEYS = ("selected_subset", "subset_shares", "a", "final_loss", "baselines")


def test_every_chen_experiment_is_registered():
    assert NAMES <= {e.name for e in list_experiments()}
    for name in NAMES:
        exp = get_experiment(name)
        assert set(exp.quick) <= set(exp.defaults)
        chen_stages(exp.defaults)  # the recipe is a valid stage list


def test_stage_config_errors_name_the_argument():
    base = get_experiment("chen-cwa").defaults
    with pytest.raises(ValueError, match="stage_groups"):
        chen_stages({**base, "stage_groups": ["CX"]})
    with pytest.raises(ValueError, match="same length"):
        chen_stages({**base, "stage_steps": [1, 2]})


@pytest.mark.parametrize("name", sorted(CASES))
def test_experiment_runs_and_writes_outputs(name, tmp_path):
    overrides = {k: v for k, v in CASES[name].items() if k in get_experiment(name).defaults}
    metrics = run_experiment(name, tmp_path, quick=True, overrides=overrides, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["wall_seconds"] > 0 and (tmp_path / "config.json").exists()
    assert sorted(p.name for p in tmp_path.glob("*.png")), "no figure written"
    for key in KEYS:
        assert key in metrics, key
    assert set(metrics["final_loss"]) == {"prob_ce", "official"}
    shares = np.asarray(metrics["subset_shares"]["mean"])
    np.testing.assert_allclose(shares.sum(-1), 1.0, rtol=1e-5)
    assert len(metrics["a"]["mean"]) == len(metrics["subset_shares"]["steps"])
    assert metrics["selected_subset"] in metrics["subsets"]
    base = metrics["baselines"]
    assert base["oracle"]["loss"] < base["bayes"]["loss"] < base["uniform"]["loss"]
    for conv in ("prob_ce", "official"):
        assert np.all(np.isfinite(metrics["final_loss"][conv]["per_seed"]))
    if name == "chen-three-stage-d2":
        assert metrics["selected_subset_per_seed"] == ["110", "110"]
        assert metrics["final_shares"]["110"]["mean"] > 0.9
        _check_overlay_data_is_the_run_training_set(tmp_path, overrides)
    if name == "chen-generalization":
        assert set(metrics["by_length"]) == {"24"} and set(metrics["by_alpha"]) == {"1"}



def _check_overlay_data_is_the_run_training_set(out, overrides):
    """The stage-I theory overlay evaluates G_S on the training set of the run it explains
    (the engine's run_data of that seed, not a copy of the engine's key split): each seed's
    first recorded training loss is the initial loss on that set."""
    from icl_jax.experiments.chen import _loss_kw, _training_data, chen_model, chen_task

    exp = get_experiment("chen-three-stage-d2")
    config = exp.defaults | exp.quick | overrides
    task, model = chen_task(config), chen_model(config)
    first_losses = np.load(out / "run" / "trajectory.npz")["loss"][0, :, 0]
    seeds = json.loads((out / "metrics.json").read_text())["seeds"]
    assert len(seeds) == len(first_losses) == 2
    initial_loss = jax.jit(lambda data: model.loss(model.init(), model.window_stats(data), **_loss_kw(config)))
    for seed, first in zip(seeds, first_losses):
        data = _training_data(config, task, seed)
        assert data.tokens_BxT.shape == (config["num_train"], config["seq_len"])
        want = float(initial_loss(data))
        np.testing.assert_allclose(float(first), want, rtol=1e-5)
    assert first_losses[0] != first_losses[1]  # two seeds, two training sets
