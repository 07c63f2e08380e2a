"""``zhou-ctw``: Zhou, Tian & Diggavi 2025, "Transformers learn variable-order Markov chains
in-context" — on sequences from a random binary context-tree source of maximal depth D (the
CTW prior), transformers with two or more layers approach the Bayes-optimal context-tree
weighting (CTW) predictor, one layer does not, and attention-only models fall short
(docs/peer-tasks.md#variable-order-chains).

Three models are compared, each one engine sweep over the seeds (one vmapped call): two layers
with MLPs (the run's model, ``run/``), one layer with an MLP (``run/layers1/``) and two layers
attention only (``run/attention_only2/``, option ``attention_only``). Recorded over training,
on one held-out set (:func:`~icl_jax.experiments.common._test_sequences`): the per-position test
loss and KL(CTW ‖ model) (:func:`~icl_jax.analysis.progress.kl_to_strategies`). The references
on the same set are CTW (:func:`~icl_jax.tasks.context_tree.ctw_predict`, Bayes for this prior),
the add-½ (KT) in-context n-gram strategies of orders 0..D
(:func:`~icl_jax.tasks.strategies.ngram_strategy`, n = order + 1; order D is the Bayes
predictor of a full depth-D tree) and the uniform predictor, log 2
(docs/peer-tasks.md#in-context-n-gram-strategies, docs/peer-tasks.md#progress-measures).

The recipe is the project's reading of the paper; the spec marks the data definition as an
unverified recollection, and the model and optimiser below are not checked against the paper
either. Our reading (the official preset): binary tokens, D = 3, T = 128 (our choice: long
enough for the in-context statistics of a depth-3 tree to separate CTW from the n-gram
strategies); a GPT-2-style pre-LN transformer with learned absolute positions, width 64, 4 heads
per layer and MLPs of width 256; loss at every position; AdamW 1e-3 with a cosine decay, weight
decay 0.01, batch 64, 20,000 steps, 3 seeds. The quick preset (a few CPU minutes) keeps D = 3 and
shrinks T to 64, the width to 32 (MLP 32) and the run to 2,000 steps of batch 16 at 5e-3, 2 seeds;
it uses relative positions, on which the previous-token heads form within that budget, and leaves
the attention-only model out (``--set attention_only=true`` adds it).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_lines
from icl_jax.analysis.progress import icl_score, kl_to_strategies, per_position_nll
from icl_jax.experiments.common import (
    _check_record_every,
    _loss_stat,
    _mean_sd,
    _per_seed,
    _seeds,
    _test_sequences,
)
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.context_tree import ContextTreeTask
from icl_jax.tasks.strategies import MAX_STRATEGY_CELLS, ngram_strategy

__all__ = ["ContextTreeDepthConfig"]

#: the deepest tree whose order-D strategy (2^(D+1) count cells) the strategies hold
MAX_DEPTH = int(np.log2(MAX_STRATEGY_CELLS)) - 1
#: the run's model (in ``run/``); the others are compared in ``run/<name>/``
MAIN = "layers2"
#: name → (layers, MLP) of every model compared
MODELS = {"layers1": (1, True), "layers2": (2, True), "attention_only2": (2, False)}
LABELS = {"layers1": "1 layer", "layers2": "2 layers", "attention_only2": "2 layers, attention only"}
KT_BETA = 0.5  # the strategies' pseudo-count: the KT estimator of the source's leaves


@dataclasses.dataclass(frozen=True)
class ContextTreeDepthConfig(ExperimentConfig):
    """The context-tree source and the depths compared (docs/peer-tasks.md#variable-order-chains)."""

    title_fields = {"depth": "D", "seq_len": "T", "width": "d", "steps": "steps", "learning_rate": "lr",
                    "seeds": "seeds"}

    seeds: int = option(3, "independent runs per model (one vmapped call each)", min=1)
    depth: int = option(3, "D, the maximal context depth of the binary source", min=1, max=MAX_DEPTH)
    seq_len: int = option(128, "T, tokens per sequence (loss at every position); > depth", min=2)
    width: int = option(64, "model width d (a multiple of heads)", min=1)
    heads: int = option(4, "attention heads per layer (every model)", min=1)
    mlp_width: int = option(256, "hidden width of the MLPs", min=1)
    positions: Literal["absolute", "relative"] = option(
        "absolute", "learned absolute positions (GPT-2 style) or a learned relative bias per head")
    attention_only: bool = option(True, "also train a two-layer attention-only model (run/attention_only2)")
    steps: int = option(20000, "AdamW steps", min=1)
    batch_size: int = option(64, "fresh sequences per step", min=1)
    learning_rate: float = option(1e-3, "peak learning rate (cosine decay to 0)", gt=0)
    weight_decay: float = option(0.01, "AdamW decoupled weight decay", min=0)
    test_size: int = option(1024, "held-out sequences (one set for every run)", min=2)
    record_every: int = option(500, "steps between recorded metrics", min=1)

    def check(self) -> None:
        _check_record_every(self)
        if self.seq_len <= self.depth:
            raise ValueError(f"seq_len ({self.seq_len}) must be > depth ({self.depth})")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")


OFFICIAL = ContextTreeDepthConfig()
QUICK = OFFICIAL.replace(seq_len=64, width=32, mlp_width=32, positions="relative", attention_only=False, steps=2000,
                         batch_size=16, learning_rate=5e-3, seeds=2, test_size=512, record_every=100)


def _task(config: ContextTreeDepthConfig) -> ContextTreeTask:
    return ContextTreeTask(2, config.depth, config.seq_len)


def _model(config: ContextTreeDepthConfig, name: str) -> Transformer:
    layers, mlp = MODELS[name]
    return Transformer(2, config.seq_len, heads=(config.heads,) * layers, width=config.width,
                       positions=config.positions, mlp=mlp, mlp_width=config.mlp_width if mlp else None,
                       layernorm=True)


def _build(config: ContextTreeDepthConfig) -> Setup:
    return Setup(_task(config), _model(config, MAIN))


def _names(config: ContextTreeDepthConfig) -> list[str]:
    return [n for n in MODELS if config.attention_only or n != "attention_only2"]


def _references(test, depth: int) -> tuple[dict, jax.Array]:
    """The reference predictors on the test set: their mean losses, and CTW's probabilities."""
    tokens, labels = test.tokens_BxT, test.labels_BxT
    ctw = ContextTreeTask(2, depth, tokens.shape[1]).bayes(tokens)
    ctw_nll_B = jnp.mean(per_position_nll(ctw, labels), axis=-1)
    ngram = {f"order{n - 1}": float(jnp.mean(per_position_nll(ngram_strategy(tokens, 2, n, KT_BETA), labels)))
             for n in range(1, depth + 2)}
    best = int(min(ngram, key=ngram.get).removeprefix("order"))
    best_nll_BxT = per_position_nll(ngram_strategy(tokens, 2, best + 1, KT_BETA), labels)
    refs = {
        "ctw": _loss_stat(ctw_nll_B),
        "ngram_loss": ngram,
        "best_ngram": {"order": best, "loss": ngram[f"order{best}"]},
        "uniform_loss": float(np.log(2.0)),
        "oracle_loss": float(jnp.mean(per_position_nll(test.label_probs_BxTxS, labels))),
        "ctw_position_loss": jnp.mean(per_position_nll(ctw, labels), axis=0),
        "best_ngram_position_loss": jnp.mean(best_nll_BxT, axis=0),
    }
    return refs, ctw


def _recorder(model: Transformer, test, ctw_BxTxS: jax.Array):
    """``metrics(params, step)`` on the whole test set: the mean test loss, its per-position
    profile ``[T]``, KL(CTW ‖ model), and the standard error of the per-sequence gap to CTW
    (the test set's noise on the gap)."""
    ctw_nll_B = jnp.mean(per_position_nll(ctw_BxTxS, test.labels_BxT), axis=-1)

    def record(params, step):
        probs = jax.nn.softmax(model.apply_all(params, test.tokens_BxT), axis=-1)
        nll_BxT = per_position_nll(probs, test.labels_BxT)
        gap_B = jnp.mean(nll_BxT, axis=-1) - ctw_nll_B
        return {"test_loss": jnp.mean(nll_BxT), "position_loss": jnp.mean(nll_BxT, axis=0),
                "kl_ctw": kl_to_strategies(probs, {"ctw": ctw_BxTxS})["ctw"],
                "gap_se": jnp.std(gap_B, ddof=1) / np.sqrt(gap_B.shape[0])}

    return record


def _reference_lines(refs: dict, depth: int) -> dict:
    """Horizontal reference lines: CTW, the n-gram strategies (all orders up to 3 of them; else
    order 0, the best and order D) and uniform."""
    ngram = refs["ngram_loss"]
    orders = range(depth + 1) if depth <= 3 else sorted({0, refs["best_ngram"]["order"], depth})
    lines = {"CTW (Bayes)": refs["ctw"]["loss"]}
    lines.update({f"order-{o} n-gram (add-½)": ngram[f"order{o}"] for o in orders})
    lines["uniform (log 2)"] = refs["uniform_loss"]
    return lines


def run_ctw_depth(config: ContextTreeDepthConfig, ctx: RunContext) -> dict:
    task = _task(config)
    test = _test_sequences(task, config)
    refs, ctw = _references(test, config.depth)
    stage = engine.Stage(config.steps, optimizer="adamw", learning_rate=config.learning_rate, schedule="cosine",
                         weight_decay=config.weight_decay)
    out, runs = {}, {}
    for name in _names(config):
        model = _model(config, name)
        kwargs = ctx.sweep_kwargs()
        if name != MAIN:  # the run's model is the two-layer one; the comparisons in their own folders
            kwargs["out_dir"] = ctx.run_dir / name
        res = engine.sweep(model.sequence_loss, lambda key, hp, model=model: model.init(key), [stage],
                           engine.FreshSamples(lambda key, hp: task.sample_sequences(key, config.batch_size)),
                           seeds=_seeds(config), metrics=_recorder(model, test, ctw),
                           record_every=config.record_every, **kwargs)
        m = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
        steps = np.asarray(res.record_steps)
        final = m["test_loss"][:, -1]
        position_SxT = m["position_loss"][:, -1]
        runs[name] = (steps, m["test_loss"], position_SxT.mean(0))
        out[name] = {
            "final_test_loss": _per_seed(final),
            "gap_to_ctw": _per_seed(final - refs["ctw"]["loss"]),
            "gap_to_ctw_se": m["gap_se"][:, -1].tolist(),
            "gap_to_best_ngram": _per_seed(final - refs["best_ngram"]["loss"]),
            "kl_to_ctw": _per_seed(m["kl_ctw"][:, -1]),
            "icl_score": _per_seed([float(icl_score(row)) for row in position_SxT]),
            "trajectory": {"steps": steps.tolist(), "test_loss": m["test_loss"].mean(0).tolist(),
                           "kl_to_ctw": m["kl_ctw"].mean(0).tolist()},
            "train_wall_seconds": res.wall_seconds,
        }
    ctw_position = np.asarray(refs.pop("ctw_position_loss"))
    ngram_position = np.asarray(refs.pop("best_ngram_position_loss"))
    lines = _reference_lines(refs, config.depth)
    top = max(float(np.max(r[1][:, 1:] if r[1].shape[1] > 1 else r[1])) for r in runs.values())  # after step 0
    ylim = (refs["ctw"]["loss"] - 0.02, min(top, refs["ngram_loss"]["order0"] + 0.06) + 0.02)
    positions = np.arange(config.seq_len)
    best = refs["best_ngram"]["order"]
    per_position = {LABELS[n]: (positions, runs[n][2]) for n in runs}
    per_position["CTW (Bayes)"] = (positions, ctw_position)
    per_position[f"order-{best} n-gram (best)"] = (positions, ngram_position)
    panels = [{"lines": {f"seed {s}": (runs[n][0], runs[n][1][j]) for j, s in enumerate(_seeds(config))},
               "refs": lines, "ylim": ylim, "ylabel": "test loss per position (nats)", "title": LABELS[n]}
              for n in runs]
    panels.append({"lines": per_position, "integer_x": True,
                   "xlabel": "position t (predicting token t + 1)",
                   "ylabel": f"test loss at the end (nats; mean of {config.seeds} seeds)",
                   "title": "loss per position at the end"})
    compared = " vs ".join(LABELS[n] for n in runs)
    plot_lines(
        ctx.figure("loss"),
        panels,
        title=ctx.title(f"Zhou et al.: binary context-tree source (D={config.depth}), {compared}, against CTW"),
        ncols=2,
        formats=ctx.formats,
    )
    ctw_icl = float(icl_score(ctw_position))
    return {"depth": config.depth, "seq_len": config.seq_len, "seeds": _seeds(config), **refs,
            "ctw_icl_score": ctw_icl, **out}


def _summary(m: dict) -> list:
    f = _mean_sd
    b = m["best_ngram"]
    rows = [("reference losses: CTW (Bayes) / best n-gram / order-0 n-gram / uniform",
             f"{m['ctw']['loss']:.4f} / {b['loss']:.4f} (order {b['order']}) / {m['ngram_loss']['order0']:.4f} / "
             f"{m['uniform_loss']:.4f}")]
    n = len(m["seeds"])
    for name, label in LABELS.items():
        if name not in m:
            continue
        r = m[name]
        rows.append((f"{label}: final test loss", f"{f(r['final_test_loss'])} ({n} seeds)"))
        rows.append((f"{label}: gap to CTW / KL(CTW ‖ model)", f"{f(r['gap_to_ctw'])} / {f(r['kl_to_ctw'])}"))
        rows.append((f"{label}: ICL score (late − early loss; CTW {m['ctw_icl_score']:.4f})", f(r["icl_score"])))
    return rows


register(
    Experiment(
        name="zhou-ctw",
        description="Zhou et al.: binary context-tree source, one vs two layers vs attention only, against CTW (Bayes)",
        official=OFFICIAL,
        quick=QUICK,
        run=run_ctw_depth,
        build=_build,
        summary=_summary,
    )
)
