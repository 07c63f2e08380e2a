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

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.gradient_plots import plot_gradient_comparison
from icl_jax.analysis.metrics import parent_attention_metrics
from icl_jax.analysis.plots import plot_runs
from icl_jax.experiments.common import _per_seed
from icl_jax.experiments.nichani.common import _baselines, _fmt, _loss_panel, _test_loss_fn, _train_task, _tree_result
from icl_jax.experiments.registry import Experiment, register
from icl_jax.losses import DEFAULT_EPS
from icl_jax.models.reduced import ReducedModel
from icl_jax.tasks.tasks import tree_task
from icl_jax.theory.nichani import nichani_gradient_report

STAGED_DEFAULTS = {
    "seed": 0,
    "seeds": 32,
    "graph": "chain",
    "graph_seed": 0,
    "vocab_size": 10,
    "seq_len": 20,
    "alpha": 0.1,
    "eps": DEFAULT_EPS,
    "beta0": 1.0,
    "batch_size": 4096,
    "stage1_steps": 100,
    "stage1_lr": 1000.0,
    "stage2_steps": 100,
    "stage2_lr": 50.0,
    "flow_batch": 4096,
    "flow_rtol": 1e-4,
    "flow_atol": 1e-6,
    "test_size": 2**16,
    "ood_alphas": [0.03, 0.3, 1.0],
    "theory_samples": 2**16,
    "theory_draws": 2000,
    "record_every": 5,
    "resume": False,
}
STAGED_QUICK = {
    "batch_size": 512,
    "flow_batch": 1024,
    "test_size": 4096,
    "record_every": 10,
    "theory_samples": 2**14,
    "theory_draws": 500,
}


def run_staged(config: dict, out: Path, progress: bool = True) -> dict:
    """Algorithm 1 (docs/nichani-theory.md#staged-training-algorithm-1): A1 = 0, A2 = β0·I;
    stage 1 trains A1 only, stage 2 A2 only, by GD on fresh large batches (population-gradient
    proxy) across seeds, and as the exact gradient flow (diffrax) of one fixed batch; then OOD
    evaluation on other priors."""
    task = tree_task(config["graph"], vocab_size=config["vocab_size"], seq_len=config["seq_len"], alpha=config["alpha"], graph_seed=config["graph_seed"])
    s, t, eps = task.vocab_size, task.seq_len, config["eps"]
    dag = task.graph.dag_array()
    model = ReducedModel(s, t, beta0=config["beta0"])
    params0 = model.init()
    stages = [
        engine.Stage(config["stage1_steps"], groups="A1", learning_rate=config["stage1_lr"], name="A1"),
        engine.Stage(config["stage2_steps"], groups="A2", learning_rate=config["stage2_lr"], name="A2"),
    ]

    def loss(params, batch):
        return model.loss(params, batch, eps=eps)

    def probe(params):
        a2 = params["A2"]
        off = (jnp.sum(a2) - jnp.trace(a2)) / (s * (s - 1))
        return {**parent_attention_metrics(model.layer1_attention(params), dag), "A2_diag_minus_offdiag": jnp.trace(a2) / s - off}

    trained = _train_task(config, out, progress, task, model, params0, probe, stages, eps=eps)
    res, m, steps, base = trained.result, trained.metrics, trained.steps, trained.baselines
    # the same two stages as an exact gradient flow of one fixed batch (time t = η·steps)
    flow_batch = task.sample(jax.random.fold_in(jax.random.key(config["seed"]), 1), config["flow_batch"])
    flow = engine.gradient_flow(
        loss,
        params0,
        flow_batch,
        stages,
        num_saves=61,
        metrics=lambda p, time: trained.record(p),
        rtol=config["flow_rtol"],
        atol=config["flow_atol"],
        max_steps=100_000,
        progress=progress,
    )
    fm = jax.tree.map(np.asarray, flow.metrics)
    stage_steps = np.concatenate([np.zeros(1), np.cumsum([st.steps for st in stages])])
    stage_times = np.concatenate([np.zeros(1), np.cumsum([st.steps * st.learning_rate for st in stages])])
    flow_steps = np.interp(flow.ts, stage_times, stage_steps)  # flow time on the step axis
    # out of distribution: the learned estimator counts in context, so it should track Bayes
    # under other Dirichlet priors (Nichani et al.'s OOD claim;
    # docs/nichani-theory.md#induction-head-chain-case)
    final0 = jax.tree.map(lambda x: x[0, 0], res.params)
    ood = {}
    for a in config["ood_alphas"]:
        other = task.replace(alpha=float(a))
        ood_test = other.sample(jax.random.fold_in(jax.random.key(config["seed"]), 2), config["test_size"])
        ob = _baselines(other, ood_test)
        ood[f"alpha={a:g}"] = {
            "model_loss": float(_test_loss_fn(model, ood_test, eps=eps)(final0)),
            "bayes_loss": ob["bayes"]["loss"],
            "unigram_loss": ob["unigram"]["loss"],
            "oracle_loss": ob["oracle"]["loss"],
        }
    plot_runs(
        out / "staged_trajectories.png",
        steps,
        [
            {"values": m["mean_parent_attention"], "ylabel": "mean layer-1 attention on the parent", "label": "GD seeds", "ylim": (0, 1.02)},
            {"values": m["A2_diag_minus_offdiag"], "ylabel": "diag(A2) − offdiag(A2)", "label": "GD seeds"},
            _loss_panel(m["test_loss"], base, ("bayes", "unigram", "oracle")),
        ],
        title=f"Algorithm 1 on the reduced model ({config['graph']}, S={s}, T={t}): stage 1 = A1 (steps < {stages[0].steps}), stage 2 = A2",
    )
    import matplotlib.pyplot as plt  # GD seeds vs the exact flow on one axis

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "mean_parent_attention", "mean attention on parent"), (axes[1], "test_loss", "test loss")):
        ax.plot(steps, m[key].mean(0), label=f"GD, fresh batches (mean of {m[key].shape[0]} seeds)")
        ax.plot(flow_steps, fm[key], "--", label=f"gradient flow (Tsit5), fixed batch of {config['flow_batch']}")
        ax.axvline(stages[0].steps, color="k", lw=0.6)
        ax.set_xlabel("step (flow time / η of its stage)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "staged_flow_vs_gd.png", dpi=120)
    plt.close(fig)
    # the theory at initialisation: autodiff vs first-order formula vs population χ² prediction
    # (small β0, where the first-order expansion holds; docs/nichani-theory.md#first-order-gradient)
    report = nichani_gradient_report(
        task, beta0=1e-3, samples=config["theory_samples"], draws=config["theory_draws"], eps=eps, seed=config["seed"]
    )
    plot_gradient_comparison(
        out / "gradient_analytic_vs_autodiff.png",
        np.array(report["autodiff"]),
        np.array(report["first_order"]),
        dag,
        f"layer-1 gradient at init (β0=1e-3, {config['theory_samples']} sequences): "
        f"first-order rel. error {report['rel_error_first_order']:.2g}, population {report['rel_error_population']:.2g}",
        population_TxT=np.array(report["population"], dtype=np.float64),
    )
    theory = {k: v for k, v in report.items() if k not in ("autodiff", "first_order", "population", "parents")}
    end1 = int(np.searchsorted(steps, stages[0].steps))
    return {
        "theory_at_init": theory,
        "graph": dag.tolist(),
        **_tree_result(trained),
        "stage1_end_test_loss": _per_seed(m["test_loss"][:, end1]),
        "initial_test_loss": float(m["test_loss"][0, 0]),
        "A2_diag_minus_offdiag": _per_seed(m["A2_diag_minus_offdiag"][:, -1]),
        "flow": {
            "mean_parent_attention": float(fm["mean_parent_attention"][-1]),
            "parent_argmax_accuracy": float(fm["parent_argmax_accuracy"][-1]),
            "final_test_loss": float(fm["test_loss"][-1]),
            "solver_steps_per_stage": np.asarray(flow.num_steps).tolist(),
        },
        "ood": ood,
    }


def _staged_summary(metrics: dict) -> list:
    rows = [
        ("parent argmax accuracy after Algorithm 1", _fmt(metrics["parent_argmax_accuracy"])),
        ("mean attention on parent", _fmt(metrics["mean_parent_attention"])),
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
        defaults=STAGED_DEFAULTS,
        quick=STAGED_QUICK,
        run=run_staged,
        summary=_staged_summary,
    )
)
