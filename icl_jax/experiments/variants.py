"""Variants of the registered recipes that the reproduction reports next to the presets
(``icl-jax reproduce --variants``; REPRODUCTION.md).

The official recipes are single-seed and follow the paper where the official code deviates
(docs/quirks.md). A variant is a registered experiment's preset with a few keys changed, for
one of these reasons:

* **seeds**: the official run is one seed; where a run is cheap enough the variant trains
  three in one vmapped call, so the reported number has a spread;
* **another official recipe** of the same model: Chen's second three-stage run (stage II at
  lr 1 for 50,000 steps instead of lr 1e5 for 5,000; docs/chen-theory.md#official-recipes);
* **another reading of the paper**: where the spec is unsure what the paper does, the other
  reading (D'Angelo et al.'s kernel, fixed instead of drawn per sequence);
* **official behaviour**: the paper's version is the default and the official code's
  behaviour is an option; the variant runs the option where it can change the outcome
  (Chen's double-softmax loss, chen-quirk-1; the copier window, chen-quirk-4; the raw-token
  subsets, chen-quirk-8; the multi-parent roots, nichani-quirk-2).

The tree-Bayes wrap-around (nichani-quirk-1) needs no run: every tree experiment reports both
baselines (``bayes_loss``, ``bayes_official_loss``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from icl_jax.experiments.config import ExperimentConfig
from icl_jax.experiments.registry import Experiment, get_experiment

__all__ = ["Variant", "VARIANTS", "get_variant"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A registered experiment's preset with ``overrides`` (typed values).

    Attributes:
      name: the variant's name (its run folder and its rows in ``summary.md``).
      experiment: the registered experiment it varies.
      overrides: the keys changed from the preset.
      question: what comparing it with the preset answers (one line).
      quick: the keys changed from the quick preset, when they differ from ``overrides``
        (a long official schedule shrunk to CPU minutes).
    """

    name: str
    experiment: str
    overrides: Mapping
    question: str
    quick: Mapping | None = None

    @property
    def exp(self) -> Experiment:
        return get_experiment(self.experiment)

    def keys(self, preset: str = "official") -> Mapping:
        """The keys this variant changes in ``preset``."""
        return self.quick if preset == "quick" and self.quick is not None else self.overrides

    def config(self, preset: str = "official") -> ExperimentConfig:
        """The variant of ``preset`` (validated like any config)."""
        return self.exp.config(preset, overrides=self.keys(preset))


_SEEDS = "mean ± sd over three datasets in one vmapped call, where the official run has one"
_CHEN_LOSS = ("the official code's loss (CrossEntropyLoss on the predicted probabilities: a second softmax, "
              "chen-quirk-1) against the true cross-entropy the paper analyses")

VARIANTS: tuple[Variant, ...] = (
    Variant("chen-three-stage-d2-seeds3", "chen-three-stage-d2", {"seeds": 3}, _SEEDS),
    Variant("chen-three-stage-d2-official-loss", "chen-three-stage-d2", {"loss": "official"}, _CHEN_LOSS),
    Variant("chen-three-stage-variant", "chen-three-stage-d2", {"stage_steps": (2000, 50000, 5000), "stage_lrs": (1.0, 1.0, 1.0)},
            "the official code's three-stage variant: stage II (W) at lr 1 for 50,000 steps instead of lr 1e5 for 5,000",
            quick={"stage_steps": (60, 2000, 600), "stage_lrs": (1.0, 1.0, 1.0)}),
    Variant("chen-three-stage-d2-official-window", "chen-three-stage-d2", {"window": "official"},
            "the official copier window (head h sees offsets h..h+H−1, chen-quirk-4) against the paper's window "
            "shared by every head (offsets 1..H)"),
    Variant("chen-three-stage-d2-include-raw", "chen-three-stage-d2", {"include_raw": True},
            "the official selector's subsets that include the raw token (kernel 0, but counted in the "
            "normaliser, chen-quirk-8) against only the subsets of the heads"),
    Variant("chen-cwa-seeds3", "chen-cwa", {"seeds": 3}, _SEEDS),
    Variant("chen-cwa-official-loss", "chen-cwa", {"loss": "official"}, _CHEN_LOSS),
    Variant("chen-bigram-seeds3", "chen-bigram", {"seeds": 3}, _SEEDS),
    Variant("chen-full-model-seeds3", "chen-full-model", {"seeds": 3}, _SEEDS),
    Variant("dangelo-selective-lags-fixed-kernel", "dangelo-selective-lags", {"kernel": "fixed"},
            "one transition kernel shared by every sequence (the abstract's 'transition probabilities fixed') "
            "against one drawn per sequence (the spec's reading): does a lag-selecting head form?"),
    Variant("nichani-fig5-official-roots", "nichani-fig5-multiparent", {"roots": "official"},
            "the official sampler's roots (one Dirichlet(α) vector shared by the roots of a sequence, "
            "nichani-quirk-2) against the uniform roots the paper intends"),
)


def get_variant(name: str) -> Variant:
    for variant in VARIANTS:
        if variant.name == name:
            return variant
    raise ValueError(f"unknown variant {name!r}; defined: {', '.join(v.name for v in VARIANTS)}")
