"""In-context n-gram strategies at every position (Edelman et al. 2024; docs/peer-tasks.md#in-context-n-gram-strategies).

A model trained on in-context Markov chains passes through these predictors: uniform, then the
in-context unigram, then the in-context bigram (and n-gram). Each is a function of the prefix
x_0..x_t alone and predicts x_{t+1}:

    P(a | x_0..x_t) = (N_t(c_t, a) + β) / (N_t(c_t) + k β),

with c_t the last n − 1 tokens, N_t(c, a) the number of times a followed c inside the prefix
and N_t(c) = Σ_a N_t(c, a). n = 1 is the unigram (N_t(a) counts the tokens x_0..x_t), n = 2 the
bigram. β = 1 is Laplace's rule (Edelman's strategies); with β = α it is the posterior
predictive of Dirichlet(α) rows, which is the exact Bayes predictor when the first n − 1 tokens
carry no information about the kernel (``init="uniform"``) and an O(1/T) approximation when
they are drawn from the chain's stationary law.

Positions with fewer than n − 1 tokens of context predict uniformly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.models.tokens import check_tokens
from icl_jax.tasks.tasks import _check_vocab

__all__ = ["ngram_strategy", "lag_strategy", "uniform_strategy", "MAX_STRATEGY_CELLS"]

#: largest k^n count table per position (the counts are a cumulative sum over positions)
MAX_STRATEGY_CELLS = 1 << 12


def _check(vocab_size, n: int, beta, table: str) -> int:
    """Validate k, the k^n count table and a concrete β (a traced β is used as it is); returns k."""
    _check_vocab(vocab_size)
    k = int(vocab_size)
    if k**n > MAX_STRATEGY_CELLS:
        raise ValueError(f"{table} = {k ** n} cells per position; at most {MAX_STRATEGY_CELLS} are supported")
    if isinstance(beta, (bool, str)):
        raise ValueError(f"beta must be a finite number > 0 (got {beta!r})")
    try:
        value = float(beta)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return k  # traced
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"beta must be a finite number > 0 (got {beta!r})")
    return k


def check_token_range(tokens_BxT, vocab_size: int) -> jax.Array:
    """``int32[B, T]`` tokens, validated by the models' :func:`~icl_jax.models.tokens.check_tokens`
    (concrete ids outside [0, k−1] raise ``ValueError``: they would index past a count table)."""
    return jnp.asarray(check_tokens(tokens_BxT, vocab_size), jnp.int32)


def uniform_strategy(tokens_BxT: jax.Array, vocab_size: int) -> jax.Array:
    """1/k at every position: ``[B, T, k]``."""
    b, t = tokens_BxT.shape
    return jnp.full((b, t, vocab_size), 1.0 / vocab_size, jnp.float32)


def ngram_strategy(tokens_BxT: jax.Array, vocab_size: int, n: int, beta=1.0) -> jax.Array:
    """The in-context n-gram predictor with add-β smoothing at every position: ``[B, T, k]``
    (row t predicts x_{t+1} from x_0..x_t; see the module docstring).

    Args:
      tokens_BxT: int tokens in [0, k−1].
      vocab_size: k >= 2.
      n: 1 (unigram), 2 (bigram), ...; k^n <= :data:`MAX_STRATEGY_CELLS`.
      beta: pseudo-count > 0 (1: Laplace; α: the Dirichlet(α) posterior predictive). May be traced.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (1 = unigram, 2 = bigram; got {n!r})")
    k = _check(vocab_size, n, beta, "n: the count table has vocab_size**n")
    tokens_BxT = check_token_range(tokens_BxT, k)
    b, t = tokens_BxT.shape
    m = n - 1
    # context code of position s: its last m tokens (x_{s−m+1}..x_s), most recent = least significant
    ctx_BxT = jnp.zeros((b, t), jnp.int32)
    for j in range(m):
        ctx_BxT = ctx_BxT + (k**j) * jnp.pad(tokens_BxT, ((0, 0), (j, 0)))[:, :t]
    valid_T = jnp.arange(t) >= m - 1  # a full context ends at position s
    # the transition (context ending at s−1 → x_s), s >= m, counts from position s on; the
    # unigram (m = 0) counts every token x_0..x_t
    if m == 0:
        cell_BxT = tokens_BxT
    else:
        cell_BxT = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), ctx_BxT[:, :-1] * k + tokens_BxT[:, 1:]], axis=1)
    seen_T = jnp.arange(t) >= m
    onehot_BxTxC = jax.nn.one_hot(cell_BxT, k**n, dtype=jnp.float32) * seen_T[None, :, None]
    counts_BxTxC = jnp.cumsum(onehot_BxTxC, axis=1).reshape(b, t, k**m, k)
    row_BxTxK = jnp.take_along_axis(counts_BxTxC, ctx_BxT[:, :, None, None], axis=2)[:, :, 0]
    beta = jnp.asarray(beta, jnp.float32)
    probs = (row_BxTxK + beta) / (jnp.sum(row_BxTxK, axis=-1, keepdims=True) + k * beta)
    return jnp.where(valid_T[None, :, None], probs, 1.0 / k)


def lag_strategy(tokens_BxT: jax.Array, vocab_size: int, lag: int, beta=1.0) -> jax.Array:
    """The in-context lag-ℓ bigram at every position, ``[B, T, k]``: row t predicts x_{t+1} from
    the transitions x_{i−ℓ} → x_i seen in x_0..x_t, given x_{t+1−ℓ}:

        (N_t(x_{t+1−ℓ}, a) + β) / (N_t(x_{t+1−ℓ}) + k β);

    uniform where t + 1 < ℓ (no token ℓ back). ``lag = 1`` is the bigram of :func:`ngram_strategy`.
    """
    if not isinstance(lag, (int, np.integer)) or isinstance(lag, bool) or lag < 1:
        raise ValueError(f"lag must be an integer >= 1 (got {lag!r})")
    k = _check(vocab_size, 2, beta, "vocab_size: the count table has vocab_size**2")
    tokens_BxT = check_token_range(tokens_BxT, k)
    b, t = tokens_BxT.shape
    back_BxT = jnp.pad(tokens_BxT, ((0, 0), (lag, 0)))[:, :t]  # x_{i−ℓ} (0-padded where i < ℓ)
    seen_T = jnp.arange(t) >= lag
    onehot = jax.nn.one_hot(back_BxT * k + tokens_BxT, k * k, dtype=jnp.float32) * seen_T[None, :, None]
    counts_BxTxKxK = jnp.cumsum(onehot, axis=1).reshape(b, t, k, k)
    ctx_BxT = jnp.pad(tokens_BxT, ((0, 0), (lag - 1, 0)))[:, :t]  # x_{t+1−ℓ}
    row = jnp.take_along_axis(counts_BxTxKxK, ctx_BxT[:, :, None, None], axis=2)[:, :, 0]
    beta = jnp.asarray(beta, jnp.float32)
    probs = (row + beta) / (jnp.sum(row, axis=-1, keepdims=True) + k * beta)
    return jnp.where((jnp.arange(t) >= lag - 1)[None, :, None], probs, 1.0 / k)
