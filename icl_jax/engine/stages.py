"""Training stages: which parameter groups train, with which optax optimiser, for how long.

A run is a list of `Stage`s executed in order ("A1 only for τ1 steps, then A2 only for τ2
steps" — Nichani et al.'s Algorithm 1; "C, then W, then a" — Chen et al.'s official phases;
docs/engine.md#staged-training). Each stage owns a fresh optimiser state (Chen's official code
builds a new SGD per phase) and freezes every group it does not name through `optax.multi_transform`
with `optax.set_to_zero`.

Parameter groups are the top-level entries of the parameter pytree (dict keys, dataclass or
NamedTuple fields, sequence indices as strings) unless a `label_fn` says otherwise.

Hyperparameters that a sweep varies (learning rate, weight decay) are given as the *name*
of an entry of the run's hyperparameter dict; they then arrive as traced array leaves, so
one compiled program serves every grid point (docs/engine.md#staged-training).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

Hparams = Mapping[str, jax.Array]
LabelFn = Callable[[Any], Any]

_OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("constant", "cosine")


def _path_head(path) -> str:
    entry = path[0]
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def top_level_labels(params) -> Any:
    """Label every leaf with the name of its top-level entry (the default parameter groups)."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if any(len(path) == 0 for path, _ in leaves_with_path):
        raise ValueError("params: a bare array has no groups; use a dict such as {'A1': ..., 'A2': ...}")
    return jax.tree_util.tree_unflatten(treedef, [_path_head(path) for path, _ in leaves_with_path])


def group_names(params, label_fn: LabelFn = top_level_labels) -> tuple[str, ...]:
    """The parameter groups of `params`, in first-appearance order."""
    return tuple(dict.fromkeys(jax.tree.leaves(label_fn(params))))


def _resolve(value, hparams: Hparams, what: str):
    if isinstance(value, str):
        if value not in hparams:
            raise ValueError(f"{what}={value!r} names no hyperparameter; have {sorted(hparams)}")
        return hparams[value]
    return value


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of training.

    Attributes:
      steps: number of optimiser steps (≥ 1).
      groups: parameter groups trained in this stage; None trains all of them.
      learning_rate: a float, or the name of a hyperparameter (a sweep leaf).
      optimizer: "sgd" (optionally with `momentum`), "adam" or "adamw", or a callable
        `schedule -> optax.GradientTransformation` for anything else.
      schedule: "constant", or "cosine" (optax.cosine_decay_schedule from the learning rate to
        `final_lr_fraction` × it over this stage's steps; Nichani's official recipe).
      weight_decay: float or hyperparameter name. For "sgd"/"adam" it is coupled (the gradient
        becomes g + wd·θ, as Nichani's `single_parent.py` adds it); for "adamw" it is AdamW's
        decoupled decay (optax.adamw, decay applied to every trained parameter).
      loss_kwargs: keyword arguments of the loss during this stage (a mapping, stored as a
        sorted tuple of pairs; values must be hashable), e.g. ``{"interventions":
        Interventions(ablate=((1, 0),))}`` to ablate a head for this stage's steps only
        (docs/peer-tasks.md#interventions). Each stage has its own optimiser state, so a
        stage boundary restarts, e.g., Adam's moments.
      name: label used in logs and progress bars.
    """

    steps: int
    groups: tuple[str, ...] | None = None
    learning_rate: float | str = 1.0
    optimizer: str | Callable[[optax.Schedule], optax.GradientTransformation] = "sgd"
    schedule: str = "constant"
    weight_decay: float | str = 0.0
    momentum: float | None = None
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    final_lr_fraction: float = 0.0
    name: str = ""
    loss_kwargs: tuple = ()

    def __post_init__(self):
        kw = self.loss_kwargs
        if isinstance(kw, Mapping):
            if not all(isinstance(name, str) for name in kw):
                raise ValueError(f"Stage.loss_kwargs: keyword names must be strings, got {list(kw)!r}")
            kw = tuple(sorted(kw.items()))
        if not isinstance(kw, tuple) or any(not (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)) for p in kw):
            raise ValueError(f"Stage.loss_kwargs: must be a mapping of keyword names to values, got {self.loss_kwargs!r}")
        try:
            hash(kw)
        except TypeError:
            raise ValueError(f"Stage.loss_kwargs: values must be hashable (they are static), got {self.loss_kwargs!r}") from None
        object.__setattr__(self, "loss_kwargs", kw)
        if isinstance(self.groups, str):
            object.__setattr__(self, "groups", (self.groups,))
        elif self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))
            if not self.groups:
                raise ValueError("Stage.groups: must name at least one group (None trains all)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise ValueError(f"Stage.steps: must be an integer >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        for field in ("learning_rate", "weight_decay"):
            value = getattr(self, field)
            if not isinstance(value, str):
                if not isinstance(value, numbers.Real) and not (hasattr(value, "shape") and value.shape == ()):
                    raise ValueError(f"Stage.{field}: must be a number or a hyperparameter name, got {value!r}")
                object.__setattr__(self, field, float(value))
        if callable(self.optimizer) and (isinstance(self.weight_decay, str) or self.weight_decay > 0):
            raise ValueError("Stage.weight_decay: a callable optimizer must include its own weight decay "
                             "(e.g. optax.chain(optax.add_decayed_weights(wd), ...)); leave weight_decay at 0")
        if not callable(self.optimizer) and self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"Stage.optimizer: must be one of {_OPTIMIZERS} or a callable, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"Stage.schedule: must be one of {_SCHEDULES}, got {self.schedule!r}")
        if not isinstance(self.learning_rate, str) and not self.learning_rate > 0:
            raise ValueError(f"Stage.learning_rate: must be > 0 (or a hyperparameter name), got {self.learning_rate!r}")
        if not isinstance(self.weight_decay, str) and not self.weight_decay >= 0:
            raise ValueError(f"Stage.weight_decay: must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"Stage.final_lr_fraction: must lie in [0, 1], got {self.final_lr_fraction!r}")

    @property
    def label(self) -> str:
        return self.name or ("+".join(self.groups) if self.groups else "all")

    def describe(self) -> dict:
        """JSON-able description (for config.json and checkpoint fingerprints)."""
        out = dataclasses.asdict(self)
        if not self.loss_kwargs:  # absent unless used: fingerprints of earlier runs stay valid
            del out["loss_kwargs"]
        if callable(self.optimizer):
            out["optimizer"] = getattr(self.optimizer, "__qualname__", repr(self.optimizer))
        return out

    def schedule_fn(self, hparams: Hparams) -> optax.Schedule:
        lr = _resolve(self.learning_rate, hparams, "Stage.learning_rate")
        if self.schedule == "cosine":
            return optax.cosine_decay_schedule(lr, decay_steps=self.steps, alpha=self.final_lr_fraction)
        return optax.constant_schedule(lr)

    def base_transform(self, hparams: Hparams) -> optax.GradientTransformation:
        """The optimiser for the trained groups (before masking)."""
        sched = self.schedule_fn(hparams)
        wd = _resolve(self.weight_decay, hparams, "Stage.weight_decay")
        has_wd = isinstance(self.weight_decay, str) or self.weight_decay > 0
        if callable(self.optimizer):
            return self.optimizer(sched)
        if self.optimizer == "adamw":
            return optax.adamw(sched, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=wd)
        if self.optimizer == "adam":
            tx = optax.adam(sched, b1=self.b1, b2=self.b2, eps=self.eps)
        else:
            tx = optax.sgd(sched, momentum=self.momentum)
        return optax.chain(optax.add_decayed_weights(wd), tx) if has_wd else tx

    def transform(self, hparams: Hparams, labels) -> optax.GradientTransformation:
        """`base_transform` on this stage's groups, zero updates for all others."""
        trained = set(self.groups) if self.groups is not None else set(jax.tree.leaves(labels))
        mask_labels = jax.tree.map(lambda name: "train" if name in trained else "frozen", labels)
        return optax.multi_transform(
            {"train": self.base_transform(hparams), "frozen": optax.set_to_zero()}, mask_labels
        )


def check_stages(stages: Sequence[Stage], params, label_fn: LabelFn, hparam_names: Sequence[str]) -> tuple[Stage, ...]:
    """Validate a stage list against the parameter groups and hyperparameter names."""
    stages = tuple(stages)
    if not stages:
        raise ValueError("stages: need at least one Stage")
    for i, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise ValueError(f"stages[{i}]: expected a Stage, got {type(stage).__name__}")
    groups = group_names(params, label_fn)
    for i, stage in enumerate(stages):
        unknown = [g for g in (stage.groups or ()) if g not in groups]
        if unknown:
            raise ValueError(f"stages[{i}].groups: unknown parameter group(s) {unknown}; the parameters have {list(groups)}")
        for field in ("learning_rate", "weight_decay"):
            value = getattr(stage, field)
            if isinstance(value, str) and value not in hparam_names:
                raise ValueError(
                    f"stages[{i}].{field}={value!r} names no hyperparameter; the sweep has {sorted(hparam_names)}"
                )
    return stages


def refine_stages(stages: Sequence[Stage], factor: int) -> tuple[Stage, ...]:
    """Gradient descent with `factor`× smaller steps over the same flow time t = η·steps.

    Only numeric learning rates can be refined here; as factor → ∞ the run approaches the
    gradient flow that `icl_jax.engine.gradient_flow` integrates.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor: must be an integer >= 1, got {factor!r}")
    out = []
    for i, stage in enumerate(stages):
        if isinstance(stage.learning_rate, str):
            raise ValueError(f"stages[{i}].learning_rate: a hyperparameter name cannot be refined; pass a number")
        out.append(dataclasses.replace(stage, steps=stage.steps * factor, learning_rate=stage.learning_rate / factor))
    return tuple(out)


def flow_duration(stage: Stage) -> float:
    """Gradient-flow time of a stage, t = η·steps (neural-tangents convention).

    Only stages that *are* discretised gradient flows qualify: plain SGD, constant schedule,
    no momentum, no weight decay, a numeric learning rate.
    """
    if (
        stage.optimizer != "sgd"
        or stage.schedule != "constant"
        or stage.momentum
        or isinstance(stage.weight_decay, str)
        or stage.weight_decay != 0
        or isinstance(stage.learning_rate, str)
    ):
        raise ValueError(
            f"stage {stage.label!r}: a gradient flow needs plain SGD, a constant numeric learning rate, "
            f"no momentum and no weight decay (got optimizer={stage.optimizer!r}, schedule={stage.schedule!r}, "
            f"momentum={stage.momentum!r}, weight_decay={stage.weight_decay!r}, learning_rate={stage.learning_rate!r})"
        )
    return float(stage.learning_rate) * stage.steps
