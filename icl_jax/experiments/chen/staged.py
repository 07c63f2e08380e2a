"""Chen three-stage recipes C → W → a (``chen-three-stage-d2``, ``chen-three-stage-d3``) with
the theory beside training: the Ĩ_χ² / I_χ² selection ranking, the replicator prediction of
stage I from the first-order G_S of the seed-0 training set (rebuilt by ``_training_data``),
and the exact gradient flow of the stage-I loss against the simulated GD shares
(``theory_overlay``).

Stages: ``docs/chen-theory.md#stage-i-replicator-dynamics``,
``docs/chen-theory.md#stage-ii-heads-align-with-parents``,
``docs/chen-theory.md#stage-iii-classifier-scale``; selection criterion:
``docs/chen-theory.md#modified-chi-square-mutual-information``; the theory's window-law limits:
``docs/chen-theory.md#exact-stationary-window-laws``; recipe:
``docs/chen-theory.md#official-recipes``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_bars, plot_lines
from icl_jax.experiments.chen.common import (
    _QUICK,
    ChenConfig,
    ChenTrained,
    _loss_kw,
    _register,
    _summary,
    chen_model,
    chen_result,
    plot_training,
    train_chen,
    uses_window_stats,
)
from icl_jax.models.induction_stats import MAX_TABLE_ENTRIES
from icl_jax.experiments.config import option
from icl_jax.experiments.registry import RunContext
from icl_jax.models.induction_layers import subset_shares


@dataclasses.dataclass(frozen=True)
class StagedConfig(ChenConfig):
    """The three-stage recipe plus the theory overlay's sizes
    (docs/chen-theory.md#official-recipes)."""

    theory_draws: int = option(4096, "prior draws of the Ĩ_χ² / I_χ² selection ranking", min=2)
    flow_size: int = option(9000, "training sequences (seed 0) the exact stage-I gradient flow runs on "
                                  "(<= num_train)", min=1)

    def check(self) -> None:
        from icl_jax.theory.chen.window_laws import _check_sizes

        offsets = self.parent_offsets
        if offsets:  # first: no other setting lifts this limit (an empty `parents` fails below)
            try:  # the exact window laws of the selection report (chen_selection_report)
                _check_sizes(self.vocab_size, offsets, max(self.num_heads, max(offsets)))
            except ValueError as err:
                raise ValueError(
                    f"parents={self.parents}, vocab_size={self.vocab_size}, num_heads={self.num_heads}: the theory "
                    f"overlay cannot compute the selection ranking: {err} (train these parents with chen-cwa or "
                    "chen-cw-a, which have no overlay)"
                ) from None
        super().check()
        if self.stage_groups[0] == "C" and (self.full_model or not uses_window_stats(chen_model(self))):
            raise ValueError(
                f"full_model={self.full_model}, vocab_size={self.vocab_size}, num_heads={self.num_heads}: the stage-I "
                "theory overlay (first-order G_S, exact flow) is for the simplified model and runs on window "
                f"statistics (a similarity table of at most {MAX_TABLE_ENTRIES} entries); train this model with "
                "chen-cwa or chen-cw-a")
        if self.stage_groups[0] == "C" and self.flow_size > self.num_train:
            raise ValueError(f"flow_size ({self.flow_size}) must be <= num_train ({self.num_train}): the stage-I "
                             "gradient flow runs on the first flow_size training sequences")


def _training_data(config: ChenConfig, task, seed: int):
    """The exact dataset the engine drew for ``seed`` in fixed-data mode (the token batch,
    before window statistics): the engine's own ``run_data`` of the same sampler."""
    n = config.num_train
    return engine.run_data(engine.CommonSamples(lambda key, hp: task.sample(key, n)), seed)


def theory_overlay(config: StagedConfig, ctx: RunContext, trained: ChenTrained, result: dict) -> dict:
    """Ĩ_χ² / I_χ² ranking (docs/chen-theory.md#modified-chi-square-mutual-information), the
    replicator prediction of stage I from the first-order G_S of the seed-0 training set
    (docs/chen-theory.md#first-order-coefficient), and the exact gradient flow of the stage-I loss
    (engine ODE mode, diffrax) on the first ``flow_size`` training sequences, against the simulated
    GD shares (t = learning rate × step). Figures ``ctx.figure("selection")`` and
    ``ctx.figure("replicator")``."""
    from icl_jax.theory.chen import chen_selection_report, first_order_g, replicator_shares

    task, model, m, steps = trained.task, trained.model, trained.metrics, trained.steps
    report = chen_selection_report(task.vocab_size, task.parent_offsets, model.num_heads, model.max_degree,
                                   float(task.alpha), draws=config.theory_draws, seed=config.seed)
    labels = [s["label"] for s in report["subsets"]]
    sel_label = next(s["label"] for s in report["subsets"] if s["offsets"] == report["selected"])
    plot_bars(
        ctx.figure("selection"),
        [{"labels": labels, "values": [s["modified_chi2"] for s in report["subsets"]],
          "errors": [s["modified_chi2_se"] for s in report["subsets"]], "highlight": {sel_label},
          "xlabel": "head subset S (label = heads)", "ylabel": "Ĩ_χ²(S) (modified, weight μ(z)²)",
          "title": f"Ĩ ranking: S* = offsets {report['selected']}"},
         {"labels": labels, "values": [s["chi2"] for s in report["subsets"]],
          "errors": [s["chi2_se"] for s in report["subsets"]], "highlight": set(),
          "xlabel": "head subset S (label = heads)", "ylabel": "I_χ²(S) (standard)",
          "title": "standard χ² MI (ties once all parents are in S)"}],
        title=ctx.title(f"Chen et al.'s selection criterion, {config.theory_draws} prior draws, ± 2 s.e."),
        formats=ctx.formats,
    )
    if config.stage_groups[0] != "C":
        return {"selection": report}
    lr, n_c = float(config.stage_lrs[0]), int(config.stage_steps[0])
    seed0 = result["seeds"][0]
    data = _training_data(config, task, seed0)
    params0 = model.init()
    g = np.asarray(first_order_g(params0, data, model, eps=config.loss_eps))
    in_c = steps <= n_c
    sim = np.asarray(m["shares"])[0][in_c]
    # the theory curves on a grid that resolves the first steps: stage I can be over within a few
    # steps of a 2,000-step stage (the official recipe crosses share 0.5 before step 10)
    t_fine = _theory_times(lr * n_c, lr)
    predicted = np.asarray(replicator_shares(g, t_fine, config.a_init, params0["C"]))
    flow_data = model.window_stats(jax.tree.map(lambda x: x[: config.flow_size], data))
    kw = _loss_kw(config)
    loss = lambda p, b: model.loss(p, b, **kw)  # noqa: E731
    flow = engine.gradient_flow(loss, params0, flow_data, [engine.Stage(n_c, groups=("C",), learning_rate=lr)],
                                ts=t_fine, metrics=lambda p, t: subset_shares(p))
    k = labels.index(sel_label)
    gd_t, gd, replica = _gd_per_step(config, loss, params0, flow_data, steps[in_c], sim, k, n_c, lr)
    grew = lambda traj, i: traj[-1, i] > 0.05 or np.max(traj[1:, i]) > traj[0, i] + 0.01  # noqa: E731
    show = [i for i, lab in enumerate(labels) if lab == sel_label or grew(sim, i) or grew(predicted, i)]
    gd_tag = "GD, every step" if replica else "GD"
    plot_lines(
        ctx.figure("replicator"),
        [{"lines": {labels[i]: (gd_t, gd[:, i]) for i in show},
          "dashed": {labels[i]: (t_fine, predicted[:, i]) for i in show}, "dashed_tag": "replicator",
          "xlabel": "flow time t = lr × step (symlog)", "ylabel": "share c_S² / Σc²", "ylim": (-0.02, 1.02),
          "symlogx": lr, "title": f"stage I: {gd_tag} (solid) vs replicator from first-order G_S (dashed)"},
         {"lines": {labels[i]: (t_fine, np.asarray(flow.metrics)[:, i]) for i in show},
          "dashed": {labels[i]: (gd_t, gd[:, i]) for i in show}, "dashed_tag": "GD",
          "xlabel": "flow time t (symlog)", "ylabel": "share c_S² / Σc²", "ylim": (-0.02, 1.02), "symlogx": lr,
          "title": f"exact gradient flow (solid; diffrax, {config.flow_size} seqs) vs GD (dashed)"}],
        title=ctx.title("Chen stage I: selector shares, simulation vs theory (seed 0)"),
        formats=ctx.formats,
    )
    return {
        "selection": report,
        "first_order_G": dict(zip(labels, g.tolist())),
        "argmax_G": labels[int(np.argmax(g))],
        "time_to_half_share": {
            "gd": half_time(gd[:, k], gd_t),
            "replicator": half_time(predicted[:, k], t_fine),
            "flow": half_time(np.asarray(flow.metrics)[:, k], t_fine),
        },
        # GD is sampled every step (replica) or every record; the theory curves on t_fine
        "gd_time_resolution": lr if replica else lr * int(config.record_every),
        **({"gd_replica_max_abs_dev": replica["max_abs_dev"]} if replica else {}),
        "flow_final_shares": dict(zip(labels, np.asarray(flow.metrics)[-1].tolist())),
        "flow_solver_steps": list(flow.num_steps),
    }


def half_time(share_T, t_T) -> float | None:
    """The first time a share reaches 0.5, linearly interpolated between the two samples around
    the crossing (None if it never does; the first time if it starts there)."""
    share_T, t_T = np.asarray(share_T, np.float64), np.asarray(t_T, np.float64)
    above = np.flatnonzero(share_T >= 0.5)
    if not above.size:
        return None
    i = int(above[0])
    if i == 0:
        return float(t_T[0])
    y0, y1 = share_T[i - 1], share_T[i]
    return float(t_T[i - 1] + (0.5 - y0) * (t_T[i] - t_T[i - 1]) / (y1 - y0))


def _theory_times(total: float, lr: float) -> np.ndarray:
    """Save times of the replicator and the exact flow: 41 even times over stage I plus 200
    log-spaced times from a tenth of a step, so that the crossing of share 0.5 is resolved to
    ~5 % of its time wherever it falls."""
    return np.unique(np.concatenate([np.linspace(0.0, total, 41), np.geomspace(min(lr, total) / 10, total, 200)]))


def _gd_per_step(config: StagedConfig, loss, params0, flow_data, steps_rec, sim_rec, k: int, n_c: int, lr: float):
    """Stage-I GD shares at every step up to the first recorded crossing of share 0.5 (then the
    records), when the training run is full-batch GD on exactly the flow's data (data=fixed,
    flow_size = num_train): explicit Euler with dt = lr on that loss *is* that GD
    (docs/engine.md#time-convention). The replica is checked against the run's records: its largest
    deviation at the recorded steps is returned (``max_abs_dev``). Otherwise the records alone.

    Returns ``(t, shares [T, n_subsets], replica info or None)``."""
    t_rec = steps_rec * lr
    if config.data != "fixed" or config.flow_size != config.num_train:
        return t_rec, sim_rec, None
    crossed = np.flatnonzero(sim_rec[:, k] >= 0.5)
    last = int(steps_rec[crossed[0]]) if crossed.size else n_c
    if last == 0:
        return t_rec, sim_rec, None
    gd = engine.gradient_flow(loss, params0, flow_data, [engine.Stage(last, groups=("C",), learning_rate=lr)],
                              ts=np.arange(last + 1) * lr, solver="euler", dt0=lr,
                              metrics=lambda p, t: subset_shares(p))
    gd_S = np.asarray(gd.metrics)
    common = steps_rec <= last
    dev = float(np.max(np.abs(gd_S[steps_rec[common].astype(int)] - sim_rec[common])))
    later = steps_rec > last
    return (np.concatenate([np.arange(last + 1) * lr, t_rec[later]]),
            np.concatenate([gd_S, sim_rec[later]]), {"max_abs_dev": dev})


def _run_staged(title: str):
    def run(config: StagedConfig, ctx: RunContext) -> dict:
        trained = train_chen(config, ctx)
        result = chen_result(config, trained)
        plot_training(config, ctx, trained, result, title)
        return {**result, "theory": theory_overlay(config, ctx, trained, result)}

    return run


def _staged_summary(metrics: dict) -> list:
    rows = _summary(metrics)
    th = metrics["theory"]
    sel = th["selection"]
    rows.append(("theory: S* = argmax Ĩ_χ² (offsets)", f"{sel['selected']}"))
    for warning in sel.get("warnings", ()):
        rows.append(("theory warning", warning))
    if "argmax_G" in th:
        rows.append(("first-order G_S argmax (seed-0 data)", th["argmax_G"]))
        tt = th["time_to_half_share"]
        f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        res = th.get("gd_time_resolution")
        gd = f"GD (sampled every {res:g})" if res is not None else "GD"
        rows.append((f"stage I time to share 0.5: {gd} / replicator / exact flow",
                     f"{f(tt['gd'])} / {f(tt['replicator'])} / {f(tt['flow'])}"))
        if "gd_replica_max_abs_dev" in th:
            rows.append(("per-step GD replica (Euler, dt = lr) vs the run's records: max abs(Δ share)",
                         f"{th['gd_replica_max_abs_dev']:.1e}"))
    return rows


OFFICIAL = StagedConfig(stage_groups=("C", "W", "a"), stage_steps=(2000, 5000, 5000), stage_lrs=(1.0, 1e5, 1.0),
                        theory_draws=4096, flow_size=9000)
QUICK = OFFICIAL.replace(**{**_QUICK, "stage_steps": (60, 200, 600), "theory_draws": 2048, "flow_size": 2000,
                            "record_every": 2})

for _d, _what in ((2, "the selector picks {1,2}, heads sharpen, a grows"),
                  (3, "'111' rises then decays while '110' wins")):
    _title = f"Chen three-stage C → W → a, D = {_d}"
    _register(
        f"chen-three-stage-d{_d}",
        f"Chen three-stage C → W → a (D = {_d}): {_what}; Ĩ, replicator, exact flow",
        _title,
        OFFICIAL.replace(max_degree=_d),
        QUICK.replace(max_degree=_d),
        run=_run_staged(_title),
        summary=_staged_summary,
    )
