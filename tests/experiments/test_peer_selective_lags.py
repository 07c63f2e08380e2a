"""The selective-induction experiment ``dangelo-selective-lags`` at toy size
(docs/peer-tasks.md#interleaved-lags); its selectivity measure is tested in
tests/analysis/test_progress.py."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import icl_jax as ij
import icl_jax.experiments.peers.selective_lags as selective_lags  # registers dangelo-selective-lags
from icl_jax.analysis.progress import lag_match_attention
from icl_jax.experiments import get_experiment, run_experiment
from icl_jax.experiments.peers.selective_lags import REFERENCES, SelectiveLagsConfig

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
    parent = np.asarray(m["final_parent_selection"]["per_seed"])
    assert parent.shape == (2, 3, 3) and np.all((parent >= 0) & (parent <= 1 + 1e-6))
    assert len(m["final_parent_accuracy"]["per_seed"]) == 2 and "fixed_kernel" not in m
    rows = dict(get_experiment(NAME).summary(m))
    assert rows["final test loss"].endswith("(2 seeds)") and len(rows) == 8
    # a run written before the parent-selection measure existed still has its summary
    old = {key: value for key, value in m.items() if not key.startswith("final_parent")}
    assert len(get_experiment(NAME).summary(old)) == 6

    run = ij.load_run(tmp_path)
    assert run.model.heads == (3, 1, 1) and run.seeds == (0, 1)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seq_len"] == 16
    # the recorded matrix is the last layer's attention on matching keys, grouped by true lag
    test, lag_index = selective_lags._test_data(run.task, run.config)
    last = run.model.attention(run.params_of(1), test.tokens_BxT)[-1]
    score = np.stack([np.asarray(lag_match_attention(last, test.tokens_BxT, lag))[:, 0] for lag in (1, 2, 3)], -1)
    want = np.stack([score[np.asarray(lag_index) == i].mean(0) for i in range(3)])
    np.testing.assert_allclose(sel[1], want, rtol=1e-4, atol=1e-6)


def _direct_parent_selection(attn_BxHxTxT, lag_index, lags):
    """The parent-selection scores by loops: per sequence and candidate ℓ', the mean over rows
    t >= max(lags) − 1 of the heads' mean attention from t to t + 1 − ℓ'; and their mean by true lag."""
    attn = np.asarray(attn_BxHxTxT, np.float64).mean(1)
    b, t = attn.shape[:2]
    score = np.array([[np.mean([attn[i, q, q + 1 - lag] for q in range(max(lags) - 1, t)]) for lag in lags]
                      for i in range(b)])
    return score, np.stack([score[lag_index == i].mean(0) for i in range(len(lags))])


def test_selective_lags_with_a_fixed_kernel_orders_its_references_and_measures_parent_selection():
    """The fixed kernel's references and the parent-selection measure, on the experiment's own
    test set and two untrained models (the end-to-end path, training and writing included, is
    the per-sequence test above; only the task differs)."""
    config = get_experiment(NAME).quick.replace(seq_len=12, test_size=48, seeds=2, width=12, kernel="fixed",
                                                kernel_seed=3)
    task, model = selective_lags._task(config), selective_lags._model(config)
    assert task.kernel == "fixed" and task.kernel_seed == 3
    p = np.asarray(task.fixed_kernel())
    # rows far apart in total variation, so 12 tokens tell the lags apart and the references'
    # order below holds with a margin over the noise of 48 test sequences
    assert min(np.abs(p[a] - p[b]).sum() / 2 for a in range(3) for b in range(a)) > 0.3
    test, lag_index = selective_lags._test_data(task, config)
    tokens, labels, lag_index = np.asarray(test.tokens_BxT), np.asarray(test.labels_BxT), np.asarray(lag_index)
    refs_T, _ = selective_lags._references(task, test, lag_index)
    refs = {name: float(np.mean(v)) for name, v in refs_T.items()}
    bayes = refs["Bayes mixture over lags"]
    # knowing the lag beats inferring it, which beats not choosing and assuming lag 1
    assert refs["lag-known oracle"] < bayes < min(refs["non-selective: mean over lags"], refs["lag-1 bigram"])
    # with P known the oracle is the law each token was drawn from, and lag 1 reads P[x_t]
    assert refs["lag-known oracle"] == pytest.approx(-np.mean(np.log(np.take_along_axis(
        np.asarray(test.label_probs_BxTxS), labels[..., None], -1))), rel=1e-5)
    assert refs["lag-1 bigram"] == pytest.approx(-np.mean(np.log(p[tokens, labels])), rel=1e-5)
    assert set(REFERENCES) == set(refs)
    # the parent selection of each model is its last-layer attention on x_{t+1−ℓ'}, by loops
    params = [model.init(jax.random.key(seed)) for seed in (0, 1)]
    measured = selective_lags._parent_selection(model, test, jnp.asarray(lag_index), config.lags)(
        jax.tree.map(lambda *x: jnp.stack(x), *params))
    recorded, accuracy, by_lag = map(np.asarray, measured)
    for j in range(2):
        last = model.attention(params[j], test.tokens_BxT)[-1]
        score, want = _direct_parent_selection(last, lag_index, (1, 2, 3))
        np.testing.assert_allclose(recorded[j], want, rtol=1e-4, atol=1e-6)
        # accuracy: argmax over ℓ' == the true lag; a sequence whose two best scores are within
        # float32 noise may legitimately be counted either way (and the stored fraction is float32)
        top2 = np.sort(score, axis=-1)[:, -2:]
        tie = top2[:, 1] - top2[:, 0] < 1e-5
        correct = np.argmax(score, -1) == lag_index
        assert abs(accuracy[j] - np.mean(correct)) <= np.mean(tie) + np.finfo(np.float32).eps
        for i in range(3):
            assert abs(by_lag[j, i] - np.mean(correct[lag_index == i])) <= np.mean(tie[lag_index == i]) + 1e-6


def test_selective_lags_kernel_options_keep_the_fingerprint_of_earlier_runs():
    """``kernel`` and ``kernel_seed`` are ``added``: at their defaults the fingerprint is the one
    runs written before them stored (so they resume); a fixed kernel enters it."""
    quick = get_experiment(NAME).quick
    assert quick.kernel == "per_sequence" and quick.kernel_seed == 0
    assert not {"kernel", "kernel_seed"} & set(quick.fingerprint())
    fixed = quick.replace(kernel="fixed")
    assert fixed.fingerprint()["kernel"] == "fixed" and "kernel_seed" not in fixed.fingerprint()
    assert fixed.replace(kernel_seed=3).fingerprint()["kernel_seed"] == 3
    assert SelectiveLagsConfig.from_dict({k: v for k, v in quick.to_dict().items()
                                          if k not in ("kernel", "kernel_seed")}) == quick
    assert quick.with_strings(["kernel=fixed", "kernel_seed=7"]).kernel_seed == 7


@pytest.mark.parametrize("changes,match", [
    ({"record_every": 10, "steps": 5}, "record_every"),
    ({"seq_len": 3}, "seq_len"),
    ({"lags": (1, 0)}, "lags"),
    ({"lags": (1, 2, 2)}, "lags"),
    ({"test_size": 2}, "test_size"),
    ({"width": 10}, "width"),
    ({"kernel": "shared"}, "kernel: must be one of 'per_sequence', 'fixed'"),
    ({"kernel_seed": 3}, "kernel_seed .* applies only with kernel=fixed"),
    ({"kernel": "fixed", "kernel_seed": -1}, "kernel_seed: must be >= 0"),
    ({"kernel": "fixed", "kernel_seed": 2**32}, "kernel_seed: must be <="),
])
def test_selective_lags_experiment_refuses_bad_settings_before_writing(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        run_experiment(NAME, tmp_path / "x", preset="quick", overrides=changes, progress=False)
    assert not (tmp_path / "x").exists()
    official = get_experiment(NAME).official
    assert official.heads == (3, 1, 1) and official.lags == (1, 2, 3)
