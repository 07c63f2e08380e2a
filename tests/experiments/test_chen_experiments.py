"""Chen experiments (docs/chen-theory.md#official-recipes): typed presets with today's recipes,
every registered experiment trained at toy size with a learning check (test loss falls, the
selector's subset share and the classifier scale a grow), config errors raised before anything
is written, the theory overlay's training set, and the generalisation experiment evaluating a
finished CW → a run (``trained_run``) instead of training again."""

import json

import jax
import numpy as np
import pytest

from icl_jax.experiments import get_experiment, list_experiments, load_run, run_experiment
from icl_jax.experiments.chen import (
    ChenConfig,
    GeneralizationConfig,
    StagedConfig,
    _loss_kw,
    _training_data,
    chen_model,
    chen_stages,
    chen_task,
)

NAMES = {"chen-three-stage-d2", "chen-three-stage-d3", "chen-cw-a", "chen-cwa", "chen-full-model",
         "chen-bigram", "chen-generalization"}
# (stage_groups, stage_steps, stage_lrs, record_every) of the official and quick presets
RECIPES = {
    "chen-three-stage-d2": (("C", "W", "a"), (2000, 5000, 5000), (1.0, 1e5, 1.0), 10, (60, 200, 600), 2),
    "chen-three-stage-d3": (("C", "W", "a"), (2000, 5000, 5000), (1.0, 1e5, 1.0), 10, (60, 200, 600), 2),
    "chen-cw-a": (("CW", "a"), (500000, 5000), (1.0, 1.0), 500, (1200, 900), 5),
    "chen-cwa": (("CWa",), (50000,), (1.0,), 50, (2000,), 5),
    "chen-full-model": (("all",), (10000,), (1e-3,), 20, (400,), 10),
    "chen-bigram": (("CWa",), (50000,), (1.0,), 50, (1500,), 5),
    "chen-generalization": (("CW", "a"), (500000, 5000), (1.0, 1.0), 500, (1200, 900), 5),
}

TINY = {"seq_len": 24, "num_train": 256, "test_size": 256, "record_every": 2, "seeds": 1}
STAGED = TINY | {"stage_steps": (30, 4, 4), "flow_size": 64, "theory_draws": 64}
# name -> (overrides, the subset the selector must pick, its minimum final share)
CASES = {
    # stage I at lr 1 selects {1,2} within tens of steps even at toy size
    "chen-three-stage-d2": (STAGED | {"seeds": 2, "flow_size": 256}, "110", 0.9),
    "chen-three-stage-d3": (STAGED, "110", 0.5),
    "chen-cw-a": (TINY | {"stage_steps": (30, 10)}, "110", 0.5),
    "chen-cwa": (TINY | {"stage_steps": (30,)}, "110", 0.5),
    "chen-bigram": (TINY | {"stage_steps": (30,)}, "1", 0.9),
    # the full model learns more slowly: 20 steps at lr 1 take '110' from 1/7 to ~0.35-0.5. Its
    # empirical selection needs more data than the simplified model's: on 256 sequences one data
    # stream picked '101' (share 0.36 vs 0.23); on 2048, '110' won for each of data seeds 2024,
    # 1, 2 (shares 0.47 / 0.36 / 0.48, runner-up '101' 0.20 / 0.30 / 0.37)
    "chen-full-model": (TINY | {"num_train": 2048, "stage_steps": (20,), "stage_lrs": (1.0,)}, "110", 0.3),
    "chen-generalization": (TINY | {"stage_steps": (30, 10), "eval_lengths": (24,), "eval_alphas": (1.0,),
                                    "eval_size": 256}, "110", 0.5),
}
FIGURES = {"chen-three-stage-d2": ("selection", "replicator"), "chen-three-stage-d3": ("selection", "replicator"),
           "chen-generalization": ("generalization",)}


def test_every_chen_experiment_is_registered_with_typed_presets():
    assert NAMES <= {e.name for e in list_experiments()}
    for name in NAMES:
        exp = get_experiment(name)
        assert isinstance(exp.official, ChenConfig) and type(exp.official) is type(exp.quick)
        groups, steps, lrs, every, quick_steps, quick_every = RECIPES[name]
        assert (exp.official.stage_groups, exp.official.stage_steps, exp.official.stage_lrs) == (groups, steps, lrs)
        assert exp.official.record_every == every and exp.official.seed == 2024
        assert exp.quick.stage_steps == quick_steps and exp.quick.record_every == quick_every
        for cfg in (exp.official, exp.quick):
            task, model = exp.check(cfg)  # builds
            assert len(chen_stages(cfg)) == len(groups) and model.num_heads == cfg.num_heads
        assert "stages" in exp.quick.settings("quick") and ",".join(map(str, quick_steps)) in exp.quick.settings("quick")
    assert isinstance(get_experiment("chen-three-stage-d3").official, StagedConfig)
    assert get_experiment("chen-three-stage-d3").official.max_degree == 3
    assert isinstance(get_experiment("chen-generalization").official, GeneralizationConfig)
    assert get_experiment("chen-bigram").official.task == "bigram"
    assert get_experiment("chen-full-model").quick.stage_lrs == (1e-2,)


@pytest.mark.parametrize("name", sorted(CASES))
def test_experiment_learns_at_toy_size(name, tmp_path):
    overrides, winner, min_share = CASES[name]
    metrics = run_experiment(name, tmp_path, preset="quick", overrides=overrides, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["wall_seconds"] > 0
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seq_len"] == 24
    for kind in ("dynamics", "W") + FIGURES.get(name, ()):
        assert (tmp_path / f"{name}_{kind}.png").is_file(), kind
    seeds = overrides["seeds"]
    # learning: the test loss falls, the selector concentrates on the expected subset, a grows
    initial, final = metrics["initial_loss"]["prob_ce"], metrics["final_loss"]["prob_ce"]["per_seed"]
    assert len(final) == seeds and max(final) < initial - 0.02, (initial, final)
    shares = np.asarray(metrics["subset_shares"]["mean"])
    np.testing.assert_allclose(shares.sum(-1), 1.0, rtol=1e-5)
    initial_share = shares[0, metrics["subsets"].index(winner)]
    assert metrics["selected_subset_per_seed"] == [winner] * seeds
    assert min(metrics["final_shares"][winner]["per_seed"]) > max(min_share, initial_share)
    assert metrics["a"]["final"]["mean"] > 10 * metrics["a"]["mean"][0]
    base = metrics["baselines"]
    assert base["oracle"]["loss"] < base["bayes"]["loss"] < base["uniform"]["loss"]
    assert np.all(np.isfinite(metrics["final_loss"]["official"]["per_seed"]))
    if name.startswith("chen-three-stage"):
        # stage II sharpens the selected heads onto their own offsets 1 and 2
        assert min(metrics["own_offset_attention_final"][:2]) > max(0.99, metrics["own_offset_attention_init"][0])
        assert metrics["theory"]["selection"]["selected"] == [1, 2]
        assert metrics["theory"]["selection"]["warnings"] == []  # every parent is copied by a head
        assert metrics["theory"]["argmax_G"] == "110"
    if name == "chen-three-stage-d2":
        _check_overlay_data_is_the_run_training_set(tmp_path, name, overrides)
        _check_per_step_gd_replica(metrics["theory"])
    if name == "chen-generalization":
        assert set(metrics["by_length"]) == {"24"} and set(metrics["by_alpha"]) == {"1"}
        at_train = metrics["by_length"]["24"]
        assert at_train["model"]["prob_ce"]["mean"] < at_train["unigram"]["prob_ce"]


def _check_per_step_gd_replica(theory):
    """flow_size = num_train: the overlay re-runs stage-I GD step by step as explicit Euler with
    dt = lr (diffrax) on the run's own training set. It must agree with the engine's recorded GD
    shares (an independent implementation of the same full-batch GD), and the crossing of share
    0.5 is then resolved to one step instead of one record."""
    assert theory["gd_time_resolution"] == 1.0  # one step at stage-I lr 1
    assert theory["gd_replica_max_abs_dev"] < 1e-4, theory["gd_replica_max_abs_dev"]
    tt = theory["time_to_half_share"]
    assert all(tt[k] is not None and tt[k] > 0 for k in ("gd", "replicator", "flow")), tt
    # the exact flow of the same loss crosses within a step or two of GD at lr 1
    assert abs(tt["flow"] - tt["gd"]) < 2.0, tt


def _check_overlay_data_is_the_run_training_set(out, name, overrides):
    """The stage-I theory overlay evaluates G_S on the training set of the run it explains
    (the engine's run_data of that seed, not a copy of the engine's key split): each seed's
    first recorded training loss is the initial loss on that set."""
    config = get_experiment(name).config("quick", overrides)
    task, model = chen_task(config), chen_model(config)
    first_losses = np.load(out / "run" / "trajectory.npz")["loss"][0, :, 0]
    seeds = json.loads((out / "metrics.json").read_text())["seeds"]
    assert len(seeds) == len(first_losses) == 2
    initial_loss = jax.jit(lambda data: model.loss(model.init(), model.window_stats(data), **_loss_kw(config)))
    for seed, first in zip(seeds, first_losses):
        data = _training_data(config, task, seed)
        assert data.tokens_BxT.shape == (config.num_train, config.seq_len)
        np.testing.assert_allclose(float(first), float(initial_loss(data)), rtol=1e-5)
    assert first_losses[0] != first_losses[1]  # two seeds, two training sets


@pytest.mark.parametrize(
    "name,overrides,match",
    [
        # the staged theory overlay solves the window law on d**max(parents) states (at most 256)
        ("chen-three-stage-d2", {"parents": (1, 7)}, r"parents=\(1, 7\).*2187 window states; at most 256"),
        ("chen-three-stage-d3", {"parents": (1, 7), "num_heads": 7}, r"parents=.*window states"),
        # head h only reaches offsets 1..M (M = window_size or num_heads = 3)
        ("chen-cwa", {"parents": (1, 5)}, r"parents: offset\(s\) \[5\].*num_heads=3, window_size=0"),
        ("chen-three-stage-d2", {"parents": (1, 5)}, r"parents: .*allow_unreachable_parents"),
        ("chen-cw-a", {"stage_steps": (10,)}, r"stage_groups, stage_steps and stage_lrs must have the same length"),
        ("chen-cwa", {"stage_groups": ("CX",)}, r"stage_groups: 'CX'"),
        ("chen-cwa", {"stage_groups": ("",)}, r"stage_groups"),
        ("chen-bigram", {"parents": (1, 2)}, r"parents: the bigram task"),
        ("chen-cwa", {"max_degree": 4}, r"max_degree \(4\) must be <= num_heads \(3\)"),
        ("chen-three-stage-d2", {"flow_size": 4000}, r"flow_size \(4000\) must be <= num_train \(2000\)"),
        ("chen-generalization", {"eval_lengths": (2, 24)}, r"eval_lengths: \[2\]"),
        ("chen-cwa", {"test_size": 1}, r"test_size: must be >= 2"),
        ("chen-generalization", {"eval_size": 1}, r"eval_size: must be >= 2"),
        ("chen-cwa", {"seq_len": 2}, r"seq_len must be >= max\(parents\) \+ 1 = 3"),
        ("chen-cwa", {"task": "trigram"}, r"task: must be one of"),
        ("chen-cwa", {"window": "official", "window_size": 2}, r"window_size"),
        # the query needs a full copier window; the overlay needs window statistics
        ("chen-cwa", {"seq_len": 3, "num_heads": 5}, r"seq_len \(3\) must be >= the copier window \(5\)"),
        ("chen-three-stage-d2", {"full_model": True}, r"theory overlay .* runs on window statistics"),
        ("chen-generalization", {"num_heads": 5, "eval_lengths": (4, 50)}, r"eval_lengths: \[4\] are shorter than 5"),
    ],
)
def test_config_errors_are_raised_before_anything_is_written(name, overrides, match, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        run_experiment(name, out, preset="quick", overrides=overrides, progress=False)
    assert not out.exists()


def test_unreachable_parents_can_be_allowed_and_the_theory_warns():
    exp = get_experiment("chen-three-stage-d2")
    config = exp.config("quick", {"parents": (1, 5), "allow_unreachable_parents": True})
    task, model = exp.check(config)
    assert task.parent_offsets == (1, 5) and model.max_offset == 3
    # the official window reaches 2H − 1 = 5: no override needed
    assert get_experiment("chen-cwa").config("quick", {"parents": (1, 5), "window": "official"}).parents == (1, 5)
    from icl_jax.theory.chen import chen_selection_report

    with pytest.warns(UserWarning, match="parent offset 5 is not copied by any head"):
        report = chen_selection_report(3, (1, 5), 3, 2, 0.1, draws=8)
    assert report["warnings"] == ["parent offset 5 is not copied by any head (H = 3): no subset can contain it"]
    assert report["subsets"][-1]["offsets"] == [1, 2]  # the numbers are still reported


def test_set_strings_parse_by_type():
    exp = get_experiment("chen-three-stage-d2")
    cfg = exp.config("quick", sets=["parents=1,2", "stage_lrs=1,1e5,1", "stage_groups=C,W,a", "stage_steps=5,2**3,7",
                                    "allow_unreachable_parents=true", "alpha=0.5"])
    assert cfg.parents == (1, 2) and all(type(p) is int for p in cfg.parents)
    assert cfg.stage_lrs == (1.0, 1e5, 1.0) and all(type(v) is float for v in cfg.stage_lrs)
    assert cfg.stage_groups == ("C", "W", "a") and cfg.stage_steps == (5, 8, 7)
    assert cfg.allow_unreachable_parents is True and cfg.alpha == 0.5
    gen = get_experiment("chen-generalization").config("quick", sets=["eval_alphas=[0.5, 2]", "eval_lengths=12,48"])
    assert gen.eval_alphas == (0.5, 2.0) and gen.eval_lengths == (12, 48)
    with pytest.raises(ValueError, match="stage_steps"):
        exp.config("quick", sets=["stage_steps=1.5,2,3"])
    with pytest.raises(ValueError, match="stage_groups"):
        exp.config("quick", sets=["stage_groups=C,W"])


# --------------------------------------------------------------------- trained_run (issue 13)
GEN = "chen-generalization"


@pytest.fixture(scope="module")
def cw_a_run(tmp_path_factory):
    """A finished toy chen-cw-a run with the training settings of CASES[GEN]."""
    out = tmp_path_factory.mktemp("cw_a") / "run"
    metrics = run_experiment("chen-cw-a", out, preset="quick", overrides=CASES["chen-cw-a"][0], progress=False)
    return out, metrics


def test_generalization_presets_train_exactly_the_cw_a_recipe():
    from icl_jax.experiments.chen.generalization import training_differences

    cw_a, gen = get_experiment("chen-cw-a"), get_experiment(GEN)
    assert training_differences(cw_a.official, gen.official) == {}
    assert training_differences(cw_a.quick, gen.quick) == {}
    assert gen.official.trained_run == gen.quick.trained_run == ""
    # trained_run is not in the resume fingerprint; the eval fields are not training settings
    assert "trained_run" not in gen.quick.fingerprint()
    assert training_differences(cw_a.quick, gen.quick.replace(eval_size=99, trained_run="x", figure_format="pdf")) == {}


def test_generalization_evaluates_a_finished_cw_a_run_without_training(cw_a_run, tmp_path, monkeypatch):
    """trained_run=<chen-cw-a folder>: the same metrics and figures as a run that trains itself
    (same settings → same trained model), and no training."""
    import icl_jax.experiments.chen.generalization as gen_module

    source, cw_metrics = cw_a_run
    overrides = CASES[GEN][0]
    trained = run_experiment(GEN, tmp_path / "trained", preset="quick", overrides=overrides, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("trained_run is set: nothing may be trained")

    monkeypatch.setattr(gen_module, "train_chen", no_training)
    out = tmp_path / "reused"
    reused = run_experiment(GEN, out, preset="quick", overrides={**overrides, "trained_run": str(source)},
                            progress=False)
    assert reused["trained_run"] == {"path": str(source), "experiment": "chen-cw-a"} and trained["trained_run"] is None
    assert reused["train_wall_seconds"] == cw_metrics["train_wall_seconds"]  # the stored run's training
    # the training part equals the cw-a run's metrics and the self-trained run's; the evaluation
    # on other L and α equals the self-trained run's
    skip = {"train_wall_seconds", "wall_seconds", "trained_run"}
    for key in set(reused) - skip:
        np.testing.assert_equal(reused[key], trained[key], err_msg=key)
        if key in cw_metrics:
            np.testing.assert_equal(reused[key], cw_metrics[key], err_msg=key)
    assert set(reused) - skip == set(trained) - skip
    assert reused["by_length"]["24"]["model"]["prob_ce"]["mean"] < reused["by_length"]["24"]["unigram"]["prob_ce"]
    for kind in ("dynamics", "W", "generalization"):
        assert (out / f"{GEN}_{kind}.png").is_file(), kind
    # the folder holds the trained model: it reloads on its own, with the cw-a run's parameters
    run = load_run(out)
    assert run.config.trained_run == str(source) and run.preset == "quick"
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(load_run(source).params)):
        np.testing.assert_array_equal(a, b)
    # trained_run is not in the resume fingerprint; this finished folder can itself be the source
    again = run_experiment(GEN, out, run.config.replace(trained_run=str(out)), preset="quick", mode="resume",
                           progress=False)
    assert again["trained_run"] == {"path": str(out), "experiment": GEN}
    np.testing.assert_equal(again["by_alpha"], reused["by_alpha"])
    # the re-evaluation reports its own wall time and keeps the call that finished the run
    assert again["earlier_calls_wall_seconds"] == [reused["wall_seconds"]]
    assert "earlier_calls_wall_seconds" not in reused


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"seed": 7}, r"trained_run: the training settings differ .*seed: stored 2024, now 7"),
        ({"stage_steps": (30, 11)}, r"stage_steps: stored \[30, 10\], now \[30, 11\]"),
        ({"record_every": 5, "num_train": 128}, r"num_train: stored 256, now 128; record_every: stored 2, now 5"),
    ],
)
def test_trained_run_with_other_training_settings_is_refused_before_anything_is_written(cw_a_run, tmp_path,
                                                                                        changes, match):
    source, _ = cw_a_run
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        run_experiment(GEN, out, preset="quick", overrides={**CASES[GEN][0], **changes, "trained_run": str(source)},
                       progress=False)
    assert not out.exists()


def test_trained_run_must_be_a_finished_chen_run(cw_a_run, tmp_path):
    import shutil

    source, _ = cw_a_run
    overrides = CASES[GEN][0]
    out = tmp_path / "out"
    unfinished = tmp_path / "unfinished"
    shutil.copytree(source, unfinished)
    (unfinished / "metrics.json").unlink()
    (unfinished / "run" / "params.npz").unlink()
    data = tmp_path / "data"
    run_experiment("data-baselines", data,
                   get_experiment("data-baselines").quick.replace(samples=256, vocab_size=3, dag_vocab_size=3,
                                                                 ngram_seq_len=20), progress=False)
    for folder, match in [
        (tmp_path / "missing", r"trained_run: .*missing is not a folder"),
        (tmp_path, r"trained_run: .*no config.json"),
        (unfinished, r"trained_run: the chen-cw-a run in .*unfinished is not a finished run .*"
                     r"no metrics.json, run/params.npz\); finish it with icl-jax resume"),
        (data, r"trained_run: .*holds a data-baselines run, not a Chen training run"),
    ]:
        with pytest.raises(ValueError, match=match):
            run_experiment(GEN, out, preset="quick", overrides={**overrides, "trained_run": str(folder)}, progress=False)
        assert not out.exists()


def test_half_time_interpolates_the_first_crossing_of_one_half():
    from icl_jax.experiments.chen.staged import half_time

    t = np.array([0.0, 1.0, 3.0, 4.0])
    assert half_time([0.1, 0.3, 0.7, 0.2], t) == pytest.approx(2.0)  # midway between 0.3 and 0.7 over [1, 3]
    assert half_time([0.1, 0.5, 0.9, 0.9], t) == 1.0  # a sample exactly at 0.5
    assert half_time([0.6, 0.9, 0.9, 0.9], t) == 0.0  # starts above
    assert half_time([0.1, 0.2, 0.4, 0.45], t) is None  # never crosses
