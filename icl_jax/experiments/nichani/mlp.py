"""Nichani Fig. 8 (``nichani-fig8-mlp``): the standard-residual transformer with value
matrices and MLPs, trained by AdamW on the chain, learns the previous-token head; layer-1
attention averaged over real sequences, and the test loss against Bayes and the oracle.

Model: ``docs/models.md#fig-8-transformer-with-mlps``; recipe:
``docs/nichani-theory.md#official-recipes``; one head per layer:
``docs/quirks.md#nichani-quirk-9``.
"""

from __future__ import annotations

from pathlib import Path

from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_heatmaps, plot_runs
from icl_jax.experiments.common import _test_set
from icl_jax.experiments.nichani.common import _loss_panel, _train_task, _tree_result, _tree_summary, _true_adjacency
from icl_jax.experiments.registry import Experiment, register
from icl_jax.models.transformer import fig8_transformer
from icl_jax.tasks.tasks import tree_task

MLP_DEFAULTS = {
    "seed": 0,
    "seeds": 4,
    "vocab_size": 10,
    "seq_len": 20,
    "alpha": 0.1,
    "num_layers": 2,
    "steps": 4096,
    "batch_size": 1024,
    "optimizer": "adamw",
    "learning_rate": 1e-2,
    "schedule": "cosine",
    "weight_decay": 2e-4,
    "test_size": 2**16,
    "attention_batch": 1024,
    "record_every": 32,
    "resume": False,
}
MLP_QUICK = {"steps": 1000, "batch_size": 256, "test_size": 8192, "record_every": 50, "seeds": 2}


def run_mlp(config: dict, out: Path, progress: bool = True) -> dict:
    """Nichani et al. Fig. 8: the standard-residual transformer with value matrices and MLPs
    (docs/models.md#fig-8-transformer-with-mlps) on the chain; layer-1 attention averaged over a
    batch of real sequences (token blocks included, unlike Figs 2/9 which read the positional block of A1)."""
    task = tree_task("chain", vocab_size=config["vocab_size"], seq_len=config["seq_len"], alpha=config["alpha"])
    s, t = task.vocab_size, task.seq_len
    model = fig8_transformer(s, t, config["num_layers"])
    dag = task.graph.dag_array()
    probe = _test_set(task, config).tokens_BxT[: config["attention_batch"]]

    def attention(params):
        attn = model.attention(params, probe)[0][:, 0].mean(0)  # layer 1, its one head: [T, T], batch average
        return {**parent_attention_metrics(attn, dag), "attention": attn}

    trained = _train_task(config, out, progress, task, model, lambda key, hp: model.init(key), attention)
    m, steps, base = trained.metrics, trained.steps, trained.baselines
    plot_heatmaps(
        out / "fig8_mlp_attention.png",
        [
            {"matrix": _true_adjacency(task.graph.parents, t), "title": "causal graph G", "cmap": "Greys"},
            {"matrix": m["attention"][0, -1], "title": f"layer-1 attention pattern (mean over {probe.shape[0]} sequences, seed 0)", "vmax": 1.0},
        ],
        title=f"Nichani Fig. 8: transformer with MLPs, chain, S={s}, T={t}",
    )
    plot_runs(
        out / "fig8_mlp_loss.png",
        steps,
        [
            _loss_panel(m["test_loss"], base, ("bayes", "oracle", "unigram")),
            {"values": m["mean_parent_attention"], "ylabel": "mean layer-1 attention on the parent", "label": "seeds", "ylim": (0, 1.02)},
        ],
        title="Fig. 8: test loss with Bayes / oracle lines, and previous-token attention",
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
        defaults=MLP_DEFAULTS,
        quick=MLP_QUICK,
        run=run_mlp,
        summary=_tree_summary,
    )
)
