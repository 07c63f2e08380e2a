"""The fixed binary switching chain of Makkuva et al. 2024, "Attention with Markov"
(docs/peer-tasks.md#binary-switching-chain).

One kernel for every sequence (not in-context):

    P = [[1 − p, p], [q, 1 − q]]   (P(0 → 1) = p, P(1 → 0) = q),

x_0 from the stationary law π = (q, p)/(p + q), loss at every position. Closed forms (nats,
h the binary entropy): the entropy rate H = π_0 h(p) + π_1 h(q), the loss of the true kernel;
and h(π_1), the loss of the stationary unigram predictor, where a one-layer transformer often
stays when p + q > 1.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.sampling import SamplingPlan
from icl_jax.tasks.tasks import _check_seq_len, _TaskBase

__all__ = ["SwitchingChainTask", "binary_entropy"]


def binary_entropy(p):
    """h(p) = −p ln p − (1 − p) ln(1 − p) in nats (0 at p ∈ {0, 1})."""
    p = jnp.asarray(p, jnp.float32)
    return -(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
             + jnp.where(p < 1, (1 - p) * jnp.log(jnp.where(p < 1, 1 - p, 1.0)), 0.0))


@functools.lru_cache(maxsize=None)
def _switching_plan(seq_len: int) -> SamplingPlan:
    # rows: 0, 1 = P(·|0), P(·|1); 2 = π
    return SamplingPlan.build([(2, (), ())] + [(0, (i - 1,), (1,)) for i in range(1, seq_len + 1)], num_rows=3)


def _check_probability(name: str, value) -> None:
    if isinstance(value, (str, bytes, bool, list, tuple, type(None))):
        raise ValueError(f"{name} must be a switching probability in (0, 1] (got {value!r})")
    try:
        v = np.asarray(value, np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        return  # traced, or a placeholder leaf while JAX rebuilds the task (as for alpha)
    if not np.all(np.isfinite(v) & (v > 0.0) & (v <= 1.0)):  # a stacked sweep is checked entrywise
        raise ValueError(f"{name} must be a switching probability in (0, 1] (got {value!r})")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SwitchingChainTask(_TaskBase):
    """Makkuva et al.'s binary chain: inputs x_0..x_{T−1}, target x_T (:meth:`sample`), or
    targets at every position (:meth:`sample_sequences`).

    Attributes:
      seq_len: T >= 1 input tokens (static).
      p: P(0 → 1) in (0, 1] (pytree leaf: may be vmapped or stacked; concrete values are validated).
      q: P(1 → 0) in (0, 1] (leaf).
    """

    seq_len: int = dataclasses.field(metadata=dict(static=True))
    p: float = 0.2
    q: float = 0.3

    vocab_size = 2

    def __post_init__(self):
        _check_seq_len(self.seq_len, 1)
        _check_probability("p", self.p)
        _check_probability("q", self.q)

    @property
    def plan(self) -> SamplingPlan:
        return _switching_plan(self.seq_len)

    def kernel(self) -> jax.Array:
        """P as a ``[2, 2]`` array."""
        p, q = jnp.asarray(self.p, jnp.float32), jnp.asarray(self.q, jnp.float32)
        return jnp.stack([jnp.stack([1 - p, p]), jnp.stack([q, 1 - q])])

    def stationary(self) -> jax.Array:
        """π = (q, p)/(p + q)."""
        p, q = jnp.asarray(self.p, jnp.float32), jnp.asarray(self.q, jnp.float32)
        return jnp.stack([q, p]) / (p + q)

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        del key  # one global kernel
        return {"P": jnp.broadcast_to(self.kernel(), (batch_size, 2, 2))}

    def row_table(self, kernels: dict) -> jax.Array:
        kernel = kernels["P"]
        pi = jnp.broadcast_to(self.stationary(), (kernel.shape[0], 1, 2))
        return jnp.concatenate([kernel, pi], axis=1)

    def entropy_rate(self) -> jax.Array:
        """H = π_0 h(p) + π_1 h(q): the expected loss of the true kernel at every position."""
        pi = self.stationary()
        return pi[0] * binary_entropy(self.p) + pi[1] * binary_entropy(self.q)

    def unigram_loss(self) -> jax.Array:
        """h(π_1): the loss of the stationary unigram predictor (every position's marginal is π)."""
        return binary_entropy(self.stationary()[1])

    def predictors(self, tokens_BxT: jax.Array) -> dict:
        """The baselines at every position, ``{name: [B, T, 2]}``: ``"kernel"`` (P(·|x_t), Bayes:
        the kernel is known) and ``"unigram"`` (π)."""
        tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
        kernel = self.kernel()[tokens_BxT]
        return {"kernel": kernel, "unigram": jnp.broadcast_to(self.stationary(), kernel.shape)}
