"""Transition priors and stationary laws.

* Dirichlet(α·1) rows drawn as normalised Gamma(α) variables, in log space so that the
  α = 0.1 draws of both papers (entries routinely below 1e-30) neither underflow nor turn
  into NaN (docs/tasks.md#dirichlet-sampling-in-log-space).
* Stationary distributions by the Grassmann–Taksar–Heyman (GTH) elimination: Gaussian
  elimination on (P − I) arranged so that no subtraction ever happens, which keeps every
  entry of μ accurate to a few ulps *relative* to itself, even for the near-reducible
  chains that α = 0.1 produces (docs/quirks.md#nichani-quirk-4: the official SVD null vector is
  slow and loses those entries).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "sample_log_gamma",
    "sample_dirichlet",
    "sample_doubly_stochastic",
    "stationary_distribution",
    "ngram_window_stationary",
]

# Every re-draw pass proposes n/fraction + _BUFFER_SLACK values (the slack keeps small draws,
# whose rejection counts fluctuate most, to one pass almost always).
_BUFFER_SLACK = 64
# Liu–Martin–Syring is used for α below this: it accepts >= 87.6 % of proposals there
# (Γ(α+1)/(1+w)), while Marsaglia–Tsang with the boost spends three words per draw.
_LMS_MAX_ALPHA = 0.15


def uniform_open(key: jax.Array, shape, dtype) -> jax.Array:
    """Uniform on (0, 1) with 32 random bits, so log(u) is finite and its lower tail
    reaches 2^-33 (jax.random.uniform stops at 2^-23, which would truncate the
    Gamma(α) tail through log(U)/α far too early for α = 0.1)."""
    shape = tuple(shape)
    size = math.prod(shape)
    if size % 2 and jax.config.jax_threefry_partitionable and str(jax.random.key_impl(key)) == "threefry2x32":
        # an odd count takes threefry's slow path on XLA:CPU (3-4x per word at 10^5 words);
        # with partitionable threefry the first `size` of `size + 1` words are the same words
        bits = jax.random.bits(key, (size + 1,), jnp.uint32)[:size].reshape(shape)
    else:
        bits = jax.random.bits(key, shape, jnp.uint32)
    u = (bits.astype(dtype) + dtype(0.5)) * dtype(2.0**-32)
    # the 128 largest words round up to 2^32 in float32: keep the interval open
    return jnp.minimum(u, dtype(1.0) - jnp.finfo(dtype).epsneg)


def _box_muller(key: jax.Array, n: int, dtype) -> jax.Array:
    """n standard normals from n uniforms (two normals per pair of uniforms)."""
    half = (n + 1) // 2
    u = uniform_open(key, (2, half), dtype)
    r = jnp.sqrt(-2.0 * jnp.log(u[0]))
    theta = dtype(2.0 * math.pi) * u[1]
    return jnp.concatenate([r * jnp.cos(theta), r * jnp.sin(theta)])[:n]


def _mt_round(key: jax.Array, n: int, shape_param, dtype):
    """n Marsaglia–Tsang proposals for Gamma(a), a >= 1 (two words each).

    Returns (accepted, log of the draw)."""
    k_norm, k_acc = jax.random.split(key)
    d = shape_param - dtype(1.0 / 3.0)
    c = jax.lax.rsqrt(9.0 * d)
    x = _box_muller(k_norm, n, dtype)
    v = (1.0 + c * x) ** 3
    positive = v > 0
    log_v = jnp.log(jnp.where(positive, v, 1.0))
    log_u = jnp.log(uniform_open(k_acc, (n,), dtype))
    accepted = positive & (log_u < 0.5 * x * x + d - d * v + d * log_v)
    return accepted, jnp.broadcast_to(jnp.log(d), (n,)) + log_v


def _lms_round(key: jax.Array, n: int, alpha, dtype):
    r"""n Liu–Martin–Syring (2017) proposals for log Gamma(α), α < 1 (two words each).

    Works with z = −α·log X, whose density ∝ h(z) = exp(−z − e^{−z/α}); the envelope
    η(z) = e^{−z} (z ≥ 0), wλe^{λz} (z < 0) with λ = 1/α − 1, w = α/(e(1−α)) is sampled as a
    two-piece mixture from one uniform (the second piece reuses the uniform's excess over
    r = 1/(1+w)); accept when log W < log h(z) − log η(z). Returns (accepted, log X)."""
    # Array ops divide only by explicit reciprocals: XLA may turn x / scalar into
    # x * (1/scalar) for a scalar α but not for a vmapped one, which would break the
    # bit-for-bit agreement of vmapped and single runs.
    k_u, k_w = jax.random.split(key)
    inv_alpha = 1.0 / alpha
    lam = inv_alpha - 1.0
    w = alpha / (math.e * (1.0 - alpha))
    r = 1.0 / (1.0 + w)
    inv_r, inv_1mr, inv_lam = 1.0 / r, 1.0 / (1.0 - r), 1.0 / lam
    u = uniform_open(k_u, (n,), dtype)
    right = u <= r
    z = jnp.where(
        right,
        -jnp.log(jnp.where(right, u, r) * inv_r),
        jnp.log(jnp.where(right, 1.0, (u - r) * inv_1mr)) * inv_lam,
    )
    e = jnp.exp(-z * inv_alpha)
    log_ratio = jnp.where(z >= 0, -e, -z - e - jnp.log(w * lam) - lam * z)
    accepted = jnp.log(uniform_open(k_w, (n,), dtype)) < log_ratio
    return accepted, -z * inv_alpha


def _prefix_count(mask: jax.Array) -> jax.Array:
    """Inclusive running count of a boolean vector, int32. (``lax.associative_scan`` runs in
    about half the time on XLA:CPU at 10^5 entries, but its deep graph of strided slices made
    XLA:CPU's compiler segfault in a long test session, so the plain cumulative sum is used.)"""
    return jnp.cumsum(mask, dtype=jnp.int32)


def _fill_rejected(key, round_fn, accepted, value, fraction: int):
    """One re-draw pass: the j-th rejected entry (in index order) takes the j-th accepted
    proposal (in index order) of a fresh buffer of n/``fraction`` + slack proposals.

    Exact: the accepted proposals of the buffer are i.i.d. from the target and independent of
    which entries were rejected, so the filled entries are i.i.d. draws; rejected entries beyond
    the buffer's accepted count stay rejected for the next pass. Ranks come from running counts
    and the buffer is compacted by one scatter of its own size, so a pass costs one small round,
    two running counts and one gather over the n entries (no size-n compaction or scatter)."""
    n = accepted.shape[0]
    m = n // fraction + _BUFFER_SLACK
    ok, proposal = round_fn(key, m)
    rank_ok = _prefix_count(ok) - 1
    compact = jnp.zeros((m,), value.dtype).at[jnp.where(ok, rank_ok, m)].set(proposal, mode="drop")
    rejected = ~accepted
    rank = _prefix_count(rejected) - 1
    take = rejected & (rank < rank_ok[-1] + 1)
    value = jnp.where(take, compact[jnp.clip(rank, 0, m - 1)], value)
    return accepted | take, value


def _rejection_sample(key, round_fn, n: int, fraction: int):
    """n exact draws from a rejection sampler ``round_fn(key, count) -> (ok, value)``: one
    round of n proposals, then re-draw passes (:func:`_fill_rejected`) until every entry holds
    an accepted proposal. ``fraction`` must make n/fraction exceed the rejection rate × n (then
    one pass almost always suffices; more passes are exact too)."""
    accepted, value = round_fn(jax.random.fold_in(key, 0), n)

    def cond(state):
        return ~jnp.all(state[1])

    def body(state):
        pass_, acc, val = state
        acc, val = _fill_rejected(jax.random.fold_in(key, pass_), round_fn, acc, val, fraction)
        return pass_ + 1, acc, val

    _, _, value = jax.lax.while_loop(cond, body, (1, accepted, value))
    return value


def _log_gamma_exponential(key, alpha, n: int, dtype):
    """α = 1: log of an exponential (one word per draw)."""
    del alpha
    return jnp.log(-jnp.log(uniform_open(key, (n,), dtype)))


def _log_gamma_lms(key, alpha, n: int, dtype):
    """α < _LMS_MAX_ALPHA: Liu–Martin–Syring in log space (two words per proposal)."""
    # Under vmap every branch of the switch runs for every α: clamp so the untaken branch,
    # whose proposals never accept for α >= 1, still terminates. Buffer 1/6 > 12.4 %, the
    # largest rejection rate below _LMS_MAX_ALPHA.
    a = jnp.where(alpha < _LMS_MAX_ALPHA, alpha, _LMS_MAX_ALPHA / 2)
    return _rejection_sample(key, lambda k, m: _lms_round(k, m, a, dtype), n, 6)


def _log_gamma_boosted(key, alpha, n: int, dtype):
    """Any α > 0: Marsaglia–Tsang for shape α+1, then log G_α = log G_{α+1} + log(U)/α."""
    k_main, k_boost = jax.random.split(key)
    # buffer 1/16 > 5 %, the largest Marsaglia–Tsang rejection rate for shape >= 1
    log_g = _rejection_sample(k_main, lambda k, m: _mt_round(k, m, alpha + 1.0, dtype), n, 16)
    return log_g + jnp.log(uniform_open(k_boost, (n,), dtype)) * (1.0 / alpha)  # see _lms_round


def _check_alpha_value(alpha):
    if isinstance(alpha, (str, bytes, bool, list, tuple, type(None))):
        raise ValueError(f"alpha must be a finite scalar > 0 (got {alpha!r})")
    try:
        value = np.asarray(alpha, np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
        # traced (checked on device: NaN output), or a placeholder JAX puts in a pytree
        # leaf while rebuilding a task (its concrete original was validated)
        return
    if value.shape != () or not np.isfinite(value) or value <= 0:
        raise ValueError(f"alpha must be a finite scalar > 0 (got {alpha!r})")


def sample_log_gamma(key: jax.Array, alpha, shape, dtype=jnp.float32) -> jax.Array:
    r"""log of Gamma(α, 1) draws (α a scalar), accurate deep into the lower tail.

    One of three exact samplers, chosen by ``lax.switch`` on α, so a vmapped α draws the
    same variates as a single call with that (traced) α: bit for bit on the exponential and
    Liu–Martin–Syring paths, to a few ulp of the operands on the Marsaglia–Tsang path, where
    XLA fuses the final multiply-add differently in the batched program:

    * α = 1: log of an exponential (one word per draw);
    * α < 0.15 (the papers' α = 0.1): Liu–Martin–Syring in log space (two words, 8.6 %
      rejections at α = 0.1);
    * otherwise: Marsaglia–Tsang for shape α+1 and the boost
      :math:`\log G_α = \log G_{α+1} + \log(U)/α` (three words; under 5 % rejections).

    A concrete α ≤ 0, NaN or ±inf raises ``ValueError``; a traced one returns NaN draws
    (never a hang: the samplers run on a safe α and the result is masked).
    """
    _check_alpha_value(alpha)
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"dtype must be float32 or float64 (got {jnp.dtype(dtype)})")
    dtype = jnp.dtype(dtype).type
    shape = tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    alpha = jnp.asarray(alpha, dtype)
    bad = ~(alpha > 0) | ~jnp.isfinite(alpha)
    safe = jnp.where(bad, dtype(1.0), alpha)
    branch = jnp.where(safe == 1.0, 0, jnp.where(safe < _LMS_MAX_ALPHA, 1, 2))
    branches = [
        functools.partial(f, alpha=safe, n=n, dtype=dtype)
        for f in (_log_gamma_exponential, _log_gamma_lms, _log_gamma_boosted)
    ]
    out = jax.lax.switch(branch, branches, key)
    return jnp.where(bad, jnp.nan, out).reshape(shape)


@functools.partial(jax.jit, static_argnames=("shape", "log", "dtype"))
def _dirichlet(key, alpha, shape, log, dtype):
    log_g = sample_log_gamma(key, alpha, shape, dtype)
    out = jax.nn.log_softmax(log_g, axis=-1) if log else jax.nn.softmax(log_g, axis=-1)
    # mask again after normalising: XLA may fuse the NaN draws of a bad traced α into the
    # softmax and return finite, even negative, "probabilities" (seen on CPU)
    alpha = jnp.asarray(alpha, dtype)
    return jnp.where(~(alpha > 0) | ~jnp.isfinite(alpha), jnp.nan, out)


def sample_dirichlet(
    key: jax.Array, alpha, shape, vocab_size: int, *, log: bool = False, dtype=jnp.float32
) -> jax.Array:
    """Rows i.i.d. Dirichlet(α·1_S): an array of ``shape + (vocab_size,)``.

    Normalised Gamma(α) draws, normalised in log space (``log_softmax``), so rows keep
    their tiny entries relative to each other. ``log=True`` returns log-probabilities
    (exact where the probabilities underflow float32). Compiled; ``alpha`` may be traced.

    A concrete α ≤ 0, NaN or ±inf raises ``ValueError`` naming ``alpha``. A traced α (a
    vmapped sweep) cannot be checked eagerly: a bad one gives all-NaN rows (never a hang or
    finite garbage). In a task this makes the soft labels NaN, so a soft-label loss is NaN
    and the engine's non-finite check stops the run; tokens and hard labels drawn from NaN
    rows are meaningless *finite* integers, so a hard-label loss does not turn NaN: validate
    a swept α grid before tracing it (docs/tasks.md#dirichlet-sampling-in-log-space).
    """
    _check_alpha_value(alpha)
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2 (got {vocab_size!r})")
    return _dirichlet(key, alpha, tuple(shape) + (int(vocab_size),), log, jnp.dtype(dtype).type)


def sample_doubly_stochastic(key: jax.Array, shape, vocab_size: int, num_permutations: int | None = None,
                             *, dtype=jnp.float32) -> jax.Array:
    """Random doubly stochastic k×k matrices (rows and columns sum to 1): ``shape + (k, k)``.

    Each is a Birkhoff mixture Σ_i w_i P_i of permutation matrices with weights
    w ~ Dirichlet(1). Default (``num_permutations=None``): for k <= 4 the mixture runs over all
    k! permutations (at k = 2 this is the uniform law on the polytope, w·I + (1−w)·swap with
    w ~ U(0, 1)); for k > 4 over (k−1)² + 1 independent uniform permutations, enough by
    Birkhoff–von Neumann (with Carathéodory) to reach every doubly stochastic matrix. An
    integer ``num_permutations`` = m always draws m independent uniform permutations. The law
    is not the uniform (Lebesgue) law on the Birkhoff polytope beyond k = 2, whose exact
    sampling is impractical beyond k ≈ 5 (Edelman et al.'s code comment;
    docs/peer-tasks.md#doubly-stochastic-kernels). Uniform is stationary for every such matrix,
    so unigram statistics carry no information about it.
    """
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2 (got {vocab_size!r})")
    k = int(vocab_size)
    m = num_permutations
    if m is not None and (not isinstance(m, (int, np.integer)) or isinstance(m, bool) or m < 1):
        raise ValueError(f"num_permutations must be an integer >= 1 (got {num_permutations!r})")
    shape = tuple(shape)
    k_perm, k_w = jax.random.split(key)
    if m is None and k <= 4:  # every permutation, once
        perm = jnp.broadcast_to(jnp.asarray(list(itertools.permutations(range(k))), jnp.int32),
                                shape + (math.factorial(k), k))
    else:  # a uniform permutation of each (matrix, component) as the argsort of i.i.d. uniforms
        m = (k - 1) ** 2 + 1 if m is None else int(m)
        perm = jnp.argsort(jax.random.uniform(k_perm, shape + (m, k)), axis=-1)
    n = perm.shape[-2]
    perm_matrices = jax.nn.one_hot(perm, k, dtype=dtype)  # [..., n, k, k]: row r has its 1 at perm[r]
    w = sample_dirichlet(k_w, 1.0, shape, n, dtype=dtype) if n > 1 else jnp.ones(shape + (1,), dtype)
    return jnp.einsum("...m,...mij->...ij", w, perm_matrices)


# Up to this many states the elimination is unrolled on shrinking static slices (n³/3
# flops, no masks); beyond it a masked fori_loop keeps compile time bounded.
_UNROLL_STATES = 32


@jax.jit
def stationary_distribution(p_NxN: jax.Array) -> jax.Array:
    r"""Stationary law μ (μᵀP = μᵀ, Σμ = 1) of row-stochastic matrices ``[..., N, N]``.

    Grassmann–Taksar–Heyman state reduction: eliminate states N−1, …, 1 in turn, using
    :math:`s_k = \sum_{j<k} P_{kj}` (never :math:`1 - P_{kk}`), then back-substitute
    :math:`μ_k = \sum_{i<k} μ_i P_{ik}/s_k` (rescaled as it goes, see ``_back_step``).
    Only products, sums and divisions of non-negative numbers occur, so every μ_k carries a small *relative* error even when it
    is ~1e-30. States with no mass on lower states (reducible chains: float32 Dirichlet
    rows underflow to exact zeros at small α) are guarded by a floor on s_k and a running
    renormalisation of μ, so the output stays finite and puts the mass on closed classes.
    """
    p = jnp.asarray(p_NxN)
    n = p.shape[-1]
    if n <= _UNROLL_STATES:
        mu = _gth_unrolled(p)
    else:
        mu = _gth_masked(p)
    return mu / jnp.sum(mu, axis=-1, keepdims=True)


def _back_step(mu, column, s_k):
    """μ_k = Σ_{i<k} μ_i P_ik / s_k, appended with the whole vector rescaled by its max.

    Written as (μ·s_k, Σ μ_i P_ik) / max so that nothing overflows when s_k is ~1e-38
    (a nearly closed state k): μ stays in [0, 1] and only relative masses matter."""
    t = jnp.sum(mu * column, axis=-1, keepdims=True)
    mu = jnp.concatenate([mu * s_k[..., None], t], axis=-1)
    return mu / jnp.max(mu, axis=-1, keepdims=True)


def _gth_unrolled(p):
    tiny = jnp.finfo(p.dtype).tiny
    n = p.shape[-1]
    columns, sums = {}, {}
    a = p
    for k in range(n - 1, 0, -1):
        s = jnp.maximum(jnp.sum(a[..., k, :k], axis=-1), tiny)
        columns[k], sums[k] = a[..., :k, k], s
        a = a[..., :k, :k] + (a[..., :k, k] / s[..., None])[..., :, None] * a[..., k, None, :k]
    mu = jnp.ones(p.shape[:-2] + (1,), p.dtype)
    for k in range(1, n):
        mu = _back_step(mu, columns[k], sums[k])
    return mu


def _gth_masked(p):
    n = p.shape[-1]
    tiny = jnp.finfo(p.dtype).tiny
    idx = jnp.arange(n)

    def eliminate(step, state):
        p, sums = state
        k = n - 1 - step
        lower = idx < k
        row_k = jnp.where(lower, p[..., k, :], 0.0)
        s = jnp.maximum(jnp.sum(row_k, axis=-1), tiny)
        col_k = jnp.where(lower, p[..., :, k] / s[..., None], 0.0)
        mask = lower[:, None] & lower[None, :]
        p = jnp.where(mask, p + col_k[..., :, None] * row_k[..., None, :], p)
        return p, sums.at[..., k].set(s)

    p, sums = jax.lax.fori_loop(0, n - 1, eliminate, (p, jnp.ones(p.shape[:-1], p.dtype)))

    def back(k, mu):
        t = jnp.sum(jnp.where(idx < k, mu * p[..., :, k], 0.0), axis=-1)
        mu = jnp.where(idx < k, mu * sums[..., k, None], 0.0).at[..., k].set(t)
        return mu / jnp.max(mu, axis=-1, keepdims=True)

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
    μ of shape ``[B] + [d]*K``, axis m holding x_{i−1−m}
    (docs/chen-theory.md#exact-stationary-window-laws: a linear solve on the window chain, here GTH
    for accuracy)."""
    d, k = vocab_size, max(offsets)
    rows, nxt = _window_maps(vocab_size, tuple(offsets))
    n = d**k
    batch = kernel_BxRxS.shape[:-2]
    probs = kernel_BxRxS[..., rows, :]  # [..., n, d]
    trans = jnp.zeros(batch + (n, n), kernel_BxRxS.dtype)
    trans = trans.at[..., np.arange(n)[:, None], nxt].set(probs)
    mu = stationary_distribution(trans)
    return mu.reshape(batch + (d,) * k)
