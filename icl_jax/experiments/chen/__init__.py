"""Chen, Sheen, Wang & Yang (2024) experiments (docs/chen-theory.md#official-recipes): the official
recipes as stage lists, the Appendix-B full model, the bigram job, and new length / prior generalisation.

Registered: ``chen-three-stage-d2``, ``chen-three-stage-d3``, ``chen-cw-a``, ``chen-cwa``,
``chen-full-model``, ``chen-bigram``, ``chen-generalization``. Each trains all its seeds in
one vmapped engine call (seed = the run's dataset: the initialisation is deterministic, as in
the official code), writes the engine's run folder ``DIR/run`` (checkpoints; ``icl-jax resume
DIR`` continues it), ``metrics.json`` and figures ``DIR/<experiment>_<kind>.png``.

Every config is a frozen :class:`~icl_jax.experiments.chen.common.ChenConfig` (``--set
key=value``, parsed by the field's type; ``--show-config`` lists the fields): the stages are
``stage_groups`` (letters of the official ``--train-cmd``: "C", "W", "a", "CW", "CWa", or "all"
for every parameter of the full model), ``stage_steps`` and ``stage_lrs``, plain SGD as in the
official code. The config is validated before anything runs: the stage lists, the task against
the parents, parent offsets no copier head can reach (an error unless
``allow_unreachable_parents=true``), and, for the staged recipes, the theory's window-law limits
(:class:`~icl_jax.experiments.chen.staged.StagedConfig`). Defaults follow the paper where the
official code deviates (``docs/quirks.md#chen-et-al-quirks``): ``loss="prob_ce"`` (the true
cross-entropy, ε-floored) and ``window="paper"``; ``--set loss=official window=official
include_raw=true`` gives the official behaviour. Both losses are always reported.
``data="fixed"`` (official) is full-batch GD on ``num_train`` sequences drawn once per seed;
``data="fresh"`` draws ``batch_size`` new sequences every step (a population-risk proxy). Test
losses use one held-out set of ``test_size`` sequences shared by every seed. Recipes:
``docs/chen-theory.md#official-recipes``.

One module per figure family:

* :mod:`~icl_jax.experiments.chen.common`: config, task / model / stage builders, test set and
  losses, baselines, ``train_chen``, ``chen_result``, ``plot_training``, summaries.
* :mod:`~icl_jax.experiments.chen.staged`: the three-stage recipes with the theory overlay.
* :mod:`~icl_jax.experiments.chen.recipes`: CW → a, joint CWa, the full model, the bigram job.
* :mod:`~icl_jax.experiments.chen.generalization`: length and prior generalisation (new).

Importing this package registers every experiment above.
"""

from icl_jax.experiments.chen import staged as staged  # registers chen-three-stage-d2 / -d3
from icl_jax.experiments.chen import recipes as recipes  # registers chen-cw-a, chen-cwa, chen-full-model, chen-bigram
from icl_jax.experiments.chen import generalization as generalization  # registers chen-generalization
from icl_jax.experiments.chen.common import ChenConfig as ChenConfig
from icl_jax.experiments.chen.common import ChenTrained as ChenTrained
from icl_jax.experiments.chen.common import _baselines as _baselines
from icl_jax.experiments.chen.common import _loss_kw as _loss_kw
from icl_jax.experiments.chen.common import chen_model as chen_model
from icl_jax.experiments.chen.common import chen_result as chen_result
from icl_jax.experiments.chen.common import chen_stages as chen_stages
from icl_jax.experiments.chen.common import chen_task as chen_task
from icl_jax.experiments.chen.common import plot_training as plot_training
from icl_jax.experiments.chen.common import train_chen as train_chen
from icl_jax.experiments.chen.generalization import GeneralizationConfig as GeneralizationConfig
from icl_jax.experiments.chen.generalization import run_generalization as run_generalization
from icl_jax.experiments.chen.staged import StagedConfig as StagedConfig
from icl_jax.experiments.chen.staged import _training_data as _training_data
from icl_jax.experiments.chen.staged import theory_overlay as theory_overlay
