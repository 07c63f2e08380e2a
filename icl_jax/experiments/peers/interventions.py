"""``singh-interventions``: Singh et al. 2024, "What needs to go right for an induction head?" —
intervene on the layer-1 head of Bietti et al.'s trigger task for the first steps of training
and watch when the induction head forms (docs/peer-tasks.md#interventions).

Three conditions, each one vmapped engine sweep over the same seeds, data and recipe as
``bietti-triggers``; training has two stages, the intervention holding in the first
(``engine.Stage(loss_kwargs={"interventions": ...})``), the same split for every condition (so
each restarts Adam at the boundary):

- ``none``: no intervention;
- ``clamp``: layer 1's head attends to the previous token (Singh et al.'s clamp of the
  previous-token sub-circuit);
- ``ablate``: layer 1's head output is zeroed.

``conditions`` chooses which are trained (default all three); the first is the run's model
(``run/``), the others are in ``run/<condition>``.

Recorded: the trigger task's metrics (:func:`~icl_jax.experiments.peers.triggers.trigger_recorder`)
for the intact model, and the induction accuracy of the model as trained (with the
intervention while it holds). The question is the order of sub-circuits: with the
previous-token pattern given, does the layer-2 head form earlier; with layer 1 removed, can
anything copy in context before it returns?
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_runs
from icl_jax.experiments.common import _mean_sd, _per_seed, _seeds, _test_sequences
from icl_jax.experiments.config import option
from icl_jax.experiments.peers.triggers import QUICK as TRIGGER_QUICK
from icl_jax.experiments.peers.triggers import (
    ACCURACY_THRESHOLD,
    TriggerConfig,
    _build,
    _model,
    _task,
    emergence,
    reference_losses,
    trained_groups,
    trigger_recorder,
)
from icl_jax.experiments.registry import Experiment, RunContext, register
from icl_jax.models.interventions import Interventions

__all__ = ["InterventionConfig", "CONDITIONS"]

#: condition name → what holds on layer 1's head during the first stage
CONDITIONS = {
    "none": Interventions(),
    "clamp": Interventions(clamp=((1, 0, "previous_token"),)),
    "ablate": Interventions(ablate=((1, 0),)),
}


@dataclasses.dataclass(frozen=True)
class InterventionConfig(TriggerConfig):
    """``bietti-triggers``' recipe plus the intervention's duration (docs/peer-tasks.md#interventions)."""

    title_fields = {**TriggerConfig.title_fields, "intervention_steps": "intervened"}

    intervention_steps: int = option(1000, "steps from the start during which the intervention holds", min=1)
    conditions: tuple[Literal["none", "clamp", "ablate"], ...] = option(
        tuple(CONDITIONS), "the conditions trained (distinct; the first is the run's model in run/)", added=True)

    def check(self) -> None:
        super().check()
        if not self.conditions or len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"conditions must be distinct names from {tuple(CONDITIONS)} (got {self.conditions!r})")
        if self.intervention_steps >= self.steps:
            raise ValueError(f"intervention_steps ({self.intervention_steps}) must be < steps ({self.steps}): "
                             "training continues without it")


OFFICIAL = InterventionConfig()
QUICK = InterventionConfig(**{**dataclasses.asdict(TRIGGER_QUICK), "intervention_steps": 500})


def _metrics(record, intervention: Interventions, steps_held: int):
    """``metrics(params, step)``: the intact model's trigger metrics, plus ``trained_accuracy``,
    the induction accuracy of the model as trained (intervened while ``step < steps_held``)."""

    def metrics(params, step):
        intact = record(params)
        if not intervention:
            return {**intact, "trained_accuracy": intact["induction_accuracy"]}
        held = record(params, interventions=intervention)["induction_accuracy"]
        return {**intact, "trained_accuracy": jnp.where(step < steps_held, held, intact["induction_accuracy"])}

    return metrics


def run_interventions(config: InterventionConfig, ctx: RunContext) -> dict:
    task, model = _task(config), _model(config)
    test = _test_sequences(task, config)
    refs = reference_losses(task, test)
    record = trigger_recorder(model, test, refs.pop("kinds"))
    groups = trained_groups(config, model)
    s = config.intervention_steps
    out, curves = {}, {}
    # the first condition trained is the run's model (run/); the others in run/<condition>
    for name in config.conditions:
        intervention = CONDITIONS[name]
        stages = [engine.Stage(s, groups=groups, optimizer="adam", learning_rate=config.learning_rate,
                               loss_kwargs={"interventions": intervention} if intervention else {}, name=name),
                  engine.Stage(config.steps - s, groups=groups, optimizer="adam", learning_rate=config.learning_rate)]

        kwargs = ctx.sweep_kwargs()
        if name != config.conditions[0]:
            kwargs["out_dir"] = ctx.run_dir / name
        res = engine.sweep(model.sequence_loss, lambda key, hp: model.init(key), stages,
                           engine.FreshSamples(lambda key, hp: task.sample_sequences(key, config.batch_size)),
                           seeds=_seeds(config), metrics=_metrics(record, intervention, s),
                           record_every=config.record_every, **kwargs)
        m = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
        steps = np.asarray(res.record_steps)
        curves[name] = m
        out[name] = {**{f"final_{k}": _per_seed(v[:, -1]) for k, v in m.items()},
                     "first_step": emergence(steps, m, refs),
                     "first_step_trained_accuracy": emergence(
                         steps, {**m, "induction_accuracy": m["trained_accuracy"]}, refs)["induction_emerged"],
                     "trajectory": {"steps": steps.tolist(), **{k: v.mean(0).tolist() for k, v in m.items()}},
                     "train_wall_seconds": res.wall_seconds}
    panels = []
    for key, ylabel in (("induction_accuracy", "induction accuracy (intact model)"),
                        ("trained_accuracy", "induction accuracy (as trained)"),
                        ("previous_token", "layer-1 attention on t − 1 (intact)"),
                        ("induction_attention", "layer-2 attention on successors (intact)")):
        for name in config.conditions:
            panels.append({"values": curves[name][key], "ylabel": ylabel, "label": "seeds", "ylim": (-0.02, 1.02),
                           "title": f"{name}: {ylabel}"})
    plot_runs(ctx.figure("conditions"), steps, panels, ncols=len(config.conditions),
              title=ctx.title(f"Singh et al.-style interventions on layer 1 for the first {s} steps, "
                              f"Bietti et al.'s trigger task (N={config.vocab_size}, T={config.seq_len})"),
              formats=ctx.formats)
    return {"seeds": _seeds(config), "intervention_steps": s, **refs,
            "conditions": {n: {"ablate": list(map(list, CONDITIONS[n].ablate)), "clamp": list(map(list, CONDITIONS[n].clamp))}
                           for n in config.conditions},
            **out}


def _summary(m: dict) -> list:
    f = functools.partial(_mean_sd, digits=3)
    rows = []
    for name in (c for c in CONDITIONS if c in m):
        r = m[name]
        rows.append((f"{name}: final induction accuracy; layer-1 previous-token attention",
                     f"{f(r['final_induction_accuracy'])}; {f(r['final_previous_token'])} ({len(m['seeds'])} seeds)"))
        rows.append((f"{name}: first step with accuracy >= {ACCURACY_THRESHOLD}, intact / as trained (per seed)",
                     f"{r['first_step']['induction_emerged']} / {r['first_step_trained_accuracy']}"))
    return rows


register(
    Experiment(
        name="singh-interventions",
        description="Singh et al.: clamp or ablate the layer-1 head early in training; when does the induction head form?",
        official=OFFICIAL,
        quick=QUICK,
        run=run_interventions,
        build=_build,
        summary=_summary,
    )
)
