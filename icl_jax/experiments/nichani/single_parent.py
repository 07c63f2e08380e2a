"""Nichani Figs 2 and 6: the disentangled transformer with heads [1, 1] trained jointly by the
official SGD recipe on one tree graph each (``nichani-fig2-chain``, ``nichani-fig2-icl``,
``nichani-fig2-random``): the learned layer-1 graph against the true one (Fig. 2), the trained
A1 / A2 / W by stream block (Fig. 6), and graph recovery and test loss across seeds.

Recipe: ``docs/nichani-theory.md#official-recipes``; the model and its stream blocks:
``docs/models.md#catformer`` and ``docs/models.md#stream-index-map``; the graph drawn for
``random``: ``docs/quirks.md#nichani-quirk-8``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_heatmaps, plot_runs
from icl_jax.experiments.config import option
from icl_jax.experiments.nichani.common import (
    NichaniConfig,
    _first_step,
    _loss_panel,
    _train_task,
    _tree_result,
    _tree_summary,
    _true_adjacency,
)
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.catformer import CatFormer, stream_blocks
from icl_jax.tasks.tasks import tree_task


@dataclasses.dataclass(frozen=True)
class SingleParentConfig(NichaniConfig):
    """Figs 2 / 6 (docs/nichani-theory.md#official-recipes): heads [1, 1], SGD, cosine."""

    # the official runs are single-seed (docs/quirks.md#nichani-quirk-8); on a CPU host
    # `reproduce` runs the three graphs side by side in lanes (icl_jax.experiments.lanes)
    seeds: int = option(1, "number of independent runs (one call, sharded over the devices)", min=1)
    graph_seed: int = option(0, "seed of the random tree (nichani-fig2-random only)", min=0)
    # off by default: the committed runs' recordings (and their resume) stay as they were
    record_maps: bool = option(False, "record the layer-1 position block at every record (for icl-jax animate)",
                               added=True)


OFFICIAL = SingleParentConfig()
# The official recipe needs 2^17 steps at lr 1; at lr 10 and batch 256 the same two phases
# (graph found by step ~150, then the induction drop at ~400) happen within 1,000 steps.
QUICK = OFFICIAL.replace(steps=1000, batch_size=256, learning_rate=10.0, test_size=8192, record_every=50)


def _task(graph_name: str, config: SingleParentConfig):
    return tree_task(graph_name, vocab_size=config.vocab_size, seq_len=config.seq_len, alpha=config.alpha,
                     graph_seed=config.graph_seed)


def _build(graph_name: str):
    def build(config: SingleParentConfig) -> Setup:
        task = _task(graph_name, config)
        return Setup(task, CatFormer(task.vocab_size, task.seq_len, (1, 1)))

    return build


def _probe(model: CatFormer, dag, record_maps: bool):
    """Graph recovery, and with ``record_maps`` the layer-1 position block itself
    (``attention``, T × T), so that ``icl-jax animate`` shows Fig. 2's map forming."""

    def probe(params):
        attn_TxT = model.positional_attention(params)[0]
        maps = {"attention": attn_TxT} if record_maps else {}
        return {**parent_attention_metrics(attn_TxT, dag), **maps}

    return probe


def _single_parent(graph_name: str):
    def run(config: SingleParentConfig, ctx: RunContext) -> dict:
        task, model = _build(graph_name)(config)
        s, t = task.vocab_size, task.seq_len
        dag = task.graph.dag_array
        trained = _train_task(
            config,
            ctx,
            task,
            model,
            lambda key, hp: model.init(key),
            _probe(model, dag, config.record_maps),
        )
        res, m, steps, base = trained.result, trained.metrics, trained.steps, trained.baselines
        params0 = jax.tree.map(lambda x: x[0, 0], res.params)
        name = graph_name
        attn0 = np.asarray(model.positional_attention(params0)[0])
        plot_heatmaps(
            ctx.figure("graph"),
            [
                {"matrix": _true_adjacency(task.graph.parents, t), "title": f"true graph ({name}): i → parent p(i)",
                 "cmap": "Greys", "xlabel": "parent position j", "ylabel": "position i"},
                {"matrix": attn0, "title": "learned layer-1 attention (position block, seed 0)", "vmax": 1.0,
                 "xlabel": "key position j", "ylabel": "query position i"},
            ],
            title=ctx.title(f"Nichani Fig. 2, {name} graph: S={s}, T={t}"),
            formats=ctx.formats,
        )
        d0 = stream_blocks(s, t, ())
        d1 = stream_blocks(s, t, (1,))
        d2 = stream_blocks(s, t, (1, 1))
        plot_heatmaps(
            ctx.figure("weights"),
            [
                {"matrix": params0["A1"][0], "title": "A1", "row_blocks": d0, "col_blocks": d0, "symmetric": True},
                {"matrix": params0["A2"][0], "title": "A2", "row_blocks": d1, "col_blocks": d1, "symmetric": True},
                {"matrix": params0["W"].T, "title": "Wᵀ", "col_blocks": d2, "symmetric": True},
            ],
            title=ctx.title("Nichani Fig. 6: trained weights by stream block (seed 0)"),
            formats=ctx.formats,
        )
        plot_runs(
            ctx.figure("trajectories"),
            steps,
            [
                {"values": m["mean_parent_attention"], "ylabel": "mean attention on the parent", "label": "seeds", "ylim": (0, 1.02)},
                {"values": m["parent_argmax_accuracy"], "ylabel": "parent argmax accuracy", "label": "seeds", "ylim": (0, 1.02)},
                _loss_panel(m["test_loss"], base),
            ],
            title=ctx.title(f"Nichani, {name} graph: graph recovery and test loss across {len(res.seeds)} seeds"),
            formats=ctx.formats,
        )
        return {
            "graph": dag.tolist(),
            **_tree_result(trained),
            "oracle_closed_form": task.oracle_closed_form(),
            "first_step_argmax_all_correct": _first_step(steps, m["parent_argmax_accuracy"] >= 1.0),
            # "leaves the plateau": test loss below the midpoint of ln S and the Bayes loss
            "first_step_loss_halfway_to_bayes": _first_step(steps, m["test_loss"] < (np.log(s) + base["bayes"]["loss"]) / 2),
            "trajectory": {
                "steps": steps.tolist(),
                "mean_parent_attention": m["mean_parent_attention"].mean(0).tolist(),
                "parent_argmax_accuracy": m["parent_argmax_accuracy"].mean(0).tolist(),
                "test_loss": m["test_loss"].mean(0).tolist(),
            },
        }

    return run


for _graph in ("chain", "icl", "random"):
    register(
        Experiment(
            name=f"nichani-fig2-{_graph}",
            description=f"Nichani Figs 2/6: disentangled transformer [1,1] learns the {_graph} graph (official SGD recipe)",
            official=OFFICIAL,
            quick=QUICK.replace(seeds=4 if _graph == "chain" else 1),
            run=_single_parent(_graph),
            build=_build(_graph),
            summary=_tree_summary,
            map_axes={"attention": ("key position j", "query position i")},
        )
    )
