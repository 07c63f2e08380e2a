"""Chen generalisation (``chen-generalization``, new: the official ``generalization.py``
stores no numbers): train with the CW → a recipe, then evaluate on fresh sequences of other
lengths L and other Dirichlet concentrations α, against Bayes, the count estimator on the
selected set, GIH at the trained a, and the unigram estimator.

``trained_run=DIR`` skips the training: the model of a finished Chen training run with the
same training settings (``chen-cw-a``, which ``icl-jax reproduce`` runs first and passes here)
is evaluated instead (``docs/experiments.md#reusing-a-trained-run``).

See ``docs/chen-theory.md#official-recipes`` (last paragraph) and
``docs/chen-theory.md#generalised-induction-head``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zlib
from pathlib import Path

import jax
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_lines
from icl_jax.experiments.chen.common import (
    _QUICK,
    ChenConfig,
    ChenTrained,
    _baselines,
    _build,
    _gih_loss,
    _summary,
    _test_losses,
    chen_result,
    chen_task,
    plot_training,
    train_chen,
    uses_window_stats,
)
from icl_jax.experiments.common import _per_seed, _test_set
from icl_jax.experiments.config import option
from icl_jax.experiments.loading import load_run
from icl_jax.experiments.registry import Experiment, RunContext, read_run_config, register

EVAL_STREAM = 10_000_079


@dataclasses.dataclass(frozen=True)
class GeneralizationConfig(ChenConfig):
    """The CW → a recipe plus the evaluation grid (docs/chen-theory.md#official-recipes)."""

    eval_lengths: tuple[int, ...] = option((10, 20, 50, 100, 200, 400), "sequence lengths L evaluated after training", min=2)
    eval_alphas: tuple[float, ...] = option((0.05, 0.1, 0.3, 1.0, 3.0), "Dirichlet concentrations α evaluated after training",
                                            gt=0)
    eval_size: int = option(10000, "fresh test sequences per evaluated L or α", min=2)
    # not in the resume fingerprint: the folder is checked to hold the training this config
    # would compute (training_differences), so the numbers do not depend on whether it is set
    trained_run: str = option(
        "", "folder of a finished Chen training run (e.g. chen-cw-a) with these training settings: its trained "
            "model is evaluated instead of training again ('': train)", computation=False)

    def check(self) -> None:
        super().check()
        if not self.eval_lengths or not self.eval_alphas:
            raise ValueError("eval_lengths and eval_alphas must each name at least one value")
        need = max(self.parent_offsets) + 1
        if not self.full_model:
            need = max(need, self.max_reachable_offset)
        short = [v for v in self.eval_lengths if v < need]
        if short:
            raise ValueError(f"eval_lengths: {short} are shorter than {need}, the shortest sequence holding one "
                             "full parent context and one full copier window")


#: the training settings: every ChenConfig field that changes the computation (not the eval_*
#: fields, trained_run, figure_format or allow_unreachable_parents)
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(ChenConfig) if f.metadata["computation"])
#: what a finished run folder holds besides config.json (the engine's outputs in run/)
_FINISHED = ("metrics.json", "run/params.npz", "run/trajectory.npz", "run/metrics.json")


def training_differences(config: ChenConfig, other: ChenConfig) -> dict[str, tuple]:
    """``{key: (config's value, other's value)}`` for every training setting (``TRAINING_KEYS``)
    that differs; empty when ``other``'s run trains exactly what ``config``'s would."""
    a, b = config.to_dict(), other.to_dict()
    return {k: (a[k], b[k]) for k in TRAINING_KEYS if a[k] != b[k]}


def check_trained_run(config: GeneralizationConfig) -> tuple[Path, str]:
    """(folder, experiment name) of ``config.trained_run`` after checking that it is a finished
    Chen training run whose training settings equal ``config``'s; a ValueError names what is
    wrong (the differing keys with both values). Reads only config.json and file names."""
    path = Path(config.trained_run)
    if not path.is_dir():
        raise ValueError(f"trained_run: {path} is not a folder (expected a finished chen-cw-a run folder)")
    try:
        exp, _, stored = read_run_config(path)
    except ValueError as err:
        raise ValueError(f"trained_run: {err}") from None
    if not isinstance(stored, ChenConfig):
        raise ValueError(f"trained_run: {path} holds a {exp.name} run, not a Chen training run (e.g. chen-cw-a)")
    diffs = training_differences(stored, config)
    if diffs:
        text = "; ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in diffs.items())
        raise ValueError(f"trained_run: the training settings differ from the {exp.name} run stored in {path} "
                         f"({text}); use the stored values, or leave trained_run empty to train")
    missing = [f for f in _FINISHED if not (path / f).is_file()]
    if missing:
        raise ValueError(f"trained_run: the {exp.name} run in {path} is not a finished run with its trained "
                         f"parameters (no {', '.join(missing)}); finish it with icl-jax resume {path}, or leave "
                         "trained_run empty to train")
    return path, exp.name


def load_trained(config: GeneralizationConfig, path: Path) -> ChenTrained:
    """The :class:`ChenTrained` of the finished run in ``path`` (checked by
    :func:`check_trained_run`), as :func:`train_chen` would return it for ``config``: its final
    parameters, recorded metrics, training loss, stage starts and training wall time, with the
    task, model and held-out test set rebuilt from ``config``."""
    run = load_run(path)
    engine_summary = json.loads((path / "run" / "metrics.json").read_text())
    traj = run.trajectories
    res = engine.TrainResult(
        params=run.params, state=None, loss=traj["loss"], metrics=traj["metrics"], record_steps=traj["steps"],
        stage_starts=tuple(engine_summary["stage_starts"]), seeds=run.seeds, hparams=run.grid,
        out_dir=str(path / "run"), wall_seconds=engine_summary["wall_seconds"],
    )
    task, model = _build(config)
    metrics = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    return ChenTrained(task, model, res, metrics, np.asarray(res.record_steps), _test_set(task, config))


def _seed_losses_fn(config: GeneralizationConfig, model):
    """(params_N, test) → every seed's test losses in both conventions (one compiled program
    per test-set shape)."""
    return jax.jit(jax.vmap(lambda p, test: _test_losses(p, test, model, config), in_axes=(0, None)))


def _evaluate_shift(config: GeneralizationConfig, model, params_N, offsets, a_final, seed_losses, **changes) -> dict:
    """Every seed's trained model and the references on a fresh test set of the task with
    ``changes`` (seq_len or alpha), both loss conventions."""
    task = chen_task(config, **changes)
    tag = zlib.crc32(repr(sorted(changes.items())).encode()) % (2**31)  # stable across processes
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), EVAL_STREAM), tag)
    test = task.sample(key, config.eval_size)
    test_in = model.window_stats(test, compress=True) if uses_window_stats(model) else test
    losses = seed_losses(params_N, test_in)
    base = _baselines(task, test)
    out = {
        "model": {k: _per_seed(v) for k, v in losses.items()},
        "bayes": {"prob_ce": base["bayes"]["loss"], "official": base["bayes/official"]["loss"]},
        "unigram": {"prob_ce": base["unigram"]["loss"], "official": base["unigram/official"]["loss"]},
    }
    name = "".join(str(o) for o in offsets)
    if f"count_{name}" in base:
        out["count_selected"] = {"prob_ce": base[f"count_{name}"]["loss"], "official": base[f"count_{name}/official"]["loss"]}
    if offsets:
        out["gih_selected_at_final_a"] = _gih_loss(test, offsets, a_final, task.vocab_size)
    return out


TITLE = "Chen CW → a (generalisation model)"


def run_generalization(config: GeneralizationConfig, ctx: RunContext) -> dict:
    """New (the paper's generalisation claim has no published numbers;
    docs/chen-theory.md#official-recipes): train with the CW → a recipe, then evaluate on other
    sequence lengths L (the banded copier has no L-sized parameter) and other Dirichlet
    concentrations α, against Bayes, the count estimator on the selected set, GIH at the trained a,
    and the unigram estimator. Figures: ``ctx.figure("generalization")`` and the training
    figures of :func:`~icl_jax.experiments.chen.common.plot_training`.

    With ``config.trained_run`` the training is not run: the finished run stored there (checked
    by :func:`check_trained_run`) supplies the trained model and its recorded training
    (:func:`load_trained`), its engine outputs are copied into ``ctx.run_dir`` (so
    :func:`~icl_jax.experiments.loading.load_run` works on this folder alone), and metrics.json
    is what a run that trains would write (same numbers: the same training settings; its
    ``train_wall_seconds`` is the stored run's), with ``trained_run`` naming the source."""
    if config.trained_run:
        source, source_exp = check_trained_run(config)
        trained = load_trained(config, source)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        if (source / "run").resolve() != ctx.run_dir.resolve():  # not this folder's own run (resumed)
            for name in ("params.npz", "trajectory.npz", "metrics.json"):
                shutil.copyfile(source / "run" / name, ctx.run_dir / name)
        reused = {"path": str(source), "experiment": source_exp}
    else:
        trained, reused = train_chen(config, ctx), None
    model = trained.model
    result = chen_result(config, trained)
    params_N = jax.tree.map(lambda x: x[0], trained.result.params)
    offsets, a_final = tuple(result["selected_offsets"]), result["a"]["final"]["per_seed"][0]
    lengths = list(config.eval_lengths)
    alphas = list(config.eval_alphas)
    seed_losses = _seed_losses_fn(config, model)
    by_len = {L: _evaluate_shift(config, model, params_N, offsets, a_final, seed_losses, seq_len=L) for L in lengths}
    by_alpha = {al: _evaluate_shift(config, model, params_N, offsets, a_final, seed_losses, alpha=al) for al in alphas}

    def panel(table, xs, conv, xlabel, train_x):
        lines = {"model": (xs, [table[x]["model"][conv]["mean"] for x in xs])}
        for ref in ("bayes", "count_selected", "gih_selected_at_final_a", "unigram"):
            if ref in table[xs[0]]:
                lines[ref] = (xs, [table[x][ref][conv] for x in xs])
        return {"lines": lines, "xlabel": xlabel, "logx": True, "markers": True, "vlines": [train_x],
                "ylabel": f"test loss ({'true CE' if conv == 'prob_ce' else 'official metric'})",
                "title": f"trained at {xlabel.split()[0]} = {train_x:g} (vertical line)"}

    plot_lines(
        ctx.figure("generalization"),
        [panel(by_len, lengths, "prob_ce", "L (sequence length)", config.seq_len),
         panel(by_alpha, alphas, "prob_ce", "α (Dirichlet concentration)", config.alpha),
         panel(by_len, lengths, "official", "L (sequence length)", config.seq_len),
         panel(by_alpha, alphas, "official", "α (Dirichlet concentration)", config.alpha)],
        title=ctx.title("Chen: length and prior generalisation of the CW → a model (new; no official numbers)"),
        ncols=2,
        formats=ctx.formats,
    )
    plot_training(config, ctx, trained, result, TITLE)
    return {
        **result,
        "by_length": {str(k): v for k, v in by_len.items()},
        "by_alpha": {f"{k:g}": v for k, v in by_alpha.items()},
        "trained_run": reused,
    }


def _gen_summary(metrics: dict) -> list:
    rows = _summary(metrics)
    if metrics.get("trained_run"):
        src = metrics["trained_run"]
        rows.insert(0, ("training", f"not rerun: the trained model of the {src['experiment']} run in {src['path']}"))
    for key, name in (("by_length", "L"), ("by_alpha", "α")):
        for x, v in metrics[key].items():
            rows.append((f"{name} = {x}: model / Bayes / count(S*) true CE",
                         f"{v['model']['prob_ce']['mean']:.3f} / {v['bayes']['prob_ce']:.3f} / "
                         f"{v.get('count_selected', {}).get('prob_ce', float('nan')):.3f}"))
    return rows


class _GeneralizationExperiment(Experiment):
    """``chen-generalization``: :meth:`check` (run before anything is written) also checks
    ``trained_run``. Not in ``build``, which :func:`~icl_jax.experiments.loading.load_run` calls
    to reload this run: the folder is needed to run, not to reload."""

    def check(self, config):
        setup = super().check(config)
        if config.trained_run:
            check_trained_run(config)
        return setup


# the training settings of both presets equal chen-cw-a's (recipes.py), so `icl-jax reproduce`
# evaluates that run's model (trained_run) instead of training the same recipe twice
OFFICIAL = GeneralizationConfig(stage_groups=("CW", "a"), stage_steps=(500000, 5000), stage_lrs=(1.0, 1.0),
                                record_every=500)
QUICK = OFFICIAL.replace(**{**_QUICK, "stage_steps": (1200, 900),
                            "eval_lengths": (10, 25, 50, 100, 200, 400), "eval_size": 2000})

register(_GeneralizationExperiment(
    name="chen-generalization",
    description="New: the CW → a model evaluated at other lengths L and priors α (vs Bayes, count, GIH)",
    official=OFFICIAL,
    quick=QUICK,
    run=run_generalization,
    build=_build,
    summary=_gen_summary,
))
