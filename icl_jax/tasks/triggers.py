"""Trigger tokens on a global bigram: Bietti et al. 2023, "Birth of a Transformer: A Memory
Viewpoint" (docs/peer-tasks.md#trigger-tokens).

A fixed global bigram π_b over N tokens and K trigger tokens q_1..q_K. Every sequence draws
one output token o_k per trigger, then

    z_0 ~ π_u,   z_{t+1} = o_k if z_t = q_k,   else z_{t+1} ~ π_b(· | z_t),

with π_u the stationary law of π_b. After a trigger's first occurrence its successor is
determined in context: predicting it is the induction part; the rest is the global bigram.

Differences from the paper (documented choices): π_b is a random Dirichlet(``bigram_alpha``)
bigram drawn from ``bigram_seed`` (the paper estimates it from a character corpus; nothing is
downloaded here); the triggers are the K most probable tokens under π_u (the paper's "most
frequent"); the outputs are drawn independently, uniformly from the non-trigger tokens
(``outputs="uniform"``) or from π_u restricted to them (``"unigram"``), so an output is never
itself a trigger.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.priors import _check_alpha_value, sample_dirichlet, stationary_distribution
from icl_jax.tasks.sampling import SamplingPlan
from icl_jax.tasks.tasks import _check_choice, _check_seq_len, _check_vocab, _TaskBase

__all__ = ["TriggerTask"]


@functools.lru_cache(maxsize=None)
def _global_bigram(n: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """π_b [N, N] and its stationary law π_u [N] (float64 numpy, read-only). Evaluated eagerly
    even when first needed inside a trace: it is a constant of the task."""
    with jax.ensure_compile_time_eval():
        pi_b = np.asarray(sample_dirichlet(jax.random.key(seed), alpha, (n,), n, dtype=jnp.float32), np.float64)
        pi_b /= pi_b.sum(-1, keepdims=True)
        pi_u = np.asarray(stationary_distribution(jnp.asarray(pi_b, jnp.float32)), np.float64)
    pi_u /= pi_u.sum()
    for a in (pi_b, pi_u):
        a.setflags(write=False)
    return pi_b, pi_u


@functools.lru_cache(maxsize=None)
def _trigger_plan(n: int, seq_len: int) -> SamplingPlan:
    # rows 0..N−1: the per-sequence bigram (trigger rows one-hot); row N: π_u
    return SamplingPlan.build([(n, (), ())] + [(0, (i - 1,), (1,)) for i in range(1, seq_len + 1)], num_rows=n + 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TriggerTask(_TaskBase):
    """Bietti et al.'s trigger task (see the module docstring). Everything is static.

    Attributes:
      vocab_size: N >= 3.
      seq_len: T >= 1 input tokens.
      num_triggers: K in [1, N − 1].
      bigram_alpha: Dirichlet concentration of π_b's rows (> 0).
      bigram_seed: seed of π_b (one fixed global bigram per seed).
      outputs: ``"uniform"`` or ``"unigram"`` law of the output tokens over the non-triggers.
    """

    vocab_size: int = dataclasses.field(default=65, metadata=dict(static=True))
    seq_len: int = dataclasses.field(default=256, metadata=dict(static=True))
    num_triggers: int = dataclasses.field(default=5, metadata=dict(static=True))
    bigram_alpha: float = dataclasses.field(default=0.3, metadata=dict(static=True))
    bigram_seed: int = dataclasses.field(default=0, metadata=dict(static=True))
    outputs: Literal["uniform", "unigram"] = dataclasses.field(default="uniform", metadata=dict(static=True))

    def __post_init__(self):
        _check_vocab(self.vocab_size)
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (a trigger and two other tokens; got {self.vocab_size})")
        _check_seq_len(self.seq_len, 1)
        k = self.num_triggers
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= self.vocab_size - 1:
            raise ValueError(f"num_triggers must be an integer in [1, vocab_size − 1 = {self.vocab_size - 1}] (got {k!r})")
        _check_alpha_value(self.bigram_alpha)
        if not isinstance(self.bigram_seed, (int, np.integer)) or isinstance(self.bigram_seed, bool):
            raise ValueError(f"bigram_seed must be an integer (got {self.bigram_seed!r})")
        _check_choice("outputs", self.outputs, ("uniform", "unigram"))

    @property
    def plan(self) -> SamplingPlan:
        return _trigger_plan(self.vocab_size, self.seq_len)

    @property
    def global_bigram(self) -> np.ndarray:
        """π_b, ``[N, N]`` (float64)."""
        return _global_bigram(self.vocab_size, float(self.bigram_alpha), int(self.bigram_seed))[0]

    @property
    def unigram(self) -> np.ndarray:
        """π_u, the stationary law of π_b (float64)."""
        return _global_bigram(self.vocab_size, float(self.bigram_alpha), int(self.bigram_seed))[1]

    @property
    def triggers(self) -> np.ndarray:
        """q_1..q_K: the K most probable tokens under π_u (int, most probable first)."""
        return np.argsort(-self.unigram, kind="stable")[: self.num_triggers]

    @property
    def output_law(self) -> np.ndarray:
        """The law of each output token o_k: ``[N]``, zero on the triggers."""
        mask = np.ones(self.vocab_size)
        mask[self.triggers] = 0.0
        weights = mask if self.outputs == "uniform" else mask * self.unigram
        return weights / weights.sum()

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        logits = jnp.log(jnp.asarray(self.output_law, jnp.float32))  # −inf on the triggers
        return {"outputs": jax.random.categorical(key, logits, shape=(batch_size, self.num_triggers)).astype(jnp.int32)}

    def row_table(self, kernels: dict) -> jax.Array:
        out_BxK = kernels["outputs"]
        b, n = out_BxK.shape[0], self.vocab_size
        pi_b = jnp.broadcast_to(jnp.asarray(self.global_bigram, jnp.float32), (b, n, n))
        rows = pi_b.at[:, jnp.asarray(self.triggers)].set(jax.nn.one_hot(out_BxK, n, dtype=jnp.float32))
        pi_u = jnp.broadcast_to(jnp.asarray(self.unigram, jnp.float32), (b, 1, n))
        return jnp.concatenate([rows, pi_u], axis=1)

    def position_kinds(self, tokens_BxT: jax.Array) -> dict:
        """Boolean ``[B, T]`` masks of what position t predicts: ``"induction"`` (z_t is a trigger
        seen before t: its successor is known in context), ``"first_trigger"`` (a trigger's
        first occurrence: its output is not yet known) and ``"bigram"`` (z_t is not a trigger)."""
        trig_BxTxK = jnp.asarray(tokens_BxT)[..., None] == jnp.asarray(self.triggers)[None, None]
        seen_BxTxK = (jnp.cumsum(trig_BxTxK, axis=1) - trig_BxTxK) > 0
        induction = jnp.any(trig_BxTxK & seen_BxTxK, axis=-1)
        is_trigger = jnp.any(trig_BxTxK, axis=-1)
        return {"induction": induction, "first_trigger": is_trigger & ~induction, "bigram": ~is_trigger}

    def bayes(self, tokens_BxT: jax.Array) -> jax.Array:
        """The Bayes-optimal next-token law at every position, ``[B, T, N]``: π_b(·|z_t) after a
        non-trigger; after a trigger seen before, its successor then (one-hot); after a trigger's
        first occurrence, the output law."""
        tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
        b, t = tokens_BxT.shape
        n = self.vocab_size
        trig_BxTxK = tokens_BxT[..., None] == jnp.asarray(self.triggers)[None, None]
        # the token after each trigger's first occurrence (meaningful only where it was seen)
        first_BxK = jnp.argmax(trig_BxTxK, axis=1)
        succ_BxK = jnp.take_along_axis(tokens_BxT, jnp.minimum(first_BxK + 1, t - 1), axis=1)
        which_BxT = jnp.argmax(trig_BxTxK, axis=-1)
        known_BxTxN = jax.nn.one_hot(jnp.take_along_axis(succ_BxK, which_BxT, axis=1), n, dtype=jnp.float32)
        kinds = self.position_kinds(tokens_BxT)
        bigram_BxTxN = jnp.asarray(self.global_bigram, jnp.float32)[tokens_BxT]
        prior_1x1xN = jnp.asarray(self.output_law, jnp.float32)[None, None]
        out = jnp.where(kinds["induction"][..., None], known_BxTxN, bigram_BxTxN)
        return jnp.where(kinds["first_trigger"][..., None], prior_1x1xN, out)
