r"""The reduced two-layer model of Nichani et al.'s theory (Nichani et al.;
docs/models.md#reduced-model).

Trainable A1 ∈ R^{T×T} (positional attention only) and A2 ∈ R^{S×S}:

* layer 1: s¹_ij = softmax_{j≤i}(A1_ij), v_j = Σ_{k≤j} s¹_jk e_{x_k} (the soft parent token);
* layer 2: σ_j = softmax_{j≤T}(e_{x_T}ᵀ A2 v_j) (the query is position T, all j attend);
* output:  f_θ(X) = Σ_j σ_j e_{x_j} ∈ Δ^S (a mixture of the context tokens, no readout).

The loss is −Σ_b Y_b log(f_b + ε) with the library's floor ε (f_b = 0 whenever b never
occurs in the context, so ε = 0 can give +∞ at small T). Parameters
``{"A1": [T, T], "A2": [S, S]}``; the top-level keys are the engine's stage groups
(Algorithm 1 trains A1, then A2), and the theory differentiates ``params["A1"]`` directly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from icl_jax.losses import DEFAULT_EPS, cross_entropy_probs, targets
from icl_jax.models.protocol import MeanLoss
from icl_jax.models.tokens import check_tokens

__all__ = ["ReducedModel", "reduced_layer1_attention", "reduced_probs"]


@dataclasses.dataclass(frozen=True)
class ReducedModel(MeanLoss):
    """The (A1, A2) model, following the model protocol.

    Attributes:
      vocab_size: S >= 2.
      seq_len: T >= 2.
      beta0: the initial A2 = β0·I_S (Algorithm 1; docs/nichani-theory.md#staged-training-algorithm-1).

    ``apply`` returns **probabilities** ``[B, S]`` (a mixture of the context tokens).
    Tokens must be integer ids in [0, S−1] of shape ``[B, T]``: checked eagerly when concrete
    (``ValueError``); inside ``jit`` the range check is skipped unless the call is wrapped by
    :func:`icl_jax.models.checked` (see :mod:`icl_jax.models.tokens`).
    """

    vocab_size: int
    seq_len: int
    beta0: float = 1.0

    output = "probs"

    def __post_init__(self):
        for name in ("vocab_size", "seq_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 2:
                raise ValueError(f"{name} must be an integer >= 2 (got {v!r})")

    def init(self, key: jax.Array | None = None, beta0=None, dtype=jnp.float32) -> dict:
        """A1 = 0, A2 = β0·I_S (deterministic: ``key`` is accepted and ignored). ``beta0``
        overrides the config's and may be a traced scalar."""
        beta0 = self.beta0 if beta0 is None else beta0
        return {
            "A1": jnp.zeros((self.seq_len, self.seq_len), dtype),
            "A2": beta0 * jnp.eye(self.vocab_size, dtype=dtype),
        }

    def apply(self, params: dict, tokens_BxT: jax.Array) -> jax.Array:
        """f_θ(X) = Σ_j σ_j e_{x_j}, ``[B, S]``."""
        t, s = self.seq_len, self.vocab_size
        if params["A1"].shape != (t, t) or params["A2"].shape != (s, s):
            raise ValueError(f"params: A1 must be [{t}, {t}] and A2 [{s}, {s}] for this model (got {params['A1'].shape}, {params['A2'].shape})")
        return reduced_probs(params, tokens_BxT)

    def per_example_loss(self, params: dict, batch, *, labels: str = "soft", eps=DEFAULT_EPS) -> jax.Array:
        """−Σ_b Y_b log(f_b + ε), ``[B]``: Y the true law (``labels="soft"``, the official
        target) or the one-hot sampled label (``"hard"``, the paper's); ε = 0 is unfloored."""
        probs = self.apply(params, batch.tokens_BxT)
        return cross_entropy_probs(probs, targets(batch, labels, probs.shape[-1], probs.dtype), eps=eps)

    def layer1_attention(self, params: dict) -> jax.Array:
        """s¹ ``[T, T]`` (see :func:`reduced_layer1_attention`)."""
        return reduced_layer1_attention(params)


def reduced_layer1_attention(params: dict) -> jax.Array:
    """s¹ = causally masked row softmax of A1 ([T, T]; row i over keys j ≤ i)."""
    a1 = params["A1"]
    t = a1.shape[0]
    mask = jnp.tril(jnp.ones((t, t), bool))
    return jax.nn.softmax(jnp.where(mask, a1, -jnp.inf), axis=-1)


def reduced_probs(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """f_θ(X) = Σ_j σ_j e_{x_j}, shape [B, S] (config-free: shapes come from A1, A2; tokens
    are validated by :func:`~icl_jax.models.tokens.check_tokens`)."""
    a1, a2 = params["A1"], params["A2"]
    t, s = a1.shape[0], a2.shape[0]
    if a1.shape != (t, t) or a2.shape != (s, s):
        raise ValueError(f"A1 must be [T, T] and A2 [S, S] (got {a1.shape}, {a2.shape})")
    tokens_BxT = check_tokens(tokens_BxT, s, seq_len=t)
    x_BxTxS = jax.nn.one_hot(tokens_BxT, s, dtype=a1.dtype)
    v_BxTxS = jnp.einsum("jk,bks->bjs", reduced_layer1_attention(params), x_BxTxS)
    score_BxT = jnp.einsum("bs,st,bjt->bj", x_BxTxS[:, -1], a2, v_BxTxS)
    return jnp.einsum("bj,bjs->bs", jax.nn.softmax(score_BxT, axis=-1), x_BxTxS)
