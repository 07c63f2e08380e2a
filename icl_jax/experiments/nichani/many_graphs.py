"""Nichani Fig. 9 (``nichani-fig9-many-graphs``): 20 random graphs (S = 3) trained in one
vmapped engine call, the graph a traced index into stacked sampling plans and test sets;
layer-1 attention i → p(i) by position over graphs, and recovery and test loss during
training.

Recipe: ``docs/nichani-theory.md#official-recipes``; the vmapped sweep in place of the
official sequential runs: ``docs/quirks.md#nichani-quirk-7``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_errorbars, plot_runs
from icl_jax.experiments.common import TEST_STREAM, _per_seed
from icl_jax.experiments.config import option
from icl_jax.experiments.nichani.common import NichaniConfig, _baselines, _fmt, _stage, _sweep
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.losses import chunked_mean_fn
from icl_jax.models.catformer import CatFormer
from icl_jax.tasks import graphs as _graphs
from icl_jax.tasks.sampling import Batch, SamplingPlan, sample_tokens, target_rows
from icl_jax.tasks.tasks import TreeTask


@dataclasses.dataclass(frozen=True)
class ManyGraphsConfig(NichaniConfig):
    """Fig. 9 (docs/nichani-theory.md#official-recipes): heads [1, 1], SGD at a constant rate, on
    ``num_graphs`` random graphs of the Fig. 9 family, all in one vmapped call."""

    graph_seed: int = option(0, "seed of the random graphs", min=0)
    num_graphs: int = option(20, "number of random graphs (one run each, vmapped)", min=1)
    root_prob: float = option(0.5, "probability that a node is a root (else its parent is uniform over "
                                   "the earlier positions)", min=0, max=1)
    vocab_size: int = option(3, "S, the vocabulary size", min=2)
    seq_len: int = option(20, "T, the sequence length including the query", min=3)
    steps: int = option(2**14, "training steps", min=1)
    schedule: Literal["constant", "cosine"] = option("constant", "learning-rate schedule over the steps")
    test_size: int = option(2**14, "held-out test sequences per graph (one set per graph, shared by every seed)", min=2)
    record_every: int = option(128, "steps between recorded metrics", min=1)


OFFICIAL = ManyGraphsConfig()
QUICK = OFFICIAL.replace(steps=1500, batch_size=128, learning_rate=3.0, test_size=2048, record_every=100)


def _tasks(config: ManyGraphsConfig) -> tuple[TreeTask, ...]:
    graphs = _graphs.fig9_graphs(config.graph_seed, config.num_graphs, config.seq_len - 1, config.root_prob)
    return tuple(TreeTask(g, config.vocab_size, config.alpha) for g in graphs)


def _build(config: ManyGraphsConfig) -> Setup:
    tasks = _tasks(config)
    return Setup(tasks, CatFormer(config.vocab_size, tasks[0].seq_len, (1, 1)))


def _stacked_tree_plans(tasks) -> dict:
    """Each graph's sampling plan as arrays stacked over graphs, so the graph can be a traced
    index (one vmapped call over graphs; the kernels and their rows do not depend on it)."""
    plans = [t.plan for t in tasks]
    return {f: np.stack([getattr(p, f) for p in plans]) for f in ("row_base", "parents", "radix")} | {"num_rows": plans[0].num_rows}


def _graph_sampler(tasks):
    """``sample(key, g, batch_size)``: what ``tasks[g].sample(key, batch_size)`` draws, with
    the graph index ``g`` traced (one compiled sampler for every graph)."""
    plans, task0 = _stacked_tree_plans(tasks), tasks[0]

    def sample(key, g, batch_size: int) -> Batch:
        plan = SamplingPlan(*(jnp.asarray(plans[f])[g] for f in ("row_base", "parents", "radix")), plans["num_rows"])
        k_pi, k_tok = jax.random.split(key)
        rows = task0.row_table(task0.sample_kernels(k_pi, batch_size))
        tokens = sample_tokens(k_tok, rows, plan)
        return Batch(tokens[:, :-1], target_rows(tokens, rows, plan), tokens[:, -1])

    return sample


class _ByPosition(NamedTuple):
    """Final layer-1 attention i → p(i) at each position i ≥ 1 over the graphs where i has a
    parent (NaN where none has)."""

    positions: np.ndarray  # [P] positions 1 … T−2
    mean: np.ndarray  # [P]
    sd: np.ndarray  # [P]
    graphs_with_parent: np.ndarray  # [P]


def _by_position(final_GxN: np.ndarray, dags_GxN: np.ndarray) -> _ByPosition:
    has_parent = dags_GxN >= 0
    positions = np.arange(1, dags_GxN.shape[1])
    count = has_parent[:, positions].sum(0)
    mean = np.array([final_GxN[has_parent[:, i], i].mean() if c else np.nan for i, c in zip(positions, count)])
    sd = np.array([final_GxN[has_parent[:, i], i].std() if c else np.nan for i, c in zip(positions, count)])
    return _ByPosition(positions, mean, sd, count)


def _nan_to_none(values) -> list:
    return [None if not np.isfinite(v) else float(v) for v in values]


def run_fig9(config: ManyGraphsConfig, ctx: RunContext) -> dict:
    """Train heads [1, 1] on every graph (and seed) in one vmapped sweep; the graph index is a
    swept hyperparameter selecting its sampling plan, dag array and test set."""
    tasks, model = _build(config)
    s, t = config.vocab_size, tasks[0].seq_len
    dags = np.stack([task.graph.dag_array for task in tasks])  # [G, T−1]
    sample = _graph_sampler(tasks)
    # every graph's test set drawn with the test key of the other experiments' _test_set
    draw = jax.jit(sample, static_argnums=2)
    test_key = jax.random.fold_in(jax.random.key(config.seed), TEST_STREAM)
    tests = [draw(test_key, jnp.int32(g), config.test_size) for g in range(len(tasks))]
    # test sets as one batch with leaves [N, G, ...]: chunked over N, the graph picked inside
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs], axis=1), *tests)
    test_loss = chunked_mean_fn(
        lambda pg, part: model.per_example_loss(pg[0], jax.tree.map(lambda x: x[:, pg[1]], part)), stacked
    )
    batch_size = config.batch_size

    def metrics(params, step, hp):
        g = hp["graph"].astype(jnp.int32)
        dag = jnp.asarray(dags)[g]
        return {**parent_attention_metrics(model.positional_attention(params)[0], dag), "test_loss": test_loss((params, g))}

    res = _sweep(
        config,
        ctx,
        model.loss,
        lambda key, hp: model.init(key),
        [_stage(config)],
        lambda key, hp: sample(key, hp["graph"].astype(jnp.int32), batch_size),
        metrics,
        hparams={"graph": np.arange(len(tasks), dtype=np.float32)},
    )
    m = jax.tree.map(np.asarray, res.metrics)  # leaves [G, R, records, ...]
    g_count, r_count = m["test_loss"].shape[:2]
    runs = jax.tree.map(lambda x: x.reshape((g_count * r_count,) + x.shape[2:]), m)  # [G·R, records, ...]
    steps = np.asarray(res.record_steps)
    bayes = np.array([_baselines(task, test)["bayes"]["loss"] for task, test in zip(tasks, tests)])  # [G]
    stats = _by_position(m["parent_attention"][:, :, -1].mean(1), dags)  # final, mean over seeds: [G, T−1]
    shown = stats.graphs_with_parent > 0
    plot_errorbars(
        ctx.figure("by_position"),
        stats.positions[shown],
        stats.mean[shown],
        stats.sd[shown],
        xlabel="position i",
        ylabel="layer-1 attention i → p(i)",
        title=ctx.title(f"Nichani Fig. 9: {len(tasks)} random graphs (S={s}, T={t}, p={config.root_prob:g}), one vmapped call"),
        label="mean ± s.d. over graphs where i has a parent",
        ylim=(0, 1.05),
        ref=1.0,
        formats=ctx.formats,
    )
    label = "graphs" if r_count == 1 else "graphs × seeds"
    plot_runs(
        ctx.figure("trajectories"),
        steps,
        [
            {"values": runs["mean_parent_attention"], "ylabel": "graph recovery (mean attention on parent)", "label": label, "ylim": (0, 1.02)},
            {"values": runs["parent_argmax_accuracy"], "ylabel": "parent argmax accuracy", "label": label, "ylim": (0, 1.02)},
            {"values": runs["test_loss"], "ylabel": "test loss (nats)", "label": label,
             "refs": {"Bayes (mean over graphs)": float(bayes.mean()), "uniform (ln S)": float(np.log(s))}},
        ],
        title=ctx.title("Nichani Fig. 9 graphs: recovery and test loss during training (one curve per run)"),
        formats=ctx.formats,
    )
    return {  # per graph: the mean over its seeds
        "graphs": dags.tolist(),
        "seeds": list(res.seeds),
        "graph_recovery": _per_seed(m["mean_parent_attention"][:, :, -1].mean(1)) | {"note": "per_seed lists one value per graph (mean over seeds)"},
        "parent_argmax_accuracy": _per_seed(m["parent_argmax_accuracy"][:, :, -1].mean(1)),
        "final_test_loss": _per_seed(m["test_loss"][:, :, -1].mean(1)),
        "bayes_loss": _per_seed(bayes),
        "attention_by_position": {
            "i": stats.positions.tolist(),
            "mean": _nan_to_none(stats.mean),
            "sd": _nan_to_none(stats.sd),
            "graphs_with_parent": stats.graphs_with_parent.tolist(),
        },
        "final_train_loss": _per_seed(res.loss[:, :, -min(50, res.loss.shape[-1]):].mean((1, 2))),
        "trajectory": {
            "steps": steps.tolist(),
            "mean_parent_attention": runs["mean_parent_attention"].mean(0).tolist(),
            "parent_argmax_accuracy": runs["parent_argmax_accuracy"].mean(0).tolist(),
            "test_loss": runs["test_loss"].mean(0).tolist(),
        },
        "train_wall_seconds": res.wall_seconds,
    }


def _fig9_summary(metrics: dict) -> list:
    return [
        ("graph recovery over graphs (mean attention on parent)", _fmt(metrics["graph_recovery"])),
        ("parent argmax accuracy over graphs", _fmt(metrics["parent_argmax_accuracy"])),
        ("final test loss over graphs / Bayes", f"{metrics['final_test_loss']['mean']:.3f} / {metrics['bayes_loss']['mean']:.3f}"),
    ]


register(
    Experiment(
        name="nichani-fig9-many-graphs",
        description="Nichani Fig. 9: 20 random graphs (S=3) trained in one vmapped call; attention i → p(i)",
        official=OFFICIAL,
        quick=QUICK,
        run=run_fig9,
        build=_build,
        summary=_fig9_summary,
    )
)
