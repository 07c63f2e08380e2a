"""Token validation at the model boundary (docs/models.md#the-model-protocol).

Every model's ``apply`` passes its tokens through :func:`check_tokens`: integer ids in
[0, S−1], shape ``[B, T]``. Out-of-range ids are not an indexing error in JAX (a gather
clamps or fills), so without this check a token ≥ S gives NaN logits and a token −1
finite garbage.

The dtype and shape are static and always checked. The *range* needs the values:

* concrete tokens (numpy or a committed ``jax.Array``, the usual eager call): checked at
  once, ``ValueError`` naming the argument, the offending min/max and the valid range;
* traced tokens (inside ``jit``, ``vmap``, ``scan``, the engine): no eager check is
  possible. The range is then a ``checkify.debug_check``: a no-op dropped by the compiler
  (no cost, no error) unless the caller wraps the function with :func:`checked` (or with
  ``checkify.checkify(..., errors=checkify.user_checks)`` themselves), which reports an
  out-of-range token as an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = ["check_tokens", "checked"]

_TRACED = ("checkify", "skip")


def check_tokens(
    tokens_BxT,
    vocab_size: int,
    *,
    name: str = "tokens_BxT",
    seq_len: int | None = None,
    traced: Literal["checkify", "skip"] = "checkify",
):
    """Validate token ids ``[B, T]`` against a vocabulary of size S; returns them as an array.

    Args:
      tokens_BxT: integer token ids (any integer dtype; a nested list is converted).
      vocab_size: S; valid ids are 0..S−1.
      name: the argument name used in error messages.
      seq_len: the required T (None: any T >= 1).
      traced: what to do when the tokens are a tracer (inside ``jit`` / ``vmap``):
        ``"checkify"`` (default) adds a ``checkify.debug_check`` of the range, a no-op
        unless the caller is wrapped by :func:`checked` / ``checkify.checkify`` with
        user checks; ``"skip"`` adds nothing.

    Raises:
      ValueError: non-integer dtype, not 2-D, T != ``seq_len`` (or T = 0), or (concrete
        tokens only) an id outside [0, S−1].
    """
    if traced not in _TRACED:
        raise ValueError(f"traced must be one of {_TRACED} (got {traced!r})")
    if not hasattr(tokens_BxT, "dtype"):
        tokens_BxT = np.asarray(tokens_BxT)
    s = int(vocab_size)
    if not jnp.issubdtype(tokens_BxT.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer token ids in [0, {s - 1}]; got dtype {tokens_BxT.dtype}")
    want_t = "T" if seq_len is None else str(int(seq_len))
    if tokens_BxT.ndim != 2 or tokens_BxT.shape[1] < 1 or (seq_len is not None and tokens_BxT.shape[1] != seq_len):
        raise ValueError(f"{name} must have shape [B, {want_t}] (T >= 1); got shape {tuple(tokens_BxT.shape)}")
    if isinstance(tokens_BxT, jax.core.Tracer):
        if traced == "checkify":
            checkify.debug_check(
                jnp.all((tokens_BxT >= 0) & (tokens_BxT < s)),
                f"{name} must be integer token ids in [0, {s - 1}]; got values in [{{lo}}, {{hi}}]",
                lo=jnp.min(tokens_BxT),
                hi=jnp.max(tokens_BxT),
            )
        return tokens_BxT
    if tokens_BxT.size:
        values = np.asarray(tokens_BxT)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= s:
            raise ValueError(f"{name} must be integer token ids in [0, {s - 1}]; got values in [{lo}, {hi}]")
    return tokens_BxT


def checked(fn: Callable) -> Callable:
    """``fn`` with the traced checks switched on: ``checkify.checkify(fn, errors=user_checks)``
    and the error thrown (a ``ValueError`` subclass) after the call.

    Use it around jitted model code to range-check traced tokens, e.g.
    ``checked(jax.jit(model.apply))(params, tokens_BxT)``. The wrapper itself is not
    traceable (it raises on the host); the checks cost a reduction over the tokens.
    """
    checked_fn = checkify.checkify(fn, errors=checkify.user_checks)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        err, out = checked_fn(*args, **kwargs)
        err.throw()
        return out

    return wrapper
