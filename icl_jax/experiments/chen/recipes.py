"""Chen's other official training recipes, each a :class:`~icl_jax.experiments.chen.common.ChenConfig`
stage list trained by :func:`~icl_jax.experiments.chen.common.train_chen` and reported by
``chen_result`` / ``plot_training``: two-stage CW → a (``chen-cw-a``), joint CWa
(``chen-cwa``), the Appendix-B full model (``chen-full-model``) and the bigram job
(``chen-bigram``).

Recipes: ``docs/chen-theory.md#official-recipes``; the full model:
``docs/models.md#appendix-b-full-model`` and ``docs/quirks.md#chen-quirk-11``; the bigram
task: ``docs/quirks.md#chen-quirk-7``.
"""

from __future__ import annotations

from icl_jax.experiments.chen.common import _QUICK, ChenConfig, _register

CW_A = ChenConfig(stage_groups=("CW", "a"), stage_steps=(500000, 5000), stage_lrs=(1.0, 1.0), record_every=500)
CWA = ChenConfig(stage_groups=("CWa",), stage_steps=(50000,), stage_lrs=(1.0,), record_every=50)
FULL = ChenConfig(full_model=True, w_plus=1.0, w_minus=0.01, stage_groups=("all",), stage_steps=(10000,),
                  stage_lrs=(1e-3,), record_every=20)
BIGRAM = ChenConfig(task="bigram", num_heads=1, max_degree=1, parents=(1,), stage_groups=("CWa",),
                    stage_steps=(50000,), stage_lrs=(1.0,), record_every=50)

_register(
    "chen-cw-a",
    "Chen two-stage CW → a (D = 2): C and W jointly, then a",
    "Chen two-stage CW → a, D = 2",
    CW_A,
    CW_A.replace(**_QUICK, stage_steps=(1200, 900)),
)
_register(
    "chen-cwa",
    "Chen joint CWa (jobs/3-gram.sh): every group at once, lr 1",
    "Chen joint CWa, D = 2",
    CWA,
    CWA.replace(**_QUICK, stage_steps=(2000,)),
)
_register(
    "chen-full-model",
    "Chen Appendix B: full model (Q/K/OV, LayerNorm, self offset), all parameters jointly",
    "Chen Appendix-B full model, joint SGD",
    FULL,
    # smaller than the other quick runs (sized when the full model had only the position-wise
    # forward; kept so its committed quick numbers stay comparable)
    FULL.replace(**{**_QUICK, "num_train": 1000, "test_size": 1000, "seeds": 1, "record_every": 10,
                    "stage_steps": (400,), "stage_lrs": (1e-2,)}),
)
_register(
    "chen-bigram",
    "Chen bigram job (jobs/2-gram.sh): Markov data, H = 1, D = 1, joint CWa",
    "Chen bigram job: H = 1, D = 1, joint CWa",
    BIGRAM,
    BIGRAM.replace(**_QUICK, stage_steps=(1500,)),
)
