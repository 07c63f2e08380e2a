"""Nichani Fig. 9 (``nichani-fig9-many-graphs``): 20 random graphs (S = 3) trained in one
vmapped engine call, the graph a traced index into stacked sampling plans; layer-1 attention
i → p(i) by position over graphs, and recovery during training.

Recipe: ``docs/nichani-theory.md#official-recipes``; the vmapped sweep in place of the
official sequential runs: ``docs/quirks.md#nichani-quirk-7``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_runs
from icl_jax.experiments.common import _per_seed
from icl_jax.experiments.nichani.common import _stage, _sweep
from icl_jax.experiments.registry import Experiment, register
from icl_jax.models.catformer import CatFormer
from icl_jax.tasks import graphs as _graphs
from icl_jax.tasks.sampling import Batch, SamplingPlan, sample_tokens, target_rows
from icl_jax.tasks.tasks import TreeTask

FIG9_DEFAULTS = {
    "seed": 0,
    "seeds": 1,
    "graph_seed": 0,
    "num_graphs": 20,
    "root_prob": 0.5,
    "vocab_size": 3,
    "seq_len": 20,
    "alpha": 0.1,
    "steps": 2**14,
    "batch_size": 1024,
    "optimizer": "sgd",
    "learning_rate": 1.0,
    "schedule": "constant",
    "weight_decay": 0.0,
    "test_size": 2**14,
    "record_every": 128,
    "resume": False,
}
FIG9_QUICK = {"steps": 1500, "batch_size": 128, "learning_rate": 3.0, "test_size": 2048, "record_every": 100}


def _stacked_tree_plans(tasks: list[TreeTask]) -> dict:
    """Each graph's sampling plan as arrays stacked over graphs, so the graph can be a traced
    index (one vmapped call over graphs; the kernels and their rows do not depend on it)."""
    plans = [t.plan for t in tasks]
    return {f: np.stack([getattr(p, f) for p in plans]) for f in ("row_base", "parents", "radix")} | {"num_rows": plans[0].num_rows}


def run_fig9(config: dict, out: Path, progress: bool = True) -> dict:
    s, t = config["vocab_size"], config["seq_len"]
    graphs = _graphs.fig9_graphs(config["graph_seed"], config["num_graphs"], t - 1, config["root_prob"])
    tasks = [TreeTask(g, s, config["alpha"]) for g in graphs]
    plans = _stacked_tree_plans(tasks)
    dags = np.stack([g.dag_array() for g in graphs])  # [G, T−1]
    model = CatFormer(s, t, (1, 1))
    batch_size, task0 = config["batch_size"], tasks[0]

    def sample(key, hp):
        g = hp["graph"].astype(jnp.int32)
        plan = SamplingPlan(*(jnp.asarray(plans[f])[g] for f in ("row_base", "parents", "radix")), plans["num_rows"])
        k_pi, k_tok = jax.random.split(key)
        rows = task0.row_table(task0.sample_kernels(k_pi, batch_size))
        tokens = sample_tokens(k_tok, rows, plan)
        return Batch(tokens[:, :-1], target_rows(tokens, rows, plan), tokens[:, -1])

    def metrics(params, step, hp):
        dag = jnp.asarray(dags)[hp["graph"].astype(jnp.int32)]
        return parent_attention_metrics(model.positional_attention(params)[0], dag)

    res = _sweep(
        config,
        out,
        progress,
        model.loss,
        lambda key, hp: model.init(key),
        [_stage(config)],
        sample,
        metrics,
        hparams={"graph": np.arange(len(graphs), dtype=np.float32)},
    )
    m = jax.tree.map(lambda x: np.asarray(x)[:, 0], res.metrics)  # first seed of every graph: [G, R, ...]
    steps = np.asarray(res.record_steps)
    final = m["parent_attention"][:, -1]  # [G, T−1]
    has_parent = dags >= 0
    positions = np.arange(1, t - 1)
    mean_i = np.array([final[has_parent[:, i], i].mean() if has_parent[:, i].any() else np.nan for i in positions])
    sd_i = np.array([final[has_parent[:, i], i].std() if has_parent[:, i].any() else np.nan for i in positions])
    count_i = has_parent[:, positions].sum(0)
    import matplotlib.pyplot as plt  # the figure is specific to Fig. 9

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.errorbar(positions, mean_i, yerr=sd_i, fmt="o-", capsize=3, label="mean ± s.d. over graphs where i has a parent")
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_xlabel("position i")
    ax.set_ylabel("layer-1 attention i → p(i)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Nichani Fig. 9: {len(graphs)} random graphs (S={s}, T={t}, p={config['root_prob']}), one vmapped call", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fig9_many_graphs.png", dpi=120)
    plt.close(fig)
    plot_runs(
        out / "fig9_recovery_trajectories.png",
        steps,
        [
            {"values": m["mean_parent_attention"], "ylabel": "graph recovery (mean attention on parent)", "label": "graphs", "ylim": (0, 1.02)},
            {"values": m["parent_argmax_accuracy"], "ylabel": "parent argmax accuracy", "label": "graphs", "ylim": (0, 1.02)},
        ],
        title="Fig. 9 graphs: recovery during training (one curve per graph)",
    )
    return {
        "graphs": dags.tolist(),
        "graph_recovery": _per_seed(m["mean_parent_attention"][:, -1]) | {"note": "per_seed lists one value per graph"},
        "parent_argmax_accuracy": _per_seed(m["parent_argmax_accuracy"][:, -1]),
        "attention_by_position": {"i": positions.tolist(), "mean": mean_i.tolist(), "sd": sd_i.tolist(), "graphs_with_parent": count_i.tolist()},
        "final_train_loss": _per_seed(res.loss[:, 0, -50:].mean(-1)),
        "train_wall_seconds": res.wall_seconds,
    }


def _fig9_summary(metrics: dict) -> list:
    r, a = metrics["graph_recovery"], metrics["parent_argmax_accuracy"]
    return [
        ("graph recovery over graphs (mean attention on parent)", f"{r['mean']:.3f} ± {r['sd']:.3f} (n={len(r['per_seed'])})"),
        ("parent argmax accuracy over graphs", f"{a['mean']:.3f} ± {a['sd']:.3f}"),
    ]


register(
    Experiment(
        name="nichani-fig9-many-graphs",
        description="Nichani Fig. 9: 20 random graphs (S=3) trained in one vmapped call; attention i → p(i)",
        defaults=FIG9_DEFAULTS,
        quick=FIG9_QUICK,
        run=run_fig9,
        summary=_fig9_summary,
    )
)
