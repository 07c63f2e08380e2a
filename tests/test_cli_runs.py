"""Runs a researcher can trust, through the real command line (subprocesses): a run killed
by a signal resumes to the numbers of an uninterrupted run; results are never silently
replaced; invalid configs leave nothing behind; errors are one line; a run reloads with
``load_run`` to the numbers it reported."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from icl_jax.cli import main
from icl_jax.engine import NonFiniteLossError
from icl_jax.engine.checkpoint import load_checkpoint
from icl_jax.experiments import get_experiment, load_run, run_experiment
from icl_jax.experiments.common import _test_set

NAME = "nichani-fig2-chain"
STEPS = 3000
TOY = {"vocab_size": 3, "seq_len": 6, "steps": STEPS, "batch_size": 32, "test_size": 256, "record_every": 250,
       "chunk_steps": 25, "seeds": 1, "learning_rate": 3.0}
SETS = [a for k, v in TOY.items() for a in ("--set", f"{k}={v}")]


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "icl_jax.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    metrics = run_experiment(NAME, out, preset="quick", overrides=TOY, progress=False)
    return out, metrics


def test_killed_cli_run_resumes_to_the_uninterrupted_numbers(tmp_path, reference, capsys):
    _, ref = reference
    out = tmp_path / "killed"
    ckpt = out / "run" / "checkpoint.npz"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "icl_jax.cli", "run", NAME, "--quick", *SETS, "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), log.read_text()[-2000:]
    _, meta = load_checkpoint(ckpt)
    assert 0 < meta["step"] < STEPS, meta  # killed mid-way, after at least one checkpoint
    assert not (out / "metrics.json").exists()

    with pytest.raises(SystemExit) as refused:  # a plain rerun into the folder (in process: nothing compiles)
        main(["run", NAME, "--quick", *SETS, "--out", str(out)])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--resume" in err and "--overwrite" in err

    resumed = _cli("resume", out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "final test loss" in resumed.stdout  # the headline rows are printed
    got = json.loads((out / "metrics.json").read_text())
    for key in ("final_test_loss", "mean_parent_attention", "parent_argmax_accuracy"):
        np.testing.assert_allclose(got[key]["per_seed"], ref[key]["per_seed"], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(got["trajectory"]["test_loss"], ref["trajectory"]["test_loss"], rtol=1e-6)


def test_resume_refuses_a_changed_computation_but_not_a_changed_figure_format(tmp_path, reference):
    ref_dir, _ = reference
    exp = get_experiment(NAME)
    changed = exp.config("quick", {**TOY, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="learning_rate: stored 3.0, now 1.0"):
        run_experiment(NAME, ref_dir, changed, preset="quick", mode="resume", progress=False)
    with pytest.raises(ValueError, match="holds no run to resume"):
        run_experiment(NAME, tmp_path / "empty", preset="quick", overrides=TOY, mode="resume", progress=False)


def test_load_run_gives_the_model_and_the_parameters_it_reported(reference):
    out, metrics = reference
    run = load_run(out)
    assert run.experiment == NAME and run.preset == "quick" and run.config.steps == STEPS
    assert run.axes == ("grid", "seed") and run.seeds == (0,)
    template = run.model.init(jax.random.key(0))
    assert jax.tree.structure(run.params) == jax.tree.structure(template)
    for leaf, ref in zip(jax.tree.leaves(run.params), jax.tree.leaves(template)):
        assert leaf.shape == (1, 1) + ref.shape
    params = run.params_of(seed_index=0)
    test = _test_set(run.task, run.config)  # the run's own held-out set
    np.testing.assert_allclose(float(run.model.loss(params, test)), metrics["final_test_loss"]["per_seed"][0], rtol=1e-5)
    assert run.trajectories["metrics"]["test_loss"].shape == (1, 1, len(run.trajectories["steps"]))
    with pytest.raises(ValueError, match="seed_index"):
        run.params_of(seed_index=3)


def test_invalid_config_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    r = _cli("run", "chen-three-stage-d2", "--quick", "--set", "parents=1,7", "--out", out)
    assert r.returncode == 2 and r.stderr.startswith("icl-jax: error:") and "Traceback" not in r.stderr
    assert "parents" in r.stderr
    assert not out.exists()


def test_overwrite_replaces_and_a_new_run_never_does(tmp_path, reference):
    ref_dir, _ = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_dir, out)
    small = {**TOY, "steps": 100, "record_every": 50}
    with pytest.raises(ValueError, match="not empty.*--resume.*--overwrite"):
        run_experiment(NAME, out, preset="quick", overrides=small, progress=False)
    assert json.loads((out / "config.json").read_text())["config"]["steps"] == STEPS  # untouched
    run_experiment(NAME, out, preset="quick", overrides=small, mode="overwrite", progress=False)
    assert json.loads((out / "config.json").read_text())["config"]["steps"] == 100
    assert json.loads((out / "metrics.json").read_text())["trajectory"]["steps"][-1] == 100


def test_show_config_lists_every_key_with_type_and_meaning(capsys):
    assert main(["run", NAME, "--quick", "--set", "steps=2**9", "--show-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split()[0] for line in lines[2:]]
    assert [k.rstrip("*") for k in keys] == get_experiment(NAME).config_type.keys()
    steps = next(line for line in lines if line.startswith("steps*"))  # * = differs from the official preset
    assert " 512 " in steps and "int >= 1" in steps and "training steps" in steps


def test_a_diverging_run_is_one_line_naming_step_run_and_checkpoint(tmp_path, capsys):
    sets = [a for k, v in {**TOY, "steps": 400, "record_every": 50, "learning_rate": 1e30}.items()
            for a in ("--set", f"{k}={v}")]
    with pytest.raises(SystemExit) as exc:
        main(["run", NAME, "--quick", *sets, "--out", str(tmp_path / "diverge")])
    err = capsys.readouterr().err
    assert exc.value.code == 1, err
    assert err.startswith("icl-jax: error:") and len(err.strip().splitlines()) == 1
    assert "at step" in err and "seed" in err and "checkpoint" in err and "Traceback" not in err
    with pytest.raises(NonFiniteLossError):  # --debug: the exception itself, with its traceback
        main(["--debug", "run", NAME, "--quick", *sets, "--out", str(tmp_path / "debug")])


def test_overwrite_only_deletes_run_folders_and_a_given_config_records_its_preset(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "draft.txt").write_text("not a run")
    with pytest.raises(ValueError, match="not a run folder"):
        run_experiment(NAME, notes, preset="quick", overrides=TOY, mode="overwrite", progress=False)
    assert (notes / "draft.txt").read_text() == "not a run"
    exp = get_experiment("data-baselines")
    small = exp.quick.replace(samples=256, vocab_size=3, dag_vocab_size=3, ngram_seq_len=20)
    run_experiment("data-baselines", tmp_path / "custom", small, progress=False)
    assert json.loads((tmp_path / "custom" / "config.json").read_text())["preset"] == "custom"


def test_reproduce_resume_continues_started_runs_and_starts_the_others(tmp_path, reference):
    """`reproduce --resume`: a folder with a run resumes (its settings must match the preset),
    folders without one start fresh; everything is checked before the first run."""
    from icl_jax.cli import _reproduce_plan

    plan = _reproduce_plan(tmp_path, "quick", "resume")
    assert {mode for *_, mode in plan} == {"new"}  # nothing started yet
    ref_dir, _ = reference
    shutil.copytree(ref_dir, tmp_path / NAME)  # a started fig2-chain run, but with toy settings
    with pytest.raises(ValueError, match="configuration differs.*learning_rate: stored 3.0, now 10.0"):
        _reproduce_plan(tmp_path, "quick", "resume")
    shutil.rmtree(tmp_path / NAME)
    (tmp_path / NAME).mkdir()
    record = json.loads((ref_dir / "config.json").read_text())
    record["config"] = get_experiment(NAME).quick.to_dict()  # a quick-preset run that was started
    (tmp_path / NAME / "config.json").write_text(json.dumps(record))
    modes = {name: mode for name, *_, mode in _reproduce_plan(tmp_path, "quick", "resume")}
    assert modes[NAME] == "resume" and set(modes.values()) == {"new", "resume"}
    (tmp_path / NAME / "metrics.json").write_text("{}")  # it finished: reported, not run again
    modes = {name: mode for name, *_, mode in _reproduce_plan(tmp_path, "quick", "resume")}
    assert modes[NAME] == "done" and set(modes.values()) == {"new", "done"}


def test_reproduce_summary_adds_the_training_time_of_a_run_trained_by_earlier_calls(tmp_path):
    """A run whose last call only re-evaluated checkpoints (wall time below its models' training
    time) gets a row with the training summed over its models; a run trained in one call does not."""
    from pathlib import Path

    figures = Path(__file__).resolve().parents[1] / "figures"
    for name in ("zhou-ctw", NAME):
        (tmp_path / name).mkdir()
        for f in ("config.json", "metrics.json"):
            shutil.copy(figures / name / f, tmp_path / name / f)
    metrics = json.loads((tmp_path / "zhou-ctw" / "metrics.json").read_text())
    trained = metrics["layers1"]["train_wall_seconds"] + metrics["layers2"]["train_wall_seconds"]
    metrics["wall_seconds"] = 1.0  # as after `--resume` found both models finished
    (tmp_path / "zhou-ctw" / "metrics.json").write_text(json.dumps(metrics))

    assert main(["reproduce", "--quick", "--summary", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert f"| zhou-ctw | training time over all its calls (s) | {trained:,.0f} |" in text
    assert f"| {NAME} | wall time (s) |" in text and f"| {NAME} | training time" not in text


def test_reproduce_summary_reports_the_finished_runs_lists_the_others_and_trains_nothing(tmp_path, capsys):
    """`reproduce --summary` rebuilds summary.md from the committed quick runs: every finished
    run's rows are exactly those the reproduce that ran it wrote (figures/summary.md), an
    unfinished run is listed with its checkpoint's step, a missing one as not started, and
    nothing but summary.md is written."""
    from pathlib import Path

    from icl_jax.experiments import list_experiments
    from icl_jax.experiments.variants import VARIANTS, get_variant

    figures = Path(__file__).resolve().parents[1] / "figures"
    names = [exp.name for exp in list_experiments()]
    for name in names:
        (tmp_path / name).mkdir()
        for f in ("config.json", "metrics.json"):
            shutil.copy(figures / name / f, tmp_path / name / f)
    unfinished, missing, stale = NAME, names[-1], names[-2]
    assert len({unfinished, missing, stale}) == 3
    (tmp_path / unfinished / "metrics.json").unlink()
    shutil.rmtree(tmp_path / missing)
    record = json.loads((tmp_path / stale / "config.json").read_text())
    record["config"]["seeds"] += 1  # a run of other settings than the preset's: refused, by name
    (tmp_path / stale / "config.json").write_text(json.dumps(record))
    # a checkpoint's meta is all the note reads
    (tmp_path / unfinished / "run").mkdir()
    np.savez(tmp_path / unfinished / "run" / "checkpoint.npz",
             __meta__=np.asarray(json.dumps({"step": 1234, "train_seconds": 56.0})))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    assert main(["reproduce", "--quick", "--summary", "--out", str(tmp_path)]) == 0
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == sorted([*before, Path("summary.md")])
    text = (tmp_path / "summary.md").read_text()
    committed = (figures / "summary.md").read_text().splitlines()
    finished = [n for n in names if n not in (unfinished, missing, stale)]
    for name in finished:
        rows = [line for line in committed if line.startswith(f"| {name} |")]
        assert rows and all(row in text for row in rows), name
    assert all(f"| {name} |" not in text for name in (unfinished, missing, stale))
    assert f"- {unfinished}: checkpoints: run/ at step 1,234 (56 s of training)" in text
    assert f"- {missing}: not started" in text
    assert f"- {stale}: resume: the configuration differs from the run stored in" in text
    assert "seeds: stored" in text.split(f"- {stale}:")[1]
    assert f"{len(finished)} had finished before this call" in text

    # the variants' folder: the committed quick variant reported, the others not started
    variants = tmp_path / "variants"
    shutil.copytree(figures / "variants", variants, ignore=shutil.ignore_patterns("run", "*.png"))
    assert main(["reproduce", "--quick", "--variants", "--summary", "--out", str(variants)]) == 0
    text = (variants / "summary.md").read_text()
    done = sorted(p.parent.name for p in variants.glob("*/metrics.json"))
    assert done and f"{len(done)} had finished before this call" in text
    for name in done:
        assert f"| {name} | wall time (s) |" in text and f"| {name} | {get_variant(name).experiment} |" in text
    assert text.count(": not started") == len(VARIANTS) - len(done)

    # it trains nothing, so it takes neither --resume nor --overwrite, and needs a folder of runs
    for extra, match in ((["--resume"], "excludes --resume"), (["--overwrite"], "excludes --resume"),
                         (["--out", str(tmp_path / "absent")], "not a folder of runs")):
        with pytest.raises(SystemExit):
            main(["reproduce", "--quick", "--summary", "--out", str(tmp_path), *extra])
        assert match in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if variants not in p.parents
                  and p != variants) == after


def test_reproduce_evaluates_the_cw_a_run_in_generalization_instead_of_training_it_again(tmp_path, monkeypatch):
    """`reproduce`: chen-generalization runs after chen-cw-a and gets its folder as trained_run
    (both presets train the same recipe). (`--set trained_run=DIR` by hand goes through
    run_experiment, tested in tests/experiments/test_chen_experiments.py.)"""
    import dataclasses

    import icl_jax.experiments as experiments
    import icl_jax.experiments.chen.generalization as gen_module
    from icl_jax.cli import _reproduce_plan

    for preset in ("quick", "official"):
        plan = _reproduce_plan(tmp_path / preset, preset, "new")
        names = [name for name, *_ in plan]
        assert names.index("chen-cw-a") < names.index("chen-generalization")
        trained_runs = {name: cfg.trained_run for name, _, cfg, *_ in plan if hasattr(cfg, "trained_run")}
        assert trained_runs == {"chen-generalization": str(tmp_path / preset / "chen-cw-a")}
        assert not (tmp_path / preset).exists()  # planned: nothing written, the cw-a folder not checked yet

    # a tiny reproduce of just these two experiments
    tiny = {"seq_len": 24, "num_train": 256, "test_size": 256, "record_every": 2, "seeds": 1, "stage_steps": (30, 10)}
    cw_a, gen = get_experiment("chen-cw-a"), get_experiment("chen-generalization")
    gen_tiny = {"eval_lengths": (24,), "eval_alphas": (1.0,), "eval_size": 256}
    two = [dataclasses.replace(gen, quick=gen.quick.replace(**tiny, **gen_tiny)),  # listed first: reordered
           dataclasses.replace(cw_a, quick=cw_a.quick.replace(**tiny))]
    monkeypatch.setattr(experiments, "list_experiments", lambda: list(two))
    trains = []
    real_train = gen_module.train_chen
    monkeypatch.setattr(gen_module, "train_chen", lambda *a, **k: trains.append(1) or real_train(*a, **k))
    out = tmp_path / "tiny"
    assert main(["reproduce", "--quick", "--lanes", "1", "--out", str(out)]) == 0
    assert trains == []  # chen-generalization trained nothing
    cw_metrics = json.loads((out / "chen-cw-a" / "metrics.json").read_text())
    gen_metrics = json.loads((out / "chen-generalization" / "metrics.json").read_text())
    assert gen_metrics["trained_run"] == {"path": str(out / "chen-cw-a"), "experiment": "chen-cw-a"}
    assert gen_metrics["final_loss"] == cw_metrics["final_loss"] and gen_metrics["a"] == cw_metrics["a"]
    assert "| chen-generalization | training | not rerun: the trained model of the chen-cw-a run" in (
        out / "summary.md").read_text()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores (one per lane)")
def test_reproduce_in_two_lanes_writes_the_numbers_of_the_in_process_runs(tmp_path, monkeypatch):
    """`reproduce --lanes 2`: each experiment in a child process pinned to one core (the two side
    by side) writes the metrics the same configs give in process, and summary.md lists both."""
    import dataclasses

    import icl_jax.experiments as experiments

    fig2, data = get_experiment(NAME), get_experiment("data-baselines")
    two = [dataclasses.replace(fig2, quick=fig2.quick.replace(**(TOY | {"steps": 200, "record_every": 100}))),
           dataclasses.replace(data, quick=data.quick.replace(samples=2048))]
    monkeypatch.setattr(experiments, "list_experiments", lambda: list(two))
    assert main(["reproduce", "--quick", "--lanes", "2", "--out", str(tmp_path / "lanes")]) == 0
    timing = {"wall_seconds", "train_wall_seconds"}
    for exp in two:
        run_experiment(exp.name, tmp_path / "own" / exp.name, exp.quick, progress=False)
        own = json.loads((tmp_path / "own" / exp.name / "metrics.json").read_text())
        lane = json.loads((tmp_path / "lanes" / exp.name / "metrics.json").read_text())
        assert {k: v for k, v in lane.items() if k not in timing} == {k: v for k, v in own.items() if k not in timing}
        assert (tmp_path / "lanes" / "logs" / f"{exp.name}.log").is_file()
    summary = (tmp_path / "lanes" / "summary.md").read_text()
    assert "2 experiments in 2 lane(s)" in summary and f"| {NAME} |" in summary and "| data-baselines |" in summary
    # --resume runs nothing that had finished: both are reported from their metrics as they are
    before = {exp.name: (tmp_path / "lanes" / exp.name / "metrics.json").read_text() for exp in two}
    assert main(["reproduce", "--quick", "--resume", "--lanes", "2", "--out", str(tmp_path / "lanes")]) == 0
    assert before == {exp.name: (tmp_path / "lanes" / exp.name / "metrics.json").read_text() for exp in two}
    again = (tmp_path / "lanes" / "summary.md").read_text()
    assert "experiments in" not in again and "2 had finished before this call" in again
    assert again.split("\n\n2 had finished")[0] == summary.split("\n\n2 experiments")[0]
