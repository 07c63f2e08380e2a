"""Nichani Figs 5 and 7 (``nichani-fig5-multiparent``): heads [2, 1] trained jointly by AdamW
on the official multi-parent DAG; each layer-1 head is matched to one parent of every node
with two parents (Fig. 5), the trained A1 / A2 / W by stream block (Fig. 7), and the test
loss against Bayes and One-NN.

Recipe: ``docs/nichani-theory.md#official-recipes``; the ``roots`` option:
``docs/quirks.md#nichani-quirk-2``; the model: ``docs/models.md#catformer``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.analysis.metrics import head_parent_matching
from icl_jax.analysis.plots import plot_heatmaps, plot_runs
from icl_jax.experiments.common import _per_seed
from icl_jax.experiments.config import option
from icl_jax.experiments.nichani.common import NichaniConfig, _fmt, _loss_panel, _train_task, _true_adjacency
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.catformer import CatFormer, stream_blocks
from icl_jax.tasks.tasks import MAX_KERNEL_ROWS, dag_task

HEADS = (2, 1)


@dataclasses.dataclass(frozen=True)
class MultiParentConfig(NichaniConfig):
    """Figs 5 / 7 (docs/nichani-theory.md#official-recipes): heads [2, 1], AdamW, cosine, a
    small normal init, on the official multi-parent DAG with ``seq_len`` inputs."""

    seeds: int = option(1, "number of independent runs (one vmapped call)", min=1)
    vocab_size: int = option(5, "S, the vocabulary size (S² kernel rows per two-parent node)", min=2)
    seq_len: int = option(32, "T, the number of input positions (the target is node T of the graph)", min=3)
    roots: Literal["uniform", "official"] = option(
        "uniform", "root law: uniform (the paper's intent) or official (one shared Dirichlet draw; "
        "docs/quirks.md#nichani-quirk-2)")
    init_scale: float = option(1e-4, "standard deviation of the normal init of every A", gt=0)
    steps: int = option(2**16, "training steps", min=1)
    optimizer: Literal["sgd", "adam", "adamw"] = option("adamw", "optimiser (optax)")
    learning_rate: float = option(1e-2, "peak learning rate", gt=0)
    weight_decay: float = option(1e-4, "decoupled weight decay (adamw)", min=0)
    record_every: int = option(512, "steps between recorded metrics", min=1)

    def check(self) -> None:
        super().check()
        if self.vocab_size**2 > MAX_KERNEL_ROWS:
            raise ValueError(f"vocab_size ({self.vocab_size}): a two-parent node needs vocab_size² = "
                             f"{self.vocab_size**2} kernel rows; at most {MAX_KERNEL_ROWS} are supported")


OFFICIAL = MultiParentConfig()
QUICK = OFFICIAL.replace(steps=3000, batch_size=256, test_size=8192, record_every=100, seeds=1)


def _build(config: MultiParentConfig) -> Setup:
    task = dag_task("fig5", vocab_size=config.vocab_size, seq_len=config.seq_len, alpha=config.alpha, roots=config.roots)
    model = CatFormer(task.vocab_size, task.seq_len, HEADS, init_dist="normal", init_scale=config.init_scale)
    return Setup(task, model)


class _Slots(NamedTuple):
    """The nodes with a full parent set and their parents, slot by slot."""

    parents: tuple  # parent tuple of every input node (the target excluded)
    rows: np.ndarray  # [M] nodes with the maximal number k of parents
    slots: np.ndarray  # [M, k] their parents; slot j = the j-th parent


def _slots(task) -> _Slots:
    inputs = tuple(task.graph.parents[:-1])
    k = max(len(p) for p in inputs)
    full = [i for i, p in enumerate(inputs) if len(p) == k]
    return _Slots(inputs, np.array(full), np.array([inputs[i] for i in full]))


def run_multiparent(config: MultiParentConfig, ctx: RunContext) -> dict:
    """Train heads [2, 1] on the Fig. 5 DAG for every seed; match heads to parent slots."""
    task, model = _build(config)
    s, t = task.vocab_size, task.seq_len
    layout = _slots(task)
    k = layout.slots.shape[1]

    def slot_attention(params):
        attn = model.positional_attention(params)  # [H, T, T]
        return {"slot_attention": jnp.stack([attn[:, layout.rows, layout.slots[:, j]].mean(-1) for j in range(k)], -1)}  # [H, k]

    trained = _train_task(config, ctx, task, model, lambda key, hp: model.init(key), slot_attention)
    res, m, steps, base = trained.result, trained.metrics, trained.steps, trained.baselines
    matchings = []
    for r in range(len(res.seeds)):
        params_r = jax.tree.map(lambda x: x[0, r], res.params)
        matchings.append(head_parent_matching(model.positional_attention(params_r), layout.parents))
    params0 = jax.tree.map(lambda x: x[0, 0], res.params)
    attn0 = np.asarray(model.positional_attention(params0))
    plot_heatmaps(
        ctx.figure("heads"),
        [{"matrix": _true_adjacency(task.graph.parents, t + 1)[:, :t], "title": "causal graph G (target last)", "cmap": "Greys",
          "xlabel": "parent position j", "ylabel": "position i"}]
        + [{"matrix": attn0[h], "title": f"layer-1 head {h} (position block)", "vmax": 1.0,
            "xlabel": "key position j", "ylabel": "query position i"} for h in range(attn0.shape[0])],
        title=ctx.title(f"Nichani Fig. 5: heads [2,1], S={s}, T={t}, roots={config.roots}, seed 0"),
        formats=ctx.formats,
    )
    d0, d1, d2 = stream_blocks(s, t, ()), stream_blocks(s, t, HEADS[:1]), stream_blocks(s, t, HEADS)
    plot_heatmaps(
        ctx.figure("weights"),
        [{"matrix": params0["A1"][h], "title": f"A1 head {h}", "row_blocks": d0, "col_blocks": d0, "symmetric": True}
         for h in range(HEADS[0])]
        + [
            {"matrix": params0["A2"][0], "title": "A2", "row_blocks": d1, "col_blocks": d1, "symmetric": True},
            {"matrix": params0["W"].T, "title": "Wᵀ", "col_blocks": d2, "symmetric": True},
        ],
        title=ctx.title("Nichani Fig. 7: trained weights by stream block (seed 0)"),
        ncols=2,
        formats=ctx.formats,
    )
    # matched slot attention trajectory per seed (with the final assignment)
    traj = np.stack(
        [
            np.mean([m["slot_attention"][r, :, h, a] for h, a in enumerate(mt["assignment"]) if a >= 0], axis=0)
            for r, mt in enumerate(matchings)
        ]
    )
    plot_runs(
        ctx.figure("loss"),
        steps,
        [
            _loss_panel(m["test_loss"], base, ("bayes", "one_nn", "oracle", "unigram")),
            {"values": traj, "ylabel": "mean attention of each head on its matched parent", "label": "seeds", "ylim": (0, 1.02)},
        ],
        title=ctx.title("Nichani Figs 5/7: test loss with Bayes and One-NN lines; head-to-parent attention"),
        formats=ctx.formats,
    )
    return {
        "graph": [list(p) for p in task.graph.parents],
        "roots": config.roots,
        "seeds": list(res.seeds),
        "head_matching": matchings,
        "both_parents_recovered": _per_seed([mt["both_parents_recovered"] for mt in matchings]),
        "mean_matched_attention": _per_seed([mt["mean_matched_attention"] for mt in matchings]),
        "final_test_loss": _per_seed(m["test_loss"][:, -1]),
        "bayes_loss": base["bayes"]["loss"],
        "one_nn_loss": base["one_nn"]["loss"],
        "oracle_loss": base["oracle"]["loss"],
        "unigram_loss": base["unigram"]["loss"],
        "baselines": base,
        "trajectory": {"steps": steps.tolist(), "test_loss": m["test_loss"].mean(0).tolist(), "matched_attention": traj.mean(0).tolist()},
        "train_wall_seconds": res.wall_seconds,
    }


def _multi_summary(metrics: dict) -> list:
    return [
        ("nodes whose two heads' argmaxes are exactly their parents", _fmt(metrics["both_parents_recovered"])),
        ("mean attention of a head on its matched parent", _fmt(metrics["mean_matched_attention"])),
        ("final test loss", _fmt(metrics["final_test_loss"])),
        ("Bayes / One-NN / unigram loss", f"{metrics['bayes_loss']:.3f} / {metrics['one_nn_loss']:.3f} / {metrics['unigram_loss']:.3f}"),
    ]


register(
    Experiment(
        name="nichani-fig5-multiparent",
        description="Nichani Figs 5/7: heads [2,1] learn both parents of the official multi-parent DAG (AdamW)",
        official=OFFICIAL,
        quick=QUICK,
        run=run_multiparent,
        build=_build,
        summary=_multi_summary,
    )
)
