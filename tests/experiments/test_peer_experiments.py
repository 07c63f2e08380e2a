"""Peer experiments (docs/peer-tasks.md) at toy size: they train, report what the closed forms
bound, write their figures and reload."""

import json

import numpy as np
import pytest

import icl_jax as ij
from icl_jax.experiments import get_experiment, run_experiment


def test_switching_experiment_trains_both_depths_and_reloads(tmp_path):
    overrides = {"seq_len": 16, "steps": 60, "record_every": 20, "test_size": 64, "batch_size": 16, "seeds": 2,
                 "learning_rate": 1e-2}
    m = run_experiment("makkuva-switching", tmp_path, preset="quick", overrides=overrides, progress=False)
    task = ij.SwitchingChainTask(16, p=0.8, q=0.6)
    assert m["entropy_rate"] == pytest.approx(float(task.entropy_rate())) and m["unigram_loss"] == pytest.approx(
        float(task.unigram_loss()))
    for layers in (1, 2):
        r = m[f"layers{layers}"]
        loss = np.asarray(r["trajectory"]["test_loss"])
        assert r["trajectory"]["steps"] == [0, 20, 40, 60] and loss[-1] < loss[0] - 0.05  # it learns
        # no predictor beats the entropy rate by more than the test set's noise
        assert min(r["final_test_loss"]["per_seed"]) > m["entropy_rate"] - 0.03
    assert (tmp_path / "makkuva-switching_loss.png").is_file() and (tmp_path / "run" / "layers1").is_dir()
    run = ij.load_run(tmp_path)
    assert run.model.heads == (1, 1) and run.seeds == (0, 1)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seq_len"] == 16


@pytest.mark.parametrize("changes,match", [({"q": 1.5}, "q"), ({"record_every": 10, "steps": 5}, "record_every")])
def test_switching_experiment_refuses_bad_settings_before_writing(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        run_experiment("makkuva-switching", tmp_path / "x", preset="quick", overrides=changes, progress=False)
    assert not (tmp_path / "x").exists()
    assert get_experiment("makkuva-switching").official.p + get_experiment("makkuva-switching").official.q > 1


def test_ngram_stages_experiment_records_the_strategies_and_learns(tmp_path):
    overrides = {"seq_len": 24, "steps": 80, "record_every": 20, "test_size": 64, "batch_size": 32, "seeds": 2,
                 "width": 8, "learning_rate": 1e-2}
    m = run_experiment("edelman-icl-mc", tmp_path, preset="quick", overrides=overrides, progress=False)
    assert m["strategy_loss"]["uniform"] == pytest.approx(np.log(2), rel=1e-6)
    assert m["strategy_loss"]["bigram"] < m["strategy_loss"]["unigram"] < m["strategy_loss"]["uniform"]
    traj = m["trajectory"]
    assert traj["steps"] == [0, 20, 40, 60, 80]
    assert traj["test_loss"][-1] < traj["test_loss"][0] and traj["kl_uniform"][-1] > traj["kl_uniform"][0]
    # the loss is the mean KL to the (oracle) law plus its entropy: no run beats the oracle
    assert min(m["final_test_loss"]["per_seed"]) > m["oracle_loss"] - 0.02
    assert (tmp_path / "edelman-icl-mc_stages.png").is_file()
    assert ij.load_run(tmp_path).model.heads == (1, 1)
