"""The ``zhou-ctw`` experiment (docs/peer-tasks.md#variable-order-chains) at toy size: both depths
train, no model beats CTW beyond the test set's noise, the reference losses are ordered as
Bayes optimality says, the figure is written and the run reloads."""

import json

import numpy as np
import pytest

import icl_jax as ij
import icl_jax.experiments.peers.ctw_depth as ctw_depth  # registers zhou-ctw
from icl_jax.experiments import get_experiment, run_experiment

TOY = {"seq_len": 16, "steps": 60, "record_every": 20, "test_size": 128, "batch_size": 16, "seeds": 2, "width": 16,
       "heads": 2, "mlp_width": 16, "learning_rate": 1e-2}


def test_ctw_depth_experiment_trains_both_depths_against_the_references(tmp_path):
    m = run_experiment("zhou-ctw", tmp_path, preset="quick", overrides=TOY, progress=False)
    depth = get_experiment("zhou-ctw").quick.depth
    ngram = m["ngram_loss"]
    assert sorted(ngram) == [f"order{o}" for o in range(depth + 1)]
    # uniform is log 2 exactly; the oracle knows the tree, CTW (Bayes for the prior) knows less,
    # every in-context n-gram strategy is one of the predictors CTW beats on average
    assert m["uniform_loss"] == np.log(2.0)
    assert m["oracle_loss"] < m["ctw"]["loss"] < m["best_ngram"]["loss"] == min(ngram.values())
    assert ngram["order0"] < m["uniform_loss"]
    assert ngram[f"order{m['best_ngram']['order']}"] == m["best_ngram"]["loss"]
    for name in ("layers1", "layers2"):
        r = m[name]
        loss = np.asarray(r["trajectory"]["test_loss"])
        assert r["trajectory"]["steps"] == [0, 20, 40, 60] and loss[-1] < loss[0] - 0.05  # it learns
        # no seed beats CTW by more than the test set's noise on the paired gap
        gap, se = np.asarray(r["gap_to_ctw"]["per_seed"]), np.asarray(r["gap_to_ctw_se"])
        assert np.all(se > 0) and np.all(gap > -3 * se)
        assert np.allclose(gap, np.asarray(r["final_test_loss"]["per_seed"]) - m["ctw"]["loss"])
        assert min(r["kl_to_ctw"]["per_seed"]) > 0 and len(r["icl_score"]["per_seed"]) == 2
    assert "attention_only2" not in m  # the quick preset leaves it out
    assert (tmp_path / "zhou-ctw_loss.png").is_file() and (tmp_path / "run" / "layers1").is_dir()
    run = ij.load_run(tmp_path)
    assert run.model.heads == (2, 2) and run.model.mlp and run.seeds == (0, 1)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seq_len"] == 16


def test_ctw_depth_models_and_presets():
    official, quick = get_experiment("zhou-ctw").official, get_experiment("zhou-ctw").quick
    assert official.attention_only and official.depth == quick.depth == 3
    names = ctw_depth._names(official)
    assert names == ["layers1", "layers2", "attention_only2"] and ctw_depth._names(quick) == ["layers1", "layers2"]
    models = {n: ctw_depth._model(official, n) for n in names}
    assert [m.heads for m in models.values()] == [(4,), (4, 4), (4, 4)]
    assert [m.mlp for m in models.values()] == [True, True, False]
    assert ctw_depth._build(official).model == models[ctw_depth.MAIN]


@pytest.mark.parametrize("changes,match", [({"depth": 0}, "depth"), ({"record_every": 10, "steps": 5}, "record_every"),
                                           ({"seq_len": 3}, "seq_len"), ({"width": 30}, "width")])
def test_ctw_depth_experiment_refuses_bad_settings_before_writing(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        run_experiment("zhou-ctw", tmp_path / "x", preset="quick", overrides=changes, progress=False)
    assert not (tmp_path / "x").exists()
