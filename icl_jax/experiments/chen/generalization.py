"""Chen generalisation (``chen-generalization``, new: the official ``generalization.py``
stores no numbers): train with the CW → a recipe, then evaluate on fresh sequences of other
lengths L and other Dirichlet concentrations α, against Bayes, the count estimator on the
selected set, GIH at the trained a, and the unigram estimator.

See ``docs/chen-theory.md#official-recipes`` (last paragraph) and
``docs/chen-theory.md#generalised-induction-head``.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax

from icl_jax.analysis.plots import plot_lines
from icl_jax.experiments.chen.common import (
    _QUICK,
    ChenConfig,
    _baselines,
    _gih_loss,
    _register,
    _summary,
    _test_losses,
    chen_result,
    chen_task,
    plot_training,
    train_chen,
    uses_window_stats,
)
from icl_jax.experiments.common import _per_seed
from icl_jax.experiments.config import option
from icl_jax.experiments.registry import RunContext

EVAL_STREAM = 10_000_079


@dataclasses.dataclass(frozen=True)
class GeneralizationConfig(ChenConfig):
    """The CW → a recipe plus the evaluation grid (docs/chen-theory.md#official-recipes)."""

    eval_lengths: tuple[int, ...] = option((10, 20, 50, 100, 200, 400), "sequence lengths L evaluated after training", min=2)
    eval_alphas: tuple[float, ...] = option((0.05, 0.1, 0.3, 1.0, 3.0), "Dirichlet concentrations α evaluated after training",
                                            gt=0)
    eval_size: int = option(10000, "fresh test sequences per evaluated L or α", min=2)

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
    figures of :func:`~icl_jax.experiments.chen.common.plot_training`."""
    trained = train_chen(config, ctx)
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
    }


def _gen_summary(metrics: dict) -> list:
    rows = _summary(metrics)
    for key, name in (("by_length", "L"), ("by_alpha", "α")):
        for x, v in metrics[key].items():
            rows.append((f"{name} = {x}: model / Bayes / count(S*) true CE",
                         f"{v['model']['prob_ce']['mean']:.3f} / {v['bayes']['prob_ce']:.3f} / "
                         f"{v.get('count_selected', {}).get('prob_ce', float('nan')):.3f}"))
    return rows


OFFICIAL = GeneralizationConfig(stage_groups=("CW", "a"), stage_steps=(500000, 5000), stage_lrs=(1.0, 1.0),
                                record_every=500)
QUICK = OFFICIAL.replace(**{**_QUICK, "stage_steps": (1200, 900), "record_every": 20,
                            "eval_lengths": (10, 25, 50, 100, 200, 400), "eval_size": 2000})

_register(
    "chen-generalization",
    "New: the CW → a model evaluated at other lengths L and priors α (vs Bayes, count, GIH)",
    TITLE,
    OFFICIAL,
    QUICK,
    run=run_generalization,
    summary=_gen_summary,
)
