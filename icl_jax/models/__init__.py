"""Models: pure apply functions on parameter dicts (the engine's groups are their keys).

* :mod:`icl_jax.models.catformer` — Nichani's disentangled transformer (concatenated stream).
* :mod:`icl_jax.models.reduced` — the reduced (A1, A2) model of Nichani's theory.
* :mod:`icl_jax.models.mlp_transformer` — the transformer with values and MLPs (Nichani Fig. 8).
* :mod:`icl_jax.models.induction` — Chen et al.'s copier / selector / classifier (and the
  Appendix-B full model).

The public surface is what this file lists.
"""

from icl_jax.models.catformer import (
    CatFormer as CatFormer,
    catformer_attention as catformer_attention,
    catformer_embed as catformer_embed,
    catformer_heads as catformer_heads,
    catformer_init as catformer_init,
    catformer_logits as catformer_logits,
    catformer_logits_naive as catformer_logits_naive,
    catformer_reference_params as catformer_reference_params,
    catformer_stream as catformer_stream,
    layer1_positional_attention as layer1_positional_attention,
    stream_blocks as stream_blocks,
)
from icl_jax.models.induction import (
    DEFAULT_LOSS_EPS as DEFAULT_LOSS_EPS,
    InductionModel as InductionModel,
    copier_attention as copier_attention,
    copier_features as copier_features,
    copier_features_dense as copier_features_dense,
    induction_init as induction_init,
    induction_loss as induction_loss,
    induction_per_example_loss as induction_per_example_loss,
    induction_probs as induction_probs,
    selector_similarity as selector_similarity,
    subset_shares as subset_shares,
)
from icl_jax.models.mlp_transformer import (
    MLPTransformer as MLPTransformer,
    mlp_transformer_attention as mlp_transformer_attention,
    mlp_transformer_embed as mlp_transformer_embed,
    mlp_transformer_init as mlp_transformer_init,
    mlp_transformer_logits as mlp_transformer_logits,
    mlp_transformer_logits_naive as mlp_transformer_logits_naive,
    mlp_transformer_stream as mlp_transformer_stream,
)
from icl_jax.models.reduced import (
    DEFAULT_EPS as DEFAULT_EPS,
    reduced_init as reduced_init,
    reduced_layer1_attention as reduced_layer1_attention,
    reduced_loss as reduced_loss,
    reduced_probs as reduced_probs,
)
