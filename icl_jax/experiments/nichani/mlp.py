"""Nichani Fig. 8 (``nichani-fig8-mlp``): the standard-residual transformer with value
matrices and MLPs, trained by AdamW on the chain, learns the previous-token head; layer-1
attention averaged over real sequences, and the test loss against Bayes and the oracle.

Model: ``docs/models.md#fig-8-transformer-with-mlps``; recipe:
``docs/nichani-theory.md#official-recipes``; one head per layer:
``docs/quirks.md#nichani-quirk-9``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_heatmaps, plot_runs
from icl_jax.experiments.common import _test_set
from icl_jax.experiments.config import option
from icl_jax.experiments.nichani.common import (
    NichaniConfig,
    _loss_panel,
    _train_task,
    _tree_result,
    _tree_summary,
    _true_adjacency,
)
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.transformer import fig8_transformer
from icl_jax.tasks.tasks import tree_task


@dataclasses.dataclass(frozen=True)
class MLPConfig(NichaniConfig):
    """Fig. 8 (docs/nichani-theory.md#official-recipes): the transformer with values and MLPs
    (docs/models.md#fig-8-transformer-with-mlps) on the chain, AdamW, cosine."""

    seeds: int = option(4, "number of independent runs (one vmapped call)", min=1)
    num_layers: int = option(2, "transformer layers, one head each (docs/quirks.md#nichani-quirk-9)", min=1)
    steps: int = option(4096, "training steps", min=1)
    optimizer: Literal["sgd", "adam", "adamw"] = option("adamw", "optimiser (optax)")
    learning_rate: float = option(1e-2, "peak learning rate", gt=0)
    weight_decay: float = option(2e-4, "decoupled weight decay (adamw)", min=0)
    attention_batch: int = option(1024, "test sequences over which the layer-1 attention pattern is averaged "
                                        "(the first ones of the test set)", min=1)
    record_every: int = option(32, "steps between recorded metrics", min=1)

    def check(self) -> None:
        super().check()
        if self.attention_batch > self.test_size:
            raise ValueError(f"attention_batch ({self.attention_batch}) must be <= test_size ({self.test_size}): "
                             "the attention is averaged over test sequences")


OFFICIAL = MLPConfig()
QUICK = OFFICIAL.replace(steps=1000, batch_size=256, test_size=8192, record_every=50, seeds=2)


def _build(config: MLPConfig) -> Setup:
    task = tree_task("chain", vocab_size=config.vocab_size, seq_len=config.seq_len, alpha=config.alpha)
    return Setup(task, fig8_transformer(task.vocab_size, task.seq_len, config.num_layers))


def run_mlp(config: MLPConfig, ctx: RunContext) -> dict:
    """Nichani et al. Fig. 8: the standard-residual transformer with value matrices and MLPs
    (docs/models.md#fig-8-transformer-with-mlps) on the chain; layer-1 attention averaged over a
    batch of real sequences (token blocks included, unlike Figs 2/9 which read the positional block of A1)."""
    task, model = _build(config)
    s, t = task.vocab_size, task.seq_len
    dag = task.graph.dag_array
    probe = _test_set(task, config).tokens_BxT[: config.attention_batch]

    def attention(params):
        attn = model.attention(params, probe)[0][:, 0].mean(0)  # layer 1, its one head: [T, T], batch average
        return {**parent_attention_metrics(attn, dag), "attention": attn}

    trained = _train_task(config, ctx, task, model, lambda key, hp: model.init(key), attention)
    m, steps, base = trained.metrics, trained.steps, trained.baselines
    plot_heatmaps(
        ctx.figure("attention"),
        [
            {"matrix": _true_adjacency(task.graph.parents, t), "title": "causal graph G", "cmap": "Greys",
             "xlabel": "parent position j", "ylabel": "position i"},
            {"matrix": m["attention"][0, -1], "title": f"layer-1 attention pattern (mean over {probe.shape[0]} sequences, seed 0)",
             "vmax": 1.0, "xlabel": "key position j", "ylabel": "query position i"},
        ],
        title=ctx.title(f"Nichani Fig. 8: transformer with MLPs, chain, S={s}, T={t}"),
        formats=ctx.formats,
    )
    plot_runs(
        ctx.figure("loss"),
        steps,
        [
            _loss_panel(m["test_loss"], base, ("bayes", "oracle", "unigram")),
            {"values": m["mean_parent_attention"], "ylabel": "mean layer-1 attention on the parent", "label": "seeds", "ylim": (0, 1.02)},
        ],
        title=ctx.title("Nichani Fig. 8: test loss with Bayes / oracle lines, and previous-token attention"),
        formats=ctx.formats,
    )
    return {
        "graph": dag.tolist(),
        **_tree_result(trained),
        "trajectory": {
            "steps": steps.tolist(),
            "test_loss": m["test_loss"].mean(0).tolist(),
            "mean_parent_attention": m["mean_parent_attention"].mean(0).tolist(),
        },
    }


register(
    Experiment(
        name="nichani-fig8-mlp",
        description="Nichani Fig. 8: transformer with values + MLPs learns the previous-token head on the chain (AdamW)",
        official=OFFICIAL,
        quick=QUICK,
        run=run_mlp,
        build=_build,
        summary=_tree_summary,
    )
)
