"""Smoke tests of every registered Nichani experiment at toy size: each writes its config,
metrics (with the keys the issue names) and figures, and its numbers are sane."""

import json

import numpy as np
import pytest

from icl_jax.experiments import get_experiment, list_experiments, run_experiment

TINY = {"steps": 12, "batch_size": 32, "test_size": 128, "record_every": 4, "seeds": 2}
CASES = {
    "nichani-fig2-chain": TINY | {"vocab_size": 3, "seq_len": 6},
    "nichani-fig5-multiparent": TINY | {"vocab_size": 3, "seq_len": 8, "roots": "official"},
    "nichani-fig8-mlp": TINY | {"vocab_size": 3, "seq_len": 6, "attention_batch": 16},
    "nichani-fig9-many-graphs": TINY | {"num_graphs": 3, "seq_len": 6, "seeds": 1},
    "nichani-staged": {
        "seeds": 2, "vocab_size": 3, "seq_len": 6, "batch_size": 64, "stage1_steps": 6, "stage2_steps": 4,
        "stage1_lr": 10.0, "stage2_lr": 5.0, "flow_batch": 64, "test_size": 128, "record_every": 2,
        "ood_alphas": [1.0], "theory_samples": 256, "theory_draws": 16,
    },
}
TREE_KEYS = ("parent_argmax_accuracy", "mean_parent_attention", "final_test_loss", "bayes_loss", "oracle_loss")


def test_every_nichani_experiment_is_registered():
    names = {e.name for e in list_experiments()}
    expected = {"nichani-staged", "nichani-fig2-chain", "nichani-fig2-icl", "nichani-fig2-random",
                "nichani-fig5-multiparent", "nichani-fig8-mlp", "nichani-fig9-many-graphs"}
    assert expected <= names
    for name in expected:
        exp = get_experiment(name)
        assert set(exp.quick) <= set(exp.defaults)


@pytest.mark.parametrize("name", sorted(CASES))
def test_experiment_runs_and_writes_outputs(name, tmp_path):
    metrics = run_experiment(name, tmp_path, quick=True, overrides=CASES[name], progress=False)
    assert (tmp_path / "config.json").exists() and (tmp_path / "metrics.json").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["wall_seconds"] > 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs, "no figure written"
    if name in ("nichani-fig2-chain", "nichani-fig8-mlp", "nichani-staged"):
        for key in TREE_KEYS:
            assert key in metrics, key
        seeds = CASES[name]["seeds"]
        assert len(metrics["final_test_loss"]["per_seed"]) == seeds
        assert 0.0 <= metrics["parent_argmax_accuracy"]["mean"] <= 1.0
        # the oracle is the best any predictor can do; Bayes is a proper predictor
        assert metrics["oracle_loss"] < metrics["bayes_loss"]
        assert np.all(np.isfinite(metrics["final_test_loss"]["per_seed"]))
    if name == "nichani-fig5-multiparent":
        assert len(metrics["head_matching"]) == 2
        assert sorted(metrics["head_matching"][0]["assignment"]) == [0, 1]
        assert metrics["oracle_loss"] < metrics["bayes_loss"] < metrics["one_nn_loss"] + 0.05
    if name == "nichani-fig9-many-graphs":
        assert len(metrics["graph_recovery"]["per_seed"]) == 3
    if name == "nichani-staged":
        assert "flow" in metrics and "ood" in metrics


def test_bad_override_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="alpha"):
        run_experiment("nichani-fig2-chain", tmp_path, quick=True, overrides=CASES["nichani-fig2-chain"] | {"alpha": -1.0}, progress=False)
