"""Nichani Algorithm 1 (``nichani-staged``) on the reduced model: A1 = 0, A2 = β0·I; stage 1
trains A1 only, stage 2 A2 only, by GD on fresh large batches across seeds and as the exact
gradient flow (diffrax) of one fixed batch; then out-of-distribution evaluation under other
Dirichlet priors, and the layer-1 gradient at initialisation against the theory.

Algorithm and recipe: ``docs/nichani-theory.md#staged-training-algorithm-1``; the model:
``docs/models.md#reduced-model``; the gradient comparison:
``docs/nichani-theory.md#first-order-gradient`` and ``docs/nichani-theory.md#population-form``;
the ε-floored loss: ``docs/models.md#the-epsilon-floor``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.gradient_plots import plot_gradient_comparison
from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_lines, plot_runs
from icl_jax.experiments.common import _per_seed
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.nichani.common import _baselines, _fmt, _loss_panel, _test_loss_fn, _train_task, _tree_result
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.losses import DEFAULT_EPS
from icl_jax.models.reduced import ReducedModel
from icl_jax.tasks.tasks import tree_task
from icl_jax.theory.nichani import nichani_gradient_report

#: β0 of the gradient-at-initialisation report: small, where the first-order expansion holds
#: (docs/nichani-theory.md#first-order-gradient)
THEORY_BETA0 = 1e-3


@dataclasses.dataclass(frozen=True)
class StagedConfig(ExperimentConfig):
    """Algorithm 1 (docs/nichani-theory.md#staged-training-algorithm-1): plain GD (constant
    rate) on A1 for ``stage1_steps``, then on A2 for ``stage2_steps``, on fresh batches; the
    gradient flow of one fixed batch over the same flow time η·steps per stage."""

    title_fields = {"stage1_steps": "A1 steps", "stage1_lr": "A1 lr", "stage2_steps": "A2 steps",
                    "stage2_lr": "A2 lr", "batch_size": "batch", "seeds": "seeds"}

    seeds: int = option(32, "number of independent GD runs (one vmapped call)", min=1)
    graph: Literal["chain", "icl", "random", "fig9", "manual"] = option(
        "chain", "the tree graph (docs/tasks.md#graph-families; manual needs seq_len 6)")
    graph_seed: int = option(0, "seed of the random / fig9 graph", min=0)
    vocab_size: int = option(10, "S, the vocabulary size", min=2)
    seq_len: int = option(20, "T, the sequence length including the query (>= 3: at T = 2 the layer-1 "
                              "gradient at init is zero, so the theory comparison is undefined)", min=3)
    alpha: float = option(0.1, "Dirichlet concentration α of every kernel row", gt=0)
    eps: float = option(DEFAULT_EPS, "floor ε of the reduced model's loss −log(f + ε) "
                                     "(docs/models.md#the-epsilon-floor)", gt=0)
    beta0: float = option(1.0, "initial A2 = β0·I", gt=0)
    batch_size: int = option(4096, "fresh sequences per GD step", min=1)
    stage1_steps: int = option(100, "GD steps of stage 1 (A1 only)", min=1)
    stage1_lr: float = option(1000.0, "learning rate η of stage 1 (constant)", gt=0)
    stage2_steps: int = option(100, "GD steps of stage 2 (A2 only)", min=1)
    stage2_lr: float = option(50.0, "learning rate η of stage 2 (constant)", gt=0)
    flow_batch: int = option(4096, "sequences of the one fixed batch whose gradient flow is integrated", min=1)
    flow_rtol: float = option(1e-4, "relative tolerance of the flow's ODE solver", gt=0)
    flow_atol: float = option(1e-6, "absolute tolerance of the flow's ODE solver", gt=0)
    test_size: int = option(2**16, "held-out test sequences (one set shared by every seed; also the size "
                                   "of each OOD test set)", min=2)
    ood_alphas: tuple[float, ...] = option((0.03, 0.3, 1.0), "Dirichlet α of the out-of-distribution test "
                                                             "priors (empty: no OOD evaluation)", gt=0)
    theory_samples: int = option(2**16, "sequences of the batch on which the gradient at init is "
                                        "computed (autodiff and first-order)", min=1)
    theory_draws: int = option(2000, "prior draws of the population gradient estimate", min=2)
    record_every: int = option(5, "GD steps between recorded metrics", min=1)
    chunk_steps: int = option(0, "steps per compiled chunk = between checkpoints (0: the engine default)", min=0)

    def check(self) -> None:
        shortest = min(self.stage1_steps, self.stage2_steps)
        if self.record_every > shortest:
            raise ValueError(f"record_every ({self.record_every}) must be <= stage1_steps and stage2_steps "
                             f"(shortest: {shortest})")


OFFICIAL = StagedConfig()
QUICK = OFFICIAL.replace(batch_size=512, flow_batch=1024, test_size=4096, record_every=10,
                         theory_samples=2**14, theory_draws=500)


def _build(config: StagedConfig) -> Setup:
    task = tree_task(config.graph, vocab_size=config.vocab_size, seq_len=config.seq_len, alpha=config.alpha,
                     graph_seed=config.graph_seed)
    return Setup(task, ReducedModel(task.vocab_size, task.seq_len, beta0=config.beta0))


def _stages(config: StagedConfig) -> list[engine.Stage]:
    return [
        engine.Stage(config.stage1_steps, groups="A1", learning_rate=config.stage1_lr, name="A1"),
        engine.Stage(config.stage2_steps, groups="A2", learning_rate=config.stage2_lr, name="A2"),
    ]


class _Flow(NamedTuple):
    """The exact gradient flow of one fixed batch over both stages."""

    steps: np.ndarray  # flow time mapped onto the GD step axis (time / η within each stage)
    metrics: dict  # the recorded metrics at every save time
    solver_steps: list  # ODE solver steps per stage


def _flow(config: StagedConfig, ctx: RunContext, task, loss, params0, stages, record) -> _Flow:
    """The same two stages as an exact gradient flow of one fixed batch (time t = η·steps)."""
    flow_batch = task.sample(jax.random.fold_in(jax.random.key(config.seed), 1), config.flow_batch)
    flow = engine.gradient_flow(
        loss,
        params0,
        flow_batch,
        stages,
        num_saves=61,
        metrics=lambda p, time: record(p),
        rtol=config.flow_rtol,
        atol=config.flow_atol,
        max_steps=100_000,
        progress=ctx.progress,
    )
    stage_steps = np.concatenate([np.zeros(1), np.cumsum([st.steps for st in stages])])
    stage_times = np.concatenate([np.zeros(1), np.cumsum([st.steps * st.learning_rate for st in stages])])
    return _Flow(np.interp(flow.ts, stage_times, stage_steps), jax.tree.map(np.asarray, flow.metrics),
                 np.asarray(flow.num_steps).tolist())


def _ood(config: StagedConfig, task, model, params) -> dict:
    """Loss of the trained ``params`` under other Dirichlet priors against their baselines: the
    learned estimator counts in context, so it should track Bayes
    (docs/nichani-theory.md#induction-head-chain-case)."""
    out = {}
    for a in config.ood_alphas:
        other = task.replace(alpha=float(a))
        test = other.sample(jax.random.fold_in(jax.random.key(config.seed), 2), config.test_size)
        base = _baselines(other, test)
        out[f"alpha={a:g}"] = {
            "model_loss": float(_test_loss_fn(model, test, eps=config.eps)(params)),
            "bayes_loss": base["bayes"]["loss"],
            "unigram_loss": base["unigram"]["loss"],
            "oracle_loss": base["oracle"]["loss"],
        }
    return out


def run_staged(config: StagedConfig, ctx: RunContext) -> dict:
    """Algorithm 1 (docs/nichani-theory.md#staged-training-algorithm-1): A1 = 0, A2 = β0·I;
    stage 1 trains A1 only, stage 2 A2 only, by GD on fresh large batches (population-gradient
    proxy) across seeds, and as the exact gradient flow (diffrax) of one fixed batch; then OOD
    evaluation on other priors."""
    task, model = _build(config)
    s, t, eps = task.vocab_size, task.seq_len, config.eps
    dag = task.graph.dag_array
    params0 = model.init()
    stages = _stages(config)

    def loss(params, batch):
        return model.loss(params, batch, eps=eps)

    def probe(params):
        a2 = params["A2"]
        off = (jnp.sum(a2) - jnp.trace(a2)) / (s * (s - 1))
        return {**parent_attention_metrics(model.layer1_attention(params), dag), "A2_diag_minus_offdiag": jnp.trace(a2) / s - off}

    trained = _train_task(config, ctx, task, model, params0, probe, stages, eps=eps)
    res, m, steps, base = trained.result, trained.metrics, trained.steps, trained.baselines
    flow = _flow(config, ctx, task, loss, params0, stages, trained.record)
    final0 = jax.tree.map(lambda x: x[0, 0], res.params)
    ood = _ood(config, task, model, final0)
    boundary = stages[0].steps
    plot_runs(
        ctx.figure("trajectories"),
        steps,
        [
            {"values": m["mean_parent_attention"], "ylabel": "mean layer-1 attention on the parent", "label": "GD seeds", "ylim": (0, 1.02)},
            {"values": m["A2_diag_minus_offdiag"], "ylabel": "diag(A2) − offdiag(A2)", "label": "GD seeds"},
            _loss_panel(m["test_loss"], base, ("bayes", "unigram", "oracle")),
        ],
        title=ctx.title(f"Algorithm 1 on the reduced model ({config.graph}, S={s}, T={t}): "
                        f"stage 1 = A1 (steps < {boundary}), stage 2 = A2"),
        formats=ctx.formats,
    )
    n_seeds = len(res.seeds)
    plot_lines(
        ctx.figure("flow_vs_gd"),
        [
            {
                "lines": {f"GD, fresh batches (mean of {n_seeds} seeds)": (steps, m[key].mean(0))},
                "dashed": {f"gradient flow (Tsit5), fixed batch of {config.flow_batch}": (flow.steps, flow.metrics[key])},
                "vlines": [boundary],
                "xlabel": "step (flow time / η of its stage)",
                "ylabel": label,
                **extra,
            }
            for key, label, extra in (
                ("mean_parent_attention", "mean attention on the parent", {"ylim": (0, 1.02)}),
                ("test_loss", "test loss (nats)", {"refs": {"Bayes": base["bayes"]["loss"]}}),
            )
        ],
        title=ctx.title(f"Algorithm 1 ({config.graph}, S={s}, T={t}): GD across seeds against the exact gradient flow"),
        ncols=2,
        formats=ctx.formats,
    )
    # the theory at initialisation: autodiff vs first-order formula vs population χ² prediction
    # (small β0, where the first-order expansion holds; docs/nichani-theory.md#first-order-gradient)
    report = nichani_gradient_report(
        task, beta0=THEORY_BETA0, samples=config.theory_samples, draws=config.theory_draws, eps=eps, seed=config.seed
    )
    plot_gradient_comparison(
        ctx.figure("gradient"),
        np.array(report["autodiff"]),
        np.array(report["first_order"]),
        dag,
        ctx.title(f"layer-1 gradient at init (β0={THEORY_BETA0:g}, {config.theory_samples} sequences): "
                  f"first-order rel. error {report['rel_error_first_order']:.2g}, population {report['rel_error_population']:.2g}"),
        population_TxT=np.array(report["population"], dtype=np.float64),
        formats=ctx.formats,
    )
    theory = {k: v for k, v in report.items() if k not in ("autodiff", "first_order", "population", "parents")}
    end1 = int(np.searchsorted(steps, boundary))  # the record at the start of stage 2
    return {
        "theory_at_init": theory,
        "graph": dag.tolist(),
        **_tree_result(trained),
        "initial_mean_parent_attention": float(m["mean_parent_attention"][0, 0]),
        "stage1_end_mean_parent_attention": _per_seed(m["mean_parent_attention"][:, end1]),
        "stage1_end_test_loss": _per_seed(m["test_loss"][:, end1]),
        "initial_test_loss": float(m["test_loss"][0, 0]),
        "A2_diag_minus_offdiag": _per_seed(m["A2_diag_minus_offdiag"][:, -1]),
        "flow": {
            "mean_parent_attention": float(flow.metrics["mean_parent_attention"][-1]),
            "parent_argmax_accuracy": float(flow.metrics["parent_argmax_accuracy"][-1]),
            "final_test_loss": float(flow.metrics["test_loss"][-1]),
            "solver_steps_per_stage": flow.solver_steps,
            "trajectory": {
                "steps": flow.steps.tolist(),
                "mean_parent_attention": flow.metrics["mean_parent_attention"].tolist(),
                "test_loss": flow.metrics["test_loss"].tolist(),
            },
        },
        "trajectory": {
            "steps": steps.tolist(),
            "mean_parent_attention": m["mean_parent_attention"].mean(0).tolist(),
            "test_loss": m["test_loss"].mean(0).tolist(),
        },
        "ood": ood,
    }


def _staged_summary(metrics: dict) -> list:
    rows = [
        ("parent argmax accuracy after Algorithm 1", _fmt(metrics["parent_argmax_accuracy"])),
        ("mean attention on parent: init → after stage 1", f"{metrics['initial_mean_parent_attention']:.3f} → "
                                                         f"{metrics['stage1_end_mean_parent_attention']['mean']:.3f}"),
        ("test loss: init → after stage 1 → final", f"{metrics['initial_test_loss']:.3f} → {metrics['stage1_end_test_loss']['mean']:.3f} → {metrics['final_test_loss']['mean']:.3f}"),
        ("Bayes / unigram loss", f"{metrics['bayes_loss']:.3f} / {metrics['unigram_loss']:.3f}"),
        ("gradient flow: parent attention, final loss", f"{metrics['flow']['mean_parent_attention']:.3f}, {metrics['flow']['final_test_loss']:.3f}"),
    ]
    th = metrics["theory_at_init"]
    rows.append(("layer-1 gradient at init: rel. error of first-order formula / population χ² vs autodiff", f"{th['rel_error_first_order']:.2e} / {th['rel_error_population']:.3f}"))
    rows.append(("argmax = parent (autodiff / population)", f"{th['argmax_recovery_autodiff']:.3f} / {th['argmax_recovery_population']:.3f}"))
    for name, v in metrics["ood"].items():
        rows.append((f"OOD {name}: model / Bayes loss", f"{v['model_loss']:.3f} / {v['bayes_loss']:.3f}"))
    return rows


register(
    Experiment(
        name="nichani-staged",
        description="Nichani Algorithm 1: reduced model, stage 1 A1 then stage 2 A2; GD across seeds and exact gradient flow; OOD priors",
        official=OFFICIAL,
        quick=QUICK,
        run=run_staged,
        build=_build,
        summary=_staged_summary,
    )
)
