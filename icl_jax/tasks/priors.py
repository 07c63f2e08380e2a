"""Transition priors and stationary laws.

* Dirichlet(α·1) rows drawn as normalised Gamma(α) variables, in log space so that the
  α = 0.1 draws of both papers (entries routinely below 1e-30) neither underflow nor turn
  into NaN (spec jax-style §6).
* Stationary distributions by the Grassmann–Taksar–Heyman (GTH) elimination: Gaussian
  elimination on (P − I) arranged so that no subtraction ever happens, which keeps every
  entry of μ accurate to a few ulps *relative* to itself, even for the near-reducible
  chains that α = 0.1 produces (Nichani spec §9 quirk 4: the official SVD null vector is
  slow and loses those entries).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "sample_log_gamma",
    "sample_dirichlet",
    "stationary_distribution",
    "ngram_window_stationary",
]

# Re-draw buffers hold 1/16 of the entries of the level above. Marsaglia–Tsang rejects
# under 5 % for shape >= 1 (4.2 % at shape 1.1), so a buffer overflows only by a many-sigma
# fluctuation; if it does, the outer loop runs another pass and the result stays exact.
_RETRY_FRACTION = 16
# Below this size a buffer is simply re-drawn whole until clean (cheap, compiles small).
_LOOP_SIZE = 1 << 16


def _uniform_open(key: jax.Array, shape, dtype) -> jax.Array:
    """Uniform on (0, 1) with 32 random bits, so log(u) is finite and its lower tail
    reaches 2^-33 (jax.random.uniform stops at 2^-23, which would truncate the
    Gamma(α) tail through log(U)/α far too early for α = 0.1)."""
    bits = jax.random.bits(key, shape, jnp.uint32)
    return (bits.astype(dtype) + dtype(0.5)) * dtype(2.0**-32)


def _box_muller(key: jax.Array, n: int, dtype) -> jax.Array:
    """n standard normals from n uniforms (two normals per pair of uniforms)."""
    half = (n + 1) // 2
    u = _uniform_open(key, (2, half), dtype)
    r = jnp.sqrt(-2.0 * jnp.log(u[0]))
    theta = dtype(2.0 * math.pi) * u[1]
    return jnp.concatenate([r * jnp.cos(theta), r * jnp.sin(theta)])[:n]


def _mt_round(key: jax.Array, shape_param: jax.Array, dtype):
    """One Marsaglia–Tsang proposal per entry of ``shape_param`` (all entries >= 1).

    Returns (accepted, log_value)."""
    n = shape_param.shape[0]
    k_norm, k_acc = jax.random.split(key)
    d = shape_param - dtype(1.0 / 3.0)
    c = jax.lax.rsqrt(9.0 * d)
    x = _box_muller(k_norm, n, dtype)
    v = (1.0 + c * x) ** 3
    positive = v > 0
    log_v = jnp.log(jnp.where(positive, v, 1.0))
    log_u = jnp.log(_uniform_open(k_acc, (n,), dtype))
    accepted = positive & (log_u < 0.5 * x * x + d - d * v + d * log_v)
    return accepted, jnp.log(d) + log_v


def _redraw_rejected(key, shape_flat, accepted, log_value, dtype):
    """Re-draw the rejected entries of one Marsaglia–Tsang pass.

    Rejected entries (about 4 %) are gathered into a buffer 1/16 the size, re-drawn there
    and scattered back; the buffer's own rejects are handled the same way one level down,
    so each level costs ~1/16 of the one above and the one full-size ``nonzero`` dominates.
    At the smallest level a plain loop runs until that buffer is clean. Entries that did
    not fit in a buffer (never seen: it would take > 6 % rejects) stay rejected and the
    caller's outer loop runs another pass, so the result is exact in every case."""
    n = shape_flat.shape[0]
    if n <= _LOOP_SIZE:
        def cond(state):
            return ~jnp.all(state[1])

        def body(state):
            round_, acc, val = state
            ok, new = _mt_round(jax.random.fold_in(key, round_), shape_flat, dtype)
            take = ok & ~acc
            return round_ + 1, acc | ok, jnp.where(take, new, val)

        _, accepted, log_value = jax.lax.while_loop(cond, body, (0, accepted, log_value))
        return accepted, log_value
    m = max(n // _RETRY_FRACTION, 1)
    k_draw, k_down = jax.random.split(key)
    (idx,) = jnp.nonzero(~accepted, size=m, fill_value=n)
    live = idx < n
    sub_shape = shape_flat.at[idx].get(mode="fill", fill_value=2.0)
    ok, sub_val = _mt_round(k_draw, sub_shape, dtype)
    ok, sub_val = _redraw_rejected(k_down, sub_shape, ok | ~live, sub_val, dtype)
    target = jnp.where(live & ok, idx, n)  # index n = dropped update
    accepted = accepted.at[target].set(True, mode="drop")
    log_value = log_value.at[target].set(sub_val, mode="drop")
    return accepted, log_value


def _log_gamma_at_least_one(key: jax.Array, shape_flat: jax.Array, dtype) -> jax.Array:
    """log Gamma(a) draws for a >= 1 (flat array of shapes), exact rejection sampling."""
    accepted, log_value = _mt_round(jax.random.fold_in(key, 0), shape_flat, dtype)

    def cond(state):
        return ~jnp.all(state[1])

    def body(state):
        pass_, acc, val = state
        acc, val = _redraw_rejected(jax.random.fold_in(key, pass_), shape_flat, acc, val, dtype)
        return pass_ + 1, acc, val

    _, _, log_value = jax.lax.while_loop(cond, body, (1, accepted, log_value))
    return log_value


def sample_log_gamma(key: jax.Array, alpha, shape, dtype=jnp.float32) -> jax.Array:
    r"""log of Gamma(α, 1) draws, accurate deep into the lower tail.

    Uses the boosting identity Gamma(α) =ᵈ Gamma(α+1)·U^{1/α}, i.e.
    :math:`\log G_α = \log G_{α+1} + \log(U)/α`, with Marsaglia–Tsang for the
    shape-(α+1) draw. For α = 1 (a Python number) the draw is an exponential, as the
    foundation issue asks. ``alpha`` may be a traced scalar (vmapped over α).
    """
    shape = tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    if isinstance(alpha, (int, float)) and float(alpha) == 1.0:
        u = _uniform_open(key, shape, dtype)
        return jnp.log(-jnp.log(u))
    alpha = jnp.asarray(alpha, dtype)
    k_main, k_boost = jax.random.split(key)
    shape_flat = jnp.broadcast_to(alpha + dtype(1.0), (n,))
    log_g = _log_gamma_at_least_one(k_main, shape_flat, dtype).reshape(shape)
    log_u = jnp.log(_uniform_open(k_boost, shape, dtype))
    return log_g + log_u / alpha


@functools.partial(jax.jit, static_argnames=("shape", "log", "dtype", "unit_alpha"))
def _dirichlet(key, alpha, shape, log, dtype, unit_alpha):
    log_g = sample_log_gamma(key, 1.0 if unit_alpha else alpha, shape, dtype)
    log_p = jax.nn.log_softmax(log_g, axis=-1)
    return log_p if log else jnp.exp(log_p)


def sample_dirichlet(
    key: jax.Array, alpha, shape, vocab_size: int, *, log: bool = False, dtype=jnp.float32
) -> jax.Array:
    """Rows i.i.d. Dirichlet(α·1_S): an array of ``shape + (vocab_size,)``.

    Normalised Gamma(α) draws, normalised in log space (``log_softmax``), so rows keep
    their tiny entries relative to each other. ``log=True`` returns log-probabilities
    (exact where the probabilities underflow float32). Compiled; ``alpha`` may be traced.
    """
    unit = isinstance(alpha, (int, float)) and float(alpha) == 1.0
    return _dirichlet(key, alpha, tuple(shape) + (int(vocab_size),), log, jnp.dtype(dtype).type, unit)


# Up to this many states the elimination is unrolled on shrinking static slices (n³/3
# flops, no masks); beyond it a masked fori_loop keeps compile time bounded.
_UNROLL_STATES = 32


@jax.jit
def stationary_distribution(p_NxN: jax.Array) -> jax.Array:
    r"""Stationary law μ (μᵀP = μᵀ, Σμ = 1) of row-stochastic matrices ``[..., N, N]``.

    Grassmann–Taksar–Heyman state reduction: eliminate states N−1, …, 1 in turn, using
    :math:`s_k = \sum_{j<k} P_{kj}` (never :math:`1 - P_{kk}`), then back-substitute
    :math:`μ_k = \sum_{i<k} μ_i P_{ik}/s_k`. Only products, sums and divisions of
    non-negative numbers occur, so every μ_k carries a small *relative* error even when it
    is ~1e-30. Rows with no mass on lower states (reducible chains, a measure-zero event
    under a Dirichlet prior) are guarded so the output stays finite.
    """
    p = jnp.asarray(p_NxN)
    n = p.shape[-1]
    if n <= _UNROLL_STATES:
        mu = _gth_unrolled(p)
    else:
        mu = _gth_masked(p)
    return mu / jnp.sum(mu, axis=-1, keepdims=True)


def _gth_unrolled(p):
    tiny = jnp.finfo(p.dtype).tiny
    n = p.shape[-1]
    cols = {}
    a = p
    for k in range(n - 1, 0, -1):
        s = jnp.sum(a[..., k, :k], axis=-1)
        col = a[..., :k, k] / jnp.maximum(s, tiny)[..., None]  # P[i, k] / s_k, i < k
        a = a[..., :k, :k] + col[..., :, None] * a[..., k, None, :k]
        cols[k] = col
    mu = jnp.ones(p.shape[:-2] + (1,), p.dtype)
    for k in range(1, n):
        mu = jnp.concatenate([mu, jnp.sum(mu * cols[k], axis=-1, keepdims=True)], axis=-1)
    return mu


def _gth_masked(p):
    n = p.shape[-1]
    tiny = jnp.finfo(p.dtype).tiny
    idx = jnp.arange(n)

    def eliminate(step, p):
        k = n - 1 - step
        lower = idx < k
        row_k = jnp.where(lower, p[..., k, :], 0.0)
        s = jnp.sum(row_k, axis=-1)
        col_k = jnp.where(lower, p[..., :, k] / jnp.maximum(s, tiny)[..., None], p[..., :, k])
        mask = lower[:, None] & lower[None, :]
        p = jnp.where(mask, p + col_k[..., :, None] * row_k[..., None, :], p)
        return p.at[..., :, k].set(col_k)

    p = jax.lax.fori_loop(0, n - 1, eliminate, p)

    def back(k, mu):
        return mu.at[..., k].set(jnp.sum(jnp.where(idx < k, mu * p[..., :, k], 0.0), axis=-1))

    mu0 = jnp.zeros(p.shape[:-1], p.dtype).at[..., 0].set(1.0)
    return jax.lax.fori_loop(1, n, back, mu0)


def _window_maps(vocab_size: int, offsets: tuple[int, ...]):
    """Index maps of the order-K window chain (K = max offset).

    A window state lists (x_{i−1}, …, x_{i−K}), most recent first, as a base-d number
    with the most recent token most significant. Returns, for every (state, next token):
    the kernel row read (parent context as a base-d number, most recent most significant,
    the official code's labelling) and the next state."""
    d, k = vocab_size, max(offsets)
    n = d**k
    digits = np.array(np.unravel_index(np.arange(n), (d,) * k)).T  # [n, K], digit m = x_{i-1-m}
    radix = d ** np.arange(len(offsets) - 1, -1, -1)
    rows = digits[:, [o - 1 for o in offsets]] @ radix  # [n]
    nxt = np.arange(d)[None, :] * d ** (k - 1) + (np.arange(n) // d)[:, None]  # [n, d]
    return rows, nxt


def ngram_window_stationary(
    kernel_BxRxS: jax.Array, vocab_size: int, offsets: tuple[int, ...]
) -> jax.Array:
    """Stationary law of the window (x_{i−1}, …, x_{i−K}) of an n-gram chain.

    ``kernel_BxRxS[b, r]`` is π(·|z) for the parent context z = (x_{i−o})_{o∈offsets}
    written as a base-d number with the most recent parent most significant. Returns
    μ of shape ``[B] + [d]*K``, axis m holding x_{i−1−m} (Chen spec §6.6 item 1: a linear
    solve on the window chain, here GTH for accuracy)."""
    d, k = vocab_size, max(offsets)
    rows, nxt = _window_maps(vocab_size, tuple(offsets))
    n = d**k
    batch = kernel_BxRxS.shape[:-2]
    probs = kernel_BxRxS[..., rows, :]  # [..., n, d]
    trans = jnp.zeros(batch + (n, n), kernel_BxRxS.dtype)
    trans = trans.at[..., np.arange(n)[:, None], nxt].set(probs)
    mu = stationary_distribution(trans)
    return mu.reshape(batch + (d,) * k)
