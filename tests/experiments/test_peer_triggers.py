"""``bietti-triggers`` and ``singh-interventions`` (docs/peer-tasks.md#trigger-tokens,
docs/peer-tasks.md#interventions) at toy size: the exact references, the frozen groups, and
what an intervention must leave untouched while it holds."""

import numpy as np
import pytest

import icl_jax as ij
from icl_jax.experiments import get_experiment, run_experiment
from icl_jax.experiments.common import _test_sequences
from icl_jax.experiments.peers.triggers import _model, _task, trained_groups

TOY = {"vocab_size": 8, "num_triggers": 2, "seq_len": 24, "width": 16, "steps": 40, "record_every": 20,
       "test_size": 64, "batch_size": 16, "seeds": 2, "learning_rate": 1e-2}


def test_trigger_experiment_references_are_exact_and_it_learns_the_bigram(tmp_path):
    m = run_experiment("bietti-triggers", tmp_path, preset="quick", overrides=TOY, progress=False)
    config = get_experiment("bietti-triggers").quick.replace(**TOY)
    task = _task(config)
    test = _test_sequences(task, config)
    kinds = task.position_kinds(test.tokens_BxT)
    # Bayes copies at the induction positions (loss 0); a model that does not copy pays log(N − K)
    assert m["bayes_induction_loss"] == pytest.approx(0.0, abs=1e-6)
    assert m["no_copy_induction_loss"] == pytest.approx(np.log(TOY["vocab_size"] - TOY["num_triggers"]))
    assert m["induction_positions"] == int(np.sum(kinds["induction"])) > 0
    # Bayes' loss at the bigram positions estimates the entropy of π_b(·|z_t) there
    pi_b = task.global_bigram
    h = -np.sum(pi_b * np.log(pi_b), axis=-1)[np.asarray(test.tokens_BxT)][np.asarray(kinds["bigram"])]
    nll = -np.log(pi_b[np.asarray(test.tokens_BxT), np.asarray(test.labels_BxT)])[np.asarray(kinds["bigram"])]
    assert abs(m["bayes_bigram_loss"] - h.mean()) < 4 * nll.std() / np.sqrt(nll.size)
    traj = m["trajectory"]
    assert traj["steps"] == [0, 20, 40] and traj["bigram_loss"][-1] < traj["bigram_loss"][0] - 0.1
    assert min(m["final_bigram_loss"]["per_seed"]) > m["bayes_bigram_loss"] - 0.1
    for key in ("induction_accuracy", "previous_token", "induction_attention"):
        assert all(0.0 <= v <= 1.0 for v in m[f"final_{key}"]["per_seed"])
    assert len(m["first_step"]["induction_emerged"]) == 2
    assert (tmp_path / "bietti-triggers_induction.png").is_file()
    assert ij.load_run(tmp_path).model.heads == (1, 1)


def test_trigger_experiment_freezes_the_embeddings_and_refuses_bad_settings(tmp_path):
    config = get_experiment("bietti-triggers").quick
    assert trained_groups(config, _model(config)) == ("L1", "L2")
    assert trained_groups(config.replace(frozen="none"), _model(config)) is None
    for changes, match in (({"num_triggers": 40}, "num_triggers"), ({"frozen": "all"}, "frozen"),
                           ({"record_every": 10, "steps": 5}, "record_every")):
        with pytest.raises(ValueError, match=match):
            run_experiment("bietti-triggers", tmp_path / "x", preset="quick", overrides=changes, progress=False)
    assert not (tmp_path / "x").exists()


def test_interventions_freeze_layer_one_while_they_hold_then_release_it(tmp_path):
    # two of the three conditions: each is one more compiled sweep, and "none" trains nothing
    # these checks need (it is bietti-triggers' recipe with an Adam restart at the boundary)
    overrides = {**TOY, "record_every": 10, "intervention_steps": 20, "conditions": ("clamp", "ablate")}
    m = run_experiment("singh-interventions", tmp_path, preset="quick", overrides=overrides, progress=False)
    assert "none" not in m and list(m["conditions"]) == ["clamp", "ablate"]
    for name in ("clamp", "ablate"):
        traj = m[name]["trajectory"]
        assert traj["steps"] == [0, 10, 20, 30, 40]
        prev = np.asarray(traj["previous_token"])
        # clamped or ablated, layer 1's scores get no gradient (its embeddings are frozen): its
        # intact pattern is the initial one until the intervention ends at step 20, then it trains
        np.testing.assert_allclose(prev[:3], prev[0], atol=1e-6)
        assert abs(prev[4] - prev[2]) > 1e-4
        np.testing.assert_array_equal(traj["trained_accuracy"][2:], traj["induction_accuracy"][2:])
    # while held, the model as trained is the intervened one: the clamp changes what it predicts
    clamp = m["clamp"]["trajectory"]
    assert clamp["trained_accuracy"][1] != clamp["induction_accuracy"][1]
    assert (tmp_path / "singh-interventions_conditions.png").is_file()
    assert (tmp_path / "run" / "ablate").is_dir() and not (tmp_path / "run" / "clamp").exists()
    for changes, match in (({"steps": 100, "intervention_steps": 100}, "intervention_steps"),
                           ({"conditions": ("clamp", "clamp")}, "conditions"), ({"conditions": ()}, "conditions")):
        with pytest.raises(ValueError, match=match):
            run_experiment("singh-interventions", tmp_path / "y", preset="quick", overrides=changes, progress=False)
    assert not (tmp_path / "y").exists()
