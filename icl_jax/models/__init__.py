"""Models, all following one protocol (:mod:`icl_jax.models.protocol`): a frozen config with
``init(key)``, ``apply(params, tokens_BxT)`` and ``loss(params, batch, ...)``.

* :class:`CatFormer` — Nichani's disentangled transformer (concatenated stream).
* :class:`ReducedModel` — the reduced (A1, A2) model of Nichani's theory.
* :class:`Transformer` — a Flax NNX decoder-only transformer; :func:`fig8_transformer` is
  Nichani's Fig. 8 model with values and MLPs as one configuration of it.
* :class:`InductionModel` — Chen et al.'s copier / selector / classifier (and the
  Appendix-B full model).

Every ``apply`` validates its tokens (:func:`~icl_jax.models.tokens.check_tokens`: integer ids
in [0, S−1], shape [B, T]); inside ``jit`` the range part runs only under :func:`checked`.

Naive reference forwards (tests and benchmarks) live in :mod:`icl_jax.models.reference` and
are not re-exported here. The public surface is what this file lists.
"""

from icl_jax.models.catformer import (
    CatFormer as CatFormer,
    layer1_positional_attention as layer1_positional_attention,
    stream_blocks as stream_blocks,
)
from icl_jax.models.induction import InductionModel as InductionModel
from icl_jax.models.induction_layers import (
    copier_attention as copier_attention,
    copier_features as copier_features,
    selector_similarity as selector_similarity,
    subset_shares as subset_shares,
)
from icl_jax.models.induction_stats import WindowStats as WindowStats
from icl_jax.models.protocol import Model as Model
from icl_jax.models.reduced import ReducedModel as ReducedModel
from icl_jax.models.tokens import check_tokens as check_tokens, checked as checked
from icl_jax.models.transformer import Transformer as Transformer, fig8_transformer as fig8_transformer
