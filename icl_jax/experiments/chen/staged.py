"""Chen three-stage recipes C → W → a (``chen-three-stage-d2``, ``chen-three-stage-d3``) with
the theory beside training: the Ĩ_χ² / I_χ² selection ranking, the replicator prediction of
stage I from the first-order G_S of the seed-0 training set (rebuilt by ``_training_data``),
and the exact gradient flow of the stage-I loss against the simulated GD shares
(``theory_overlay``).

Stages: ``docs/chen-theory.md#stage-i-replicator-dynamics``,
``docs/chen-theory.md#stage-ii-heads-align-with-parents``,
``docs/chen-theory.md#stage-iii-classifier-scale``; selection criterion:
``docs/chen-theory.md#modified-chi-square-mutual-information``; recipe:
``docs/chen-theory.md#official-recipes``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_bars, plot_lines
from icl_jax.experiments.chen.common import _QUICK, _loss_kw, _register, _summary, chen_result, plot_training, train_chen
from icl_jax.models.induction_layers import subset_shares


def _training_data(config, task, seed: int):
    """The exact dataset the engine drew for ``seed`` in fixed-data mode (the token batch,
    before window statistics): the engine's own ``run_data`` of the same sampler."""
    n = config["num_train"]
    return engine.run_data(engine.CommonSamples(lambda key, hp: task.sample(key, n)), seed)


def theory_overlay(config, out: Path, name: str, task, model, result: dict, m, steps) -> dict:
    """Ĩ_χ² / I_χ² ranking (docs/chen-theory.md#modified-chi-square-mutual-information), the
    replicator prediction of stage I from the first-order G_S of the seed-0 training set
    (docs/chen-theory.md#first-order-coefficient), and the exact gradient flow of the stage-I loss
    (engine ODE mode, diffrax) on the first ``flow_size`` training sequences, against the simulated
    GD shares (t = learning rate × step)."""
    from icl_jax.theory.chen import chen_selection_report, first_order_g, replicator_shares

    report = chen_selection_report(task.vocab_size, task.parent_offsets, model.num_heads, model.max_degree,
                                   float(task.alpha), draws=config["theory_draws"], seed=config["seed"])
    labels = [s["label"] for s in report["subsets"]]
    sel_label = next(s["label"] for s in report["subsets"] if s["offsets"] == report["selected"])
    plot_bars(
        out / f"{name}_selection.png",
        [{"labels": labels, "values": [s["modified_chi2"] for s in report["subsets"]],
          "errors": [s["modified_chi2_se"] for s in report["subsets"]], "highlight": {sel_label},
          "ylabel": "Ĩ_χ²(S) (modified, weight μ(z)²)", "title": f"Ĩ ranking: S* = offsets {report['selected']}"},
         {"labels": labels, "values": [s["chi2"] for s in report["subsets"]],
          "errors": [s["chi2_se"] for s in report["subsets"]], "highlight": set(),
          "ylabel": "I_χ²(S) (standard)", "title": "standard χ² MI (ties once all parents are in S)"}],
        title=f"Chen et al.'s selection criterion, {config['theory_draws']} prior draws, ± 2 s.e.",
    )
    stage_c = config["stage_groups"][0]
    if stage_c != "C":
        return {"selection": report}
    lr, n_c = float(config["stage_lrs"][0]), int(config["stage_steps"][0])
    seed0 = result["seeds"][0]
    data = _training_data(config, task, seed0)
    params0 = model.init()
    g = np.asarray(first_order_g(params0, data, model, eps=config["loss_eps"]))
    in_c = steps <= n_c
    t_sim = steps[in_c] * lr
    predicted = np.asarray(replicator_shares(g, t_sim, config["a_init"], params0["C"]))
    flow_data = model.window_stats(jax.tree.map(lambda x: x[: config["flow_size"]], data))
    kw = _loss_kw(config)
    flow = engine.gradient_flow(
        lambda p, b: model.loss(p, b, **kw), params0, flow_data,
        [engine.Stage(n_c, groups=("C",), learning_rate=lr)], num_saves=41,
        metrics=lambda p, t: subset_shares(p),
    )
    sim = np.asarray(m["shares"])[0][in_c]
    grew = lambda traj, i: traj[-1, i] > 0.05 or np.max(traj[1:, i]) > traj[0, i] + 0.01  # noqa: E731
    show = [i for i, lab in enumerate(labels) if lab == sel_label or grew(sim, i) or grew(predicted, i)]
    plot_lines(
        out / f"{name}_replicator.png",
        [{"lines": {labels[i]: (t_sim, sim[:, i]) for i in show},
          "dashed": {labels[i]: (t_sim, predicted[:, i]) for i in show}, "dashed_tag": "replicator",
          "xlabel": "flow time t = lr × step", "ylabel": "share c_S² / Σc²", "ylim": (-0.02, 1.02),
          "title": "stage I: GD (solid) vs replicator prediction from first-order G_S (dashed)"},
         {"lines": {labels[i]: (flow.ts, np.asarray(flow.metrics)[:, i]) for i in show},
          "dashed": {labels[i]: (t_sim, sim[:, i]) for i in show}, "dashed_tag": "GD",
          "xlabel": "flow time t", "ylabel": "share", "ylim": (-0.02, 1.02),
          "title": f"exact gradient flow (solid; diffrax, {config['flow_size']} seqs) vs GD (dashed)"}],
        title="Chen stage I: selector shares, simulation vs theory (seed 0)",
    )
    t_half = lambda traj, t: float(t[np.argmax(traj >= 0.5)]) if np.any(traj >= 0.5) else None  # noqa: E731
    k = labels.index(sel_label)
    return {
        "selection": report,
        "first_order_G": dict(zip(labels, g.tolist())),
        "argmax_G": labels[int(np.argmax(g))],
        "time_to_half_share": {
            "gd": t_half(sim[:, k], t_sim),
            "replicator": t_half(predicted[:, k], t_sim),
            "flow": t_half(np.asarray(flow.metrics)[:, k], np.asarray(flow.ts)),
        },
        "flow_final_shares": dict(zip(labels, np.asarray(flow.metrics)[-1].tolist())),
        "flow_solver_steps": list(flow.num_steps),
    }


def _run_staged(name: str, title: str):
    def run(config: dict, out: Path, progress: bool = True) -> dict:
        task, model, res, m, steps, test = train_chen(config, out, progress)
        result = chen_result(config, task, model, res, m, steps, test)
        plot_training(out, name, title, config, task, model, result, m, steps)
        return {**result, "theory": theory_overlay(config, out, name, task, model, result, m, steps)}

    return run


def _staged_summary(metrics: dict) -> list:
    rows = _summary(metrics)
    th = metrics["theory"]
    sel = th["selection"]
    rows.append(("theory: S* = argmax Ĩ_χ² (offsets)", f"{sel['selected']}"))
    if "argmax_G" in th:
        rows.append(("first-order G_S argmax (seed-0 data)", th["argmax_G"]))
        tt = th["time_to_half_share"]
        f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append(("stage I time to share 0.5: GD / replicator / exact flow", f"{f(tt['gd'])} / {f(tt['replicator'])} / {f(tt['flow'])}"))
    return rows


_STAGED = {"stage_groups": ["C", "W", "a"], "stage_steps": [2000, 5000, 5000], "stage_lrs": [1.0, 1e5, 1.0],
           "theory_draws": 4096, "flow_size": 9000}
_STAGED_QUICK = {**_QUICK, "stage_steps": [60, 200, 600], "theory_draws": 2048, "flow_size": 2000, "record_every": 2}
_register(
    "chen-three-stage-d2",
    "Chen three-stage C → W → a (D = 2): the selector picks {1,2}, heads sharpen, a grows; Ĩ, replicator, exact flow",
    "Chen three-stage C → W → a, D = 2",
    {**_STAGED, "max_degree": 2},
    _STAGED_QUICK,
    run=_run_staged("chen-three-stage-d2", "Chen three-stage C → W → a, D = 2"),
    summary=_staged_summary,
)
_register(
    "chen-three-stage-d3",
    "Chen three-stage C → W → a (D = 3): '111' rises then decays while '110' wins; Ĩ, replicator, exact flow",
    "Chen three-stage C → W → a, D = 3",
    {**_STAGED, "max_degree": 3},
    _STAGED_QUICK,
    run=_run_staged("chen-three-stage-d3", "Chen three-stage C → W → a, D = 3"),
    summary=_staged_summary,
)
