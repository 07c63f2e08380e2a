"""Interleaved lags, "selective induction": D'Angelo, Croce & Flammarion 2025
(docs/peer-tasks.md#interleaved-lags). The data definition is from the project's spec, marked
there as an unverified recollection of the paper.

Every sequence draws a lag ℓ uniformly from ``lags`` and (``kernel="per_sequence"``, the
default and the spec's reading) a kernel P with rows i.i.d. Dirichlet(α), then

    x_i ~ P(· | x_{i−ℓ})  for i >= ℓ,

and the first ℓ tokens i.i.d. from P's stationary law (``init="stationary"``) or uniformly
(``"uniform"``). The model must infer ℓ in context and copy with that lag. With
``kernel="fixed"`` (the paper's abstract: the lag varies "while keeping the transition
probabilities fixed") every sequence shares one kernel P, drawn once from ``kernel_seed``
(:meth:`LagMixtureTask.fixed_kernel`); the lag is still drawn per sequence.

Bayes (:meth:`LagMixtureTask.bayes`), the prior over ℓ uniform, the prediction of x_{t+1}

    Σ_ℓ P(ℓ | x_0..x_t) · p_ℓ(x_{t+1} | x_0..x_t),    P(ℓ | x_0..x_t) ∝ Π_{i=1..t} p_ℓ(x_i | x_<i),

with the lag-ℓ sequential predictives p_ℓ of :meth:`LagMixtureTask.lag_predictives`:

- ``"per_sequence"``: the Dirichlet-multinomial posterior predictive of the lag-ℓ transitions
  (:func:`~icl_jax.tasks.strategies.lag_strategy` with β = α), uniform before position ℓ, so the
  likelihood is (1/k)^ℓ times the Dirichlet-multinomial likelihood of the transitions
  x_{i−ℓ} → x_i. Exact for ``init="uniform"``; for ``"stationary"`` the first tokens also carry
  (a little) information about P, which it ignores.
- ``"fixed"`` (P known): p_ℓ(· | x_0..x_t) = P[x_{t+1−ℓ}] where t + 1 >= ℓ, the initial law
  (P's stationary law or uniform) before; the likelihood is exactly the sampling law,
  Π_{i<ℓ} init(x_i) · Π_{i>=ℓ} P(x_i | x_{i−ℓ}). Exact for both inits.

x_0 is drawn from the initial law under every lag, so its factor cancels from the posterior.
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

__all__ = ["LagMixtureTask", "KERNELS", "MAX_KERNEL_SEED"]

#: how P is drawn: one per sequence (the spec's reading) or one shared by every sequence
KERNELS = ("per_sequence", "fixed")
#: the largest ``kernel_seed``: ``jax.random.key`` keeps 32 bits of its seed without x64, so
#: larger seeds would silently repeat smaller ones' kernels
MAX_KERNEL_SEED = 2**32 - 1


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
      kernel: ``"per_sequence"`` (default: P drawn with every sequence) or ``"fixed"`` (one P,
        :meth:`fixed_kernel`, shared by every sequence) (static).
      kernel_seed: the seed of the fixed P, an integer in [0, 2**32 − 1]; ignored with
        ``kernel="per_sequence"`` (static).
    """

    vocab_size: int = dataclasses.field(metadata=dict(static=True))
    seq_len: int = dataclasses.field(metadata=dict(static=True))
    lags: tuple[int, ...] = dataclasses.field(default=(1, 2, 3), metadata=dict(static=True))
    init: Literal["stationary", "uniform"] = dataclasses.field(default="stationary", metadata=dict(static=True))
    alpha: float = 1.0
    kernel: Literal["per_sequence", "fixed"] = dataclasses.field(default="per_sequence", metadata=dict(static=True))
    kernel_seed: int = dataclasses.field(default=0, metadata=dict(static=True))

    def __post_init__(self):
        _check_vocab(self.vocab_size)
        _check_alpha_value(self.alpha)
        _check_choice("init", self.init, ("stationary", "uniform"))
        _check_choice("kernel", self.kernel, KERNELS)
        seed = self.kernel_seed
        if (not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_))
                or not 0 <= seed <= MAX_KERNEL_SEED):
            raise ValueError(f"kernel_seed must be an integer in [0, 2**32 − 1] (got {seed!r})")
        object.__setattr__(self, "kernel_seed", int(seed))
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

    def fixed_kernel(self) -> jax.Array:
        """The kernel P shared by every sequence when ``kernel="fixed"``, ``[k, k]`` (row a:
        P(· | a)): its k rows are i.i.d. Dirichlet(α·1_k),

            P = sample_dirichlet(jax.random.key(kernel_seed), alpha, (k,), k),

        i.e. normalised Gamma(α) draws from that key (:func:`~icl_jax.tasks.priors.sample_dirichlet`).
        It depends on ``kernel_seed`` and α only, never on a sampling key. Raises ``ValueError``
        with ``kernel="per_sequence"`` (there is no shared kernel)."""
        if self.kernel != "fixed":
            raise ValueError(f"fixed_kernel: this task draws P per sequence (kernel={self.kernel!r}); "
                             "use kernel='fixed'")
        k = self.vocab_size
        return sample_dirichlet(jax.random.key(self.kernel_seed), self.alpha, (k,), k)

    def initial_law(self, p_KxK: jax.Array) -> jax.Array:
        """The law of the first ℓ tokens given P ``[..., k, k]``: P's stationary law
        (``init="stationary"``) or uniform, ``[..., k]``."""
        if self.init == "stationary":
            return stationary_distribution(p_KxK)
        return jnp.full(p_KxK.shape[:-1], 1.0 / p_KxK.shape[-1], p_KxK.dtype)

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        """``{"P": [B, k, k], "lag_index": [B]}``: P drawn per sequence from one half of ``key``
        (or :meth:`fixed_kernel`, broadcast, with ``kernel="fixed"``), the lag indices uniform
        from the other half (the same lags for the same key under either kernel)."""
        k_pi, k_lag = jax.random.split(key)
        k = self.vocab_size
        if self.kernel == "fixed":
            pi = jnp.broadcast_to(self.fixed_kernel(), (batch_size, k, k))
        else:
            pi = sample_dirichlet(k_pi, self.alpha, (batch_size, k), k)
        return {"P": pi, "lag_index": jax.random.randint(k_lag, (batch_size,), 0, len(self.lags))}

    def row_table(self, kernels: dict) -> jax.Array:
        pi = kernels["P"]
        return jnp.concatenate([pi, self.initial_law(pi)[:, None, :]], axis=1)

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

    def lag_predictives(self, tokens_BxT: jax.Array, lags: tuple[int, ...] | None = None) -> jax.Array:
        """Each lag's sequential predictive of x_{t+1} given x_0..x_t at every position t,
        ``[B, T, len(lags), k]`` (``lags`` defaults to the task's; any lags >= 1 may be asked for):

        - ``kernel="per_sequence"``: :func:`~icl_jax.tasks.strategies.lag_strategy` with β = α,
          the Dirichlet(α) posterior predictive of the lag-ℓ transitions seen so far (uniform
          where t + 1 < ℓ);
        - ``kernel="fixed"``: the known kernel's row P[x_{t+1−ℓ}] where t + 1 >= ℓ, and the
          initial law (:meth:`initial_law` of P) where t + 1 < ℓ.
        """
        tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
        lags = self.lags if lags is None else tuple(lags)
        k, t = self.vocab_size, tokens_BxT.shape[1]
        if self.kernel == "per_sequence":
            return jnp.stack([lag_strategy(tokens_BxT, k, lag, self.alpha) for lag in lags], axis=-2)
        for lag in lags:
            if not isinstance(lag, (int, np.integer)) or isinstance(lag, bool) or lag < 1:
                raise ValueError(f"lags must be integers >= 1 (got {lags!r})")
        pi_KxK = self.fixed_kernel()
        first_K = self.initial_law(pi_KxK)
        preds = []
        for lag in lags:
            ctx_BxT = jnp.pad(tokens_BxT, ((0, 0), (lag - 1, 0)))[:, :t]  # x_{t+1−ℓ} (0-padded where t + 1 < ℓ)
            known_T = (jnp.arange(t) >= lag - 1)[None, :, None]
            preds.append(jnp.where(known_T, pi_KxK[ctx_BxT], first_K))
        return jnp.stack(preds, axis=-2)

    def lag_posterior(self, tokens_BxT: jax.Array) -> jax.Array:
        """P(ℓ | x_0..x_t) for every position t: ``[B, T, len(lags)]``, the uniform prior times
        Π_{i=1..t} p_ℓ(x_i | x_<i) with p_ℓ from :meth:`lag_predictives` (module docstring; x_0's
        factor is the same under every lag and left out)."""
        tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
        pred_BxTxLxK = self.lag_predictives(tokens_BxT)  # row t predicts x_{t+1}
        # log p_ℓ(x_i | x_<i) for i >= 1; x_0 has the same law under every lag
        step = jnp.log(jnp.take_along_axis(pred_BxTxLxK[:, :-1], tokens_BxT[:, 1:, None, None], axis=-1)[..., 0])
        logp = jnp.concatenate([jnp.zeros_like(step[:, :1]), jnp.cumsum(step, axis=1)], axis=1)
        return jax.nn.softmax(logp, axis=-1)

    def bayes(self, tokens_BxT: jax.Array) -> jax.Array:
        """The posterior predictive of x_{t+1} at every position, ``[B, T, k]``: Σ_ℓ
        P(ℓ | x_0..x_t) p_ℓ(· | x_0..x_t) (module docstring; exact with ``kernel="fixed"``)."""
        post = self.lag_posterior(tokens_BxT)
        preds = self.lag_predictives(tokens_BxT)
        return jnp.sum(post[..., None] * preds, axis=-2)
