"""Nichani, Damian & Lee (2024) experiments (docs/nichani-theory.md#official-recipes): every
official recipe, the paper's staged Algorithm 1, and new figures.

Registered: ``nichani-staged``, ``nichani-fig2-chain``, ``nichani-fig2-icl``,
``nichani-fig2-random``, ``nichani-fig5-multiparent``, ``nichani-fig8-mlp``,
``nichani-fig9-many-graphs``. Each runs all its seeds (and, for Fig. 9, all its graphs) in one
vmapped engine call, writes the engine's run folder (``DIR/run``: checkpoints; an interrupted
run continues with ``icl-jax run NAME --out DIR --resume`` or ``icl-jax resume DIR``),
``metrics.json`` and figures named ``<experiment>_<kind>.png``.

Each experiment's configuration is a typed, frozen dataclass (``SingleParentConfig``,
``MultiParentConfig``, ``MLPConfig``, ``ManyGraphsConfig``, ``StagedConfig``; see
``docs/experiments.md#configs``) validated before anything is compiled or written, with two
presets: ``official`` (the paper's recipe, GPU-sized; docs/nichani-theory.md#official-recipes)
and ``quick`` (``--quick``: fewer steps, smaller batches and, where needed, a higher learning
rate, so the same mechanism appears in about a minute of CPU; the values are in each module's
``QUICK``). ``icl-jax run NAME --show-config`` lists every field with its meaning and bounds.

One module per figure family:

* :mod:`~icl_jax.experiments.nichani.common`: test set and loss, baselines, the sweep, summaries.
* :mod:`~icl_jax.experiments.nichani.single_parent`: Figs 2 / 6 (chain, icl, random trees).
* :mod:`~icl_jax.experiments.nichani.multi_parent`: Figs 5 / 7 (multi-parent DAG).
* :mod:`~icl_jax.experiments.nichani.many_graphs`: Fig. 9 (many random graphs).
* :mod:`~icl_jax.experiments.nichani.staged`: Algorithm 1, gradient flow, OOD priors
  (``docs/nichani-theory.md#staged-training-algorithm-1``).
* :mod:`~icl_jax.experiments.nichani.mlp`: Fig. 8 (transformer with MLPs,
  ``docs/models.md#fig-8-transformer-with-mlps``).

Importing this package registers every experiment above.
"""

from icl_jax.experiments.nichani import single_parent as single_parent  # registers nichani-fig2-*
from icl_jax.experiments.nichani import multi_parent as multi_parent  # registers nichani-fig5-multiparent
from icl_jax.experiments.nichani import many_graphs as many_graphs  # registers nichani-fig9-many-graphs
from icl_jax.experiments.nichani import staged as staged  # registers nichani-staged
from icl_jax.experiments.nichani import mlp as mlp  # registers nichani-fig8-mlp
from icl_jax.experiments.nichani.common import _baselines as _baselines
from icl_jax.experiments.nichani.common import _test_loss_fn as _test_loss_fn
from icl_jax.experiments.nichani.many_graphs import run_fig9 as run_fig9
from icl_jax.experiments.nichani.mlp import run_mlp as run_mlp
from icl_jax.experiments.nichani.multi_parent import run_multiparent as run_multiparent
from icl_jax.experiments.nichani.staged import run_staged as run_staged
