"""The selective-induction experiment ``dangelo-selective-lags`` at toy size
(docs/peer-tasks.md#interleaved-lags); its selectivity measure is tested in
tests/analysis/test_progress.py."""

import json

import numpy as np
import pytest

import icl_jax as ij
import icl_jax.experiments.peers.selective_lags as selective_lags  # registers dangelo-selective-lags
from icl_jax.analysis.progress import lag_match_attention
from icl_jax.experiments import get_experiment, run_experiment

NAME = "dangelo-selective-lags"


def test_selective_lags_experiment_trains_records_the_selection_matrix_and_reloads(tmp_path):
    overrides = {"seq_len": 16, "steps": 60, "record_every": 20, "test_size": 48, "batch_size": 16, "seeds": 2,
                 "width": 12, "learning_rate": 1e-2}
    m = run_experiment(NAME, tmp_path, preset="quick", overrides=overrides, progress=False)
    assert m["lags"] == [1, 2, 3] and m["test_lags_per_lag"] == [16, 16, 16]
    refs = m["reference_loss"]
    bayes = refs["Bayes mixture over lags"]
    # the Bayes mixture beats the predictors that do not know the lag and trails the one that does
    assert refs["lag-known oracle"] < bayes < min(refs["non-selective: mean over lags"], refs["lag-1 bigram"])
    traj = m["trajectory"]
    assert traj["steps"] == [0, 20, 40, 60]
    assert traj["test_loss"][-1] < traj["test_loss"][0] - 0.05  # it learns
    # no run beats the Bayes mixture by more than the test set's noise
    assert min(m["final_test_loss"]["per_seed"]) > bayes - 0.03
    assert m["gap_to_bayes"]["per_seed"] == pytest.approx(np.asarray(m["final_test_loss"]["per_seed"]) - bayes)
    sel = np.asarray(m["final_selection"]["per_seed"])
    assert sel.shape == (2, 3, 3) and np.all((sel >= 0) & (sel <= 1 + 1e-6))
    np.testing.assert_allclose(m["final_selection"]["mean"], sel.mean(0), rtol=1e-6)
    first = np.asarray(m["final_layer1_lag_attention"]["per_seed"])
    assert first.shape == (2, 3, 3) and np.all((first >= 0) & (first <= 1 + 1e-6))
    acc = m["final_lag_accuracy"]["per_seed"]
    assert len(acc) == 2 and all(0 <= a <= 1 for a in acc) and 0 < m["bayes_lag_accuracy"] <= 1
    for kind in ("loss", "heads"):
        assert (tmp_path / f"{NAME}_{kind}.png").is_file()
    rows = dict(get_experiment(NAME).summary(m))
    assert rows["final test loss"].endswith("(2 seeds)") and len(rows) == 6

    run = ij.load_run(tmp_path)
    assert run.model.heads == (3, 1, 1) and run.seeds == (0, 1)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seq_len"] == 16
    # the recorded matrix is the last layer's attention on matching keys, grouped by true lag
    test, lag_index = selective_lags._test_data(run.task, run.config)
    last = run.model.attention(run.params_of(1), test.tokens_BxT)[-1]
    score = np.stack([np.asarray(lag_match_attention(last, test.tokens_BxT, lag))[:, 0] for lag in (1, 2, 3)], -1)
    want = np.stack([score[np.asarray(lag_index) == i].mean(0) for i in range(3)])
    np.testing.assert_allclose(sel[1], want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("changes,match", [
    ({"record_every": 10, "steps": 5}, "record_every"),
    ({"seq_len": 3}, "seq_len"),
    ({"lags": (1, 0)}, "lags"),
    ({"lags": (1, 2, 2)}, "lags"),
    ({"test_size": 2}, "test_size"),
    ({"width": 10}, "width"),
])
def test_selective_lags_experiment_refuses_bad_settings_before_writing(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        run_experiment(NAME, tmp_path / "x", preset="quick", overrides=changes, progress=False)
    assert not (tmp_path / "x").exists()
    official = get_experiment(NAME).official
    assert official.heads == (3, 1, 1) and official.lags == (1, 2, 3)
