"""Interleaved lags, "selective induction": D'Angelo, Croce & Flammarion 2025
(docs/peer-tasks.md#interleaved-lags). The data definition is from the project's spec, marked
there as an unverified recollection of the paper.

Every sequence draws a lag ℓ uniformly from ``lags`` and a kernel P with rows i.i.d.
Dirichlet(α), then

    x_i ~ P(· | x_{i−ℓ})  for i >= ℓ,

and the first ℓ tokens from P's stationary law (``init="stationary"``) or uniformly
(``"uniform"``). The model must infer ℓ in context and copy with that lag.

Bayes (:meth:`LagMixtureTask.bayes`): the posterior of ℓ given x_0..x_t is proportional to the
prior times the marginal likelihood under ℓ, i.e. (1/k)^ℓ for the first ℓ tokens times the
Dirichlet-multinomial likelihood of the transitions x_{i−ℓ} → x_i; the prediction mixes the
lags' posterior predictives (:func:`~icl_jax.tasks.strategies.lag_strategy` with β = α). It is
exact for ``init="uniform"``; for ``"stationary"`` the first tokens also carry (a little)
information about P, which it ignores.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.priors import _check_alpha_value, sample_dirichlet, stationary_distribution
from icl_jax.tasks.sampling import Batch, SamplingPlan, SequenceBatch, node_rows, sample_tokens
from icl_jax.tasks.strategies import lag_strategy
from icl_jax.tasks.tasks import _check_choice, _check_seq_len, _check_vocab, _TaskBase

__all__ = ["LagMixtureTask"]


@functools.lru_cache(maxsize=None)
def _lag_plan(lag: int, seq_len: int, k: int) -> SamplingPlan:
    # rows 0..k−1: P; row k: the initial law (stationary or uniform)
    return SamplingPlan.build([(k, (), ()) if i < lag else (0, (i - lag,), (1,)) for i in range(seq_len + 1)],
                              num_rows=k + 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LagMixtureTask(_TaskBase):
    """Sequences with a lag chosen per sequence (see the module docstring).

    Attributes:
      vocab_size: k >= 2 (static).
      seq_len: T input tokens, > max(lags) (static).
      lags: distinct lags >= 1 (static), e.g. (1, 2, 3).
      init: ``"stationary"`` (the spec's) or ``"uniform"`` first ℓ tokens (static).
      alpha: Dirichlet concentration of P's rows (leaf; may be vmapped).
    """

    vocab_size: int = dataclasses.field(metadata=dict(static=True))
    seq_len: int = dataclasses.field(metadata=dict(static=True))
    lags: tuple[int, ...] = dataclasses.field(default=(1, 2, 3), metadata=dict(static=True))
    init: Literal["stationary", "uniform"] = dataclasses.field(default="stationary", metadata=dict(static=True))
    alpha: float = 1.0

    def __post_init__(self):
        _check_vocab(self.vocab_size)
        _check_alpha_value(self.alpha)
        _check_choice("init", self.init, ("stationary", "uniform"))
        lags = self.lags
        if (not isinstance(lags, (tuple, list)) or not lags
                or any(not isinstance(x, (int, np.integer)) or isinstance(x, bool) or x < 1 for x in lags)
                or len(set(lags)) != len(lags)):
            raise ValueError(f"lags must be a non-empty tuple of distinct integers >= 1 (got {lags!r})")
        object.__setattr__(self, "lags", tuple(int(x) for x in lags))
        _check_seq_len(self.seq_len, 1)
        if self.seq_len <= max(self.lags):
            raise ValueError(f"seq_len must be > max(lags) = {max(self.lags)} (got {self.seq_len})")

    @property
    def plan(self) -> SamplingPlan:
        """The layout (number of nodes and table rows) shared by every lag's plan; its parents
        are those of ``lags[0]``: the sampling methods below use each sequence's own lag."""
        return _lag_plan(self.lags[0], self.seq_len, self.vocab_size)

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        k_pi, k_lag = jax.random.split(key)
        k = self.vocab_size
        return {"P": sample_dirichlet(k_pi, self.alpha, (batch_size, k), k),
                "lag_index": jax.random.randint(k_lag, (batch_size,), 0, len(self.lags))}

    def row_table(self, kernels: dict) -> jax.Array:
        pi = kernels["P"]
        first = stationary_distribution(pi) if self.init == "stationary" else jnp.full(pi.shape[:-1], 1.0 / pi.shape[-1])
        return jnp.concatenate([pi, first[:, None, :]], axis=1)

    def _all_lags(self, key, kernels):
        """Tokens and node rows under every lag (the same uniforms), selected per sequence."""
        rows = self.row_table(kernels)
        tokens, laws = [], []
        for lag in self.lags:
            plan = _lag_plan(lag, self.seq_len, self.vocab_size)
            x = sample_tokens(key, rows, plan)
            tokens.append(x)
            laws.append(node_rows(x, rows, plan))
        pick = kernels["lag_index"]
        tok = jnp.take_along_axis(jnp.stack(tokens, 1), pick[:, None, None], axis=1)[:, 0]
        law = jnp.take_along_axis(jnp.stack(laws, 1), pick[:, None, None, None], axis=1)[:, 0]
        return tok, law

    def sample_with_kernels(self, key: jax.Array, kernels: dict) -> Batch:
        tokens, law = self._all_lags(key, kernels)
        return Batch(tokens_BxT=tokens[:, :-1], label_probs_BxS=law[:, -1], label_B=tokens[:, -1])

    def sequences_with_kernels(self, key: jax.Array, kernels: dict) -> SequenceBatch:
        tokens, law = self._all_lags(key, kernels)
        return SequenceBatch(tokens[:, :-1], law[:, 1:], tokens[:, 1:])

    def lag_posterior(self, tokens_BxT: jax.Array) -> jax.Array:
        """P(ℓ | x_0..x_t) for every position t: ``[B, T, len(lags)]`` (uniform prior; the
        marginal likelihood of module docstring, built from the sequential predictives)."""
        tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
        k = self.vocab_size
        logp = []
        for lag in self.lags:
            pred = lag_strategy(tokens_BxT, k, lag, self.alpha)  # row t predicts x_{t+1}
            # log P(x_i | x_<i) for i >= 1 under ℓ (uniform for i < ℓ); x_0 has 1/k under every lag
            step = jnp.log(jnp.take_along_axis(pred[:, :-1], tokens_BxT[:, 1:, None], axis=2)[..., 0])
            logp.append(jnp.concatenate([jnp.zeros_like(step[:, :1]), jnp.cumsum(step, axis=1)], axis=1))
        return jax.nn.softmax(jnp.stack(logp, axis=-1), axis=-1)

    def bayes(self, tokens_BxT: jax.Array) -> jax.Array:
        """The posterior predictive of x_{t+1} at every position, ``[B, T, k]`` (module docstring)."""
        post = self.lag_posterior(tokens_BxT)
        preds = jnp.stack([lag_strategy(tokens_BxT, self.vocab_size, lag, self.alpha) for lag in self.lags], axis=-2)
        return jnp.sum(post[..., None] * preds, axis=-2)
