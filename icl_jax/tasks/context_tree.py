"""Variable-order Markov chains from a context-tree source, and their Bayes predictor,
context-tree weighting (CTW): Zhou, Tian & Diggavi 2025 (docs/peer-tasks.md#variable-order-chains).
The data definition is from the project's spec, marked there as an unverified recollection.

The prior (CTW's, Willems, Shtarkov & Tjalkens 1995), alphabet k, maximal depth D: in the
complete k-ary tree of contexts, every node at depth < D is a leaf with probability ½ (given
that its ancestors are not); nodes at depth D are leaves. Every leaf s draws θ_s ~ Dirichlet(½·1_k)
(the KT prior). A sequence's first D tokens are uniform; from then on x_{i} ~ θ_s for the leaf s
that is a suffix of x_{i−1}, x_{i−2}, ... (the most recent token decides the first branch).

Bayes is CTW, exact for this prior: with the KT estimate P_e(s) of the symbols seen in context s
and P_w(s) = ½ P_e(s) + ½ Π_c P_w(cs) below depth D (P_w(s) = P_e(s) at depth D), the
prediction of x_{t+1} is P_w^root(x_{D..t}, x_{t+1}) / P_w^root(x_{D..t}).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.tasks.priors import sample_dirichlet
from icl_jax.tasks.sampling import SamplingPlan
from icl_jax.tasks.strategies import check_token_range
from icl_jax.tasks.tasks import _check_seq_len, _check_vocab, _TaskBase

__all__ = ["ContextTreeTask", "ctw_predict", "MAX_CONTEXT_TREE_NODES"]

#: largest complete context tree ((k^{D+1} − 1)/(k − 1) nodes) the task and CTW hold
MAX_CONTEXT_TREE_NODES = 1 << 14


def _num_nodes(k: int, depth: int) -> int:
    return (k ** (depth + 1) - 1) // (k - 1)


def _offset(k: int, d: int) -> int:
    """Id of the first depth-d node (nodes are numbered depth by depth)."""
    return (k**d - 1) // (k - 1)


def _check_tree(vocab_size, depth) -> None:
    _check_vocab(vocab_size)
    if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1 (got {depth!r})")
    if _num_nodes(vocab_size, depth) > MAX_CONTEXT_TREE_NODES:
        raise ValueError(f"depth: a complete tree of depth {depth} over {vocab_size} tokens has "
                         f"{_num_nodes(vocab_size, depth)} nodes; at most {MAX_CONTEXT_TREE_NODES} are supported")


@functools.lru_cache(maxsize=None)
def _tree_plan(k: int, depth: int, seq_len: int) -> SamplingPlan:
    # row 0: uniform (the first D tokens); row 1 + c: the leaf law of full context c, where
    # c = Σ_j k^j x_{i−1−j} (the most recent token least significant)
    radix = tuple(k**j for j in range(depth))
    nodes = [(0, (), ()) if i < depth else (1, tuple(i - 1 - j for j in range(depth)), radix) for i in range(seq_len + 1)]
    return SamplingPlan.build(nodes, num_rows=1 + k**depth)


@functools.lru_cache(maxsize=None)
def _ancestors(k: int, depth: int) -> np.ndarray:
    """``[k^D, D+1]`` node ids of the path root → depth-D node of every full context."""
    c = np.arange(k**depth)
    return np.stack([_offset(k, d) + c % (k**d) for d in range(depth + 1)], axis=1).astype(np.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ContextTreeTask(_TaskBase):
    """A context-tree source with the CTW prior (see the module docstring). Everything is static.

    Attributes:
      vocab_size: k >= 2.
      depth: maximal context depth D >= 1.
      seq_len: T input tokens, > D.
    """

    vocab_size: int = dataclasses.field(default=2, metadata=dict(static=True))
    depth: int = dataclasses.field(default=3, metadata=dict(static=True))
    seq_len: int = dataclasses.field(default=128, metadata=dict(static=True))

    def __post_init__(self):
        _check_tree(self.vocab_size, self.depth)
        _check_seq_len(self.seq_len, 1)
        if self.seq_len <= self.depth:
            raise ValueError(f"seq_len must be > depth = {self.depth} (got {self.seq_len})")

    @property
    def plan(self) -> SamplingPlan:
        return _tree_plan(self.vocab_size, self.depth, self.seq_len)

    def sample_kernels(self, key: jax.Array, batch_size: int) -> dict:
        """``leaf`` ``[B, nodes]`` (True where a node below depth D is a leaf; depth-D nodes are
        always True) and ``theta`` ``[B, nodes, k]`` (KT draws for every node; leaves use theirs)."""
        k, depth = self.vocab_size, self.depth
        n = _num_nodes(k, depth)
        k_leaf, k_theta = jax.random.split(key)
        leaf = jax.random.bernoulli(k_leaf, 0.5, (batch_size, n))
        leaf = leaf.at[:, _offset(k, depth):].set(True)
        return {"leaf": leaf, "theta": sample_dirichlet(k_theta, 0.5, (batch_size, n), k)}

    def context_leaves(self, kernels: dict) -> jax.Array:
        """The leaf node id of every full context: ``[B, k^D]`` (the shallowest leaf on its path)."""
        path = jnp.asarray(_ancestors(self.vocab_size, self.depth))  # [k^D, D+1]
        is_leaf = kernels["leaf"][:, path]  # [B, k^D, D+1]
        first = jnp.argmax(is_leaf, axis=-1)  # depth-D nodes are leaves: always found
        return path[jnp.arange(path.shape[0])[None, :], first]

    def row_table(self, kernels: dict) -> jax.Array:
        theta = kernels["theta"]
        b, _, k = theta.shape
        leaves = self.context_leaves(kernels)
        rows = jnp.take_along_axis(theta, leaves[:, :, None], axis=1)
        return jnp.concatenate([jnp.full((b, 1, k), 1.0 / k, theta.dtype), rows], axis=1)

    def bayes(self, tokens_BxT: jax.Array) -> jax.Array:
        """CTW at every position, ``[B, T, k]`` (:func:`ctw_predict`)."""
        return ctw_predict(tokens_BxT, self.vocab_size, self.depth)


def ctw_predict(tokens_BxT: jax.Array, vocab_size: int, depth: int) -> jax.Array:
    """Context-tree weighting at every position (see :func:`_ctw`); validates k, D and the
    range of concrete tokens first."""
    _check_tree(vocab_size, depth)
    return _ctw(check_token_range(tokens_BxT, vocab_size), int(vocab_size), int(depth))


@functools.partial(jax.jit, static_argnames=("vocab_size", "depth"))
def _ctw(tokens_BxT: jax.Array, vocab_size: int, depth: int) -> jax.Array:
    """Context-tree weighting (KT leaves, ½ split weights) at every position: ``[B, T, k]``,
    row t predicting x_{t+1} from x_0..x_t; uniform where t + 1 < D (the first D tokens are
    uniform and are the initial context). One ``lax.scan`` over positions; each step touches
    the D + 1 nodes on the current context's path, for every candidate symbol at once."""
    k, depth = vocab_size, depth
    tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
    b, t = tokens_BxT.shape
    n = _num_nodes(k, depth)
    path_CxP = jnp.asarray(_ancestors(k, depth))
    radix = jnp.asarray([k**j for j in range(depth)], jnp.int32)
    log_half = jnp.log(0.5)
    # full context code ending at each position t (x_t most recent), valid for t >= D − 1
    lagged = jnp.stack([jnp.pad(tokens_BxT, ((0, 0), (j, 0)))[:, :t] for j in range(depth)], axis=-1)
    ctx_BxT = jnp.sum(lagged * radix[None, None], axis=-1)
    nxt_BxT = jnp.concatenate([tokens_BxT[:, 1:], jnp.zeros((b, 1), jnp.int32)], axis=1)
    valid_T = jnp.arange(t) >= depth - 1
    update_T = valid_T & (jnp.arange(t) < t - 1)
    rows_B = jnp.arange(b)[:, None]

    def path_logs(state, path_BxP, sym):
        """New log P_e, log P_w along the path after appending ``sym`` ([B] or [B, k] symbols)."""
        counts, log_pe, log_pw, log_prod = state
        c_path = counts[rows_B, path_BxP]  # [B, P, k]
        tot = jnp.sum(c_path, axis=-1)  # [B, P]
        if sym.ndim == 1:  # the observed symbol; otherwise sym is every candidate, arange(k)
            c_sym = jnp.take_along_axis(c_path, sym[:, None, None], axis=2)[..., 0]
        else:
            c_sym = jnp.moveaxis(c_path, -1, 1)  # [B, k(sym), P]
            tot = tot[:, None]
        kt = jnp.log((c_sym + 0.5) / (tot + 0.5 * k))
        pe_new = (log_pe[rows_B, path_BxP] if sym.ndim == 1 else log_pe[rows_B, path_BxP][:, None]) + kt
        pw_old = log_pw[rows_B, path_BxP]
        prod_old = log_prod[rows_B, path_BxP]
        if sym.ndim > 1:
            pw_old, prod_old = pw_old[:, None], prod_old[:, None]
        pw_new = [pe_new[..., depth]]  # the depth-D node: P_w = P_e
        for d in range(depth - 1, -1, -1):  # bottom-up: only the path child changes
            prod = prod_old[..., d] - pw_old[..., d + 1] + pw_new[-1]
            pw_new.append(jnp.logaddexp(log_half + pe_new[..., d], log_half + prod))
        pw_new = jnp.stack(pw_new[::-1], axis=-1)  # [.., P], root first
        prod_new = prod_old[..., :-1] - pw_old[..., 1:] + pw_new[..., 1:]
        return pe_new, pw_new, prod_new

    def step(state, x):
        ctx_B, nxt_B, valid, update = x
        counts, log_pe, log_pw, log_prod = state
        path_BxP = path_CxP[ctx_B]
        cand = jnp.broadcast_to(jnp.arange(k), (b, k))
        _, pw_cand, _ = path_logs(state, path_BxP, cand)  # [B, k, P]
        pred = jnp.exp(pw_cand[..., 0] - log_pw[:, 0][:, None])
        pred = pred / jnp.sum(pred, axis=-1, keepdims=True)  # exact up to rounding
        pred = jnp.where(valid, pred, 1.0 / k)
        pe_new, pw_new, prod_new = path_logs(state, path_BxP, nxt_B)
        sel = update  # x_{t+1} is an input and has a full context
        counts = jnp.where(sel, counts.at[rows_B, path_BxP, nxt_B[:, None]].add(1.0), counts)
        log_pe = jnp.where(sel, log_pe.at[rows_B, path_BxP].set(pe_new), log_pe)
        log_pw = jnp.where(sel, log_pw.at[rows_B, path_BxP].set(pw_new), log_pw)
        log_prod = jnp.where(sel, log_prod.at[rows_B, path_BxP[:, :-1]].set(prod_new), log_prod)
        return (counts, log_pe, log_pw, log_prod), pred

    zeros = jnp.zeros((b, n), jnp.float32)
    state0 = (jnp.zeros((b, n, k), jnp.float32), zeros, zeros, zeros)
    xs = (ctx_BxT.T, nxt_BxT.T, valid_T, update_T)
    _, preds_TxBxK = jax.lax.scan(step, state0, xs)
    return jnp.moveaxis(preds_TxBxK, 0, 1)
