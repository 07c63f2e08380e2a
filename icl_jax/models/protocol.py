"""The one model protocol of icl_jax (docs/models.md#the-model-protocol).

Every model is a frozen, validated config (hashable, so it can be a static argument) with

* ``init(key) -> params`` — a plain dict whose top-level keys are the engine's stage
  groups; the key is always accepted, deterministic inits ignore it;
* ``apply(params, tokens_BxT) -> [B, S]`` — the model's next-token output at the query
  (logits or probabilities: each model's ``output`` attribute says which);
* ``per_example_loss(params, batch, *, labels=...) -> [B]`` and
  ``loss(params, batch, **kw) -> scalar``, the batch mean (what the engine trains).

``labels`` is ``"soft"`` or ``"hard"`` everywhere (:data:`icl_jax.losses.LABELS`); models
whose output can put zero mass on a token take ``eps`` (default
:data:`icl_jax.losses.DEFAULT_EPS`).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

__all__ = ["Model", "MeanLoss"]


@runtime_checkable
class Model(Protocol):
    """Structural type of every icl_jax model (see the module docstring)."""

    output: Literal["logits", "probs"]

    def init(self, key: jax.Array) -> dict: ...

    def apply(self, params: dict, tokens_BxT: jax.Array) -> jax.Array: ...

    def per_example_loss(self, params: dict, batch: Any, **kw) -> jax.Array: ...

    def loss(self, params: dict, batch: Any, **kw) -> jax.Array: ...


class MeanLoss:
    """Mixin: ``loss`` is the batch mean of ``per_example_loss`` (same keyword options)."""

    def loss(self, params: dict, batch: Any, **kw) -> jax.Array:
        """Batch mean of :meth:`per_example_loss` (the scalar the engine differentiates)."""
        return jnp.mean(self.per_example_loss(params, batch, **kw))
