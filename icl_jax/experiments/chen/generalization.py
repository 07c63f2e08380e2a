"""Chen generalisation (``chen-generalization``, new: the official ``generalization.py``
stores no numbers): train with the CW → a recipe, then evaluate on fresh sequences of other
lengths L and other Dirichlet concentrations α, against Bayes, the count estimator on the
selected set, GIH at the trained a, and the unigram estimator.

See ``docs/chen-theory.md#official-recipes`` (last paragraph) and
``docs/chen-theory.md#generalised-induction-head``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import jax

from icl_jax.analysis.plots import plot_lines
from icl_jax.experiments.chen.common import (
    _QUICK,
    _baselines,
    _gih_loss,
    _register,
    _summary,
    _test_losses,
    chen_result,
    chen_task,
    plot_training,
    train_chen,
)
from icl_jax.experiments.common import _per_seed

GEN_DEFAULTS = {
    "stage_groups": ["CW", "a"],
    "stage_steps": [500000, 5000],
    "stage_lrs": [1.0, 1.0],
    "record_every": 500,
    "eval_lengths": [10, 20, 50, 100, 200, 400],
    "eval_alphas": [0.05, 0.1, 0.3, 1.0, 3.0],
    "eval_size": 10000,
}
EVAL_STREAM = 10_000_079


def _evaluate_shift(config, model, params_N, offsets, a_final, **changes) -> dict:
    """Every seed's trained model and the references on a fresh test set of the task with
    ``changes`` (seq_len or alpha), both loss conventions."""
    task = chen_task(config, **changes)
    tag = zlib.crc32(repr(sorted(changes.items())).encode()) % (2**31)  # stable across processes
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config["seed"]), EVAL_STREAM), tag)
    test = task.sample(key, config["eval_size"])
    test_in = model.window_stats(test, compress=True) if not (model.full or model.use_self_offset) else test
    losses = jax.vmap(lambda p: _test_losses(p, test_in, model, config))(params_N)
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


def run_generalization(config: dict, out: Path, progress: bool = True) -> dict:
    """New (the paper's generalisation claim has no published numbers;
    docs/chen-theory.md#official-recipes): train with the CW → a recipe, then evaluate on other
    sequence lengths L (the banded copier has no L-sized parameter) and other Dirichlet
    concentrations α, against Bayes, the count estimator on the selected set, GIH at the trained a,
    and the unigram estimator."""
    task, model, res, m, steps, test = train_chen(config, out, progress)
    result = chen_result(config, task, model, res, m, steps, test)
    params_N = jax.tree.map(lambda x: x[0], res.params)
    offsets, a_final = tuple(result["selected_offsets"]), result["a"]["final"]["per_seed"][0]
    lengths = [int(v) for v in config["eval_lengths"]]
    alphas = [float(v) for v in config["eval_alphas"]]
    by_len = {L: _evaluate_shift(config, model, params_N, offsets, a_final, seq_len=L) for L in lengths}
    by_alpha = {al: _evaluate_shift(config, model, params_N, offsets, a_final, alpha=al) for al in alphas}

    def panel(table, xs, conv, xlabel, train_x):
        lines = {"model": (xs, [table[x]["model"][conv]["mean"] for x in xs])}
        for ref in ("bayes", "count_selected", "gih_selected_at_final_a", "unigram"):
            if ref in table[xs[0]]:
                lines[ref] = (xs, [table[x][ref][conv] for x in xs])
        return {"lines": lines, "xlabel": xlabel, "logx": True, "markers": True, "vlines": [train_x],
                "ylabel": f"test loss ({'true CE' if conv == 'prob_ce' else 'official metric'})",
                "title": f"trained at {xlabel.split()[0]} = {train_x} (vertical line)"}

    plot_lines(
        out / "chen_generalization.png",
        [panel(by_len, lengths, "prob_ce", "L (sequence length)", config["seq_len"]),
         panel(by_alpha, alphas, "prob_ce", "α (Dirichlet concentration)", config["alpha"]),
         panel(by_len, lengths, "official", "L (sequence length)", config["seq_len"]),
         panel(by_alpha, alphas, "official", "α (Dirichlet concentration)", config["alpha"])],
        title="Chen: length and prior generalisation of the CW → a model (new; no official numbers)",
    )
    plot_training(out, "chen_generalization_train", "Chen CW → a (generalisation model)", config, task, model, result, m, steps)
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


_register(
    "chen-generalization",
    "New: the CW → a model evaluated at other lengths L and priors α (vs Bayes, count, GIH)",
    "",
    GEN_DEFAULTS,
    {**_QUICK, "stage_steps": [1200, 900], "record_every": 20, "eval_lengths": [10, 25, 50, 100, 200, 400],
     "eval_alphas": [0.05, 0.1, 0.3, 1.0, 3.0], "eval_size": 2000},
    run=run_generalization,
    summary=_gen_summary,
)
