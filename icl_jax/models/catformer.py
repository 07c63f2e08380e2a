r"""The disentangled transformer ("CatFormer") of Nichani, Damian & Lee (Nichani et al.;
docs/models.md#catformer).

Residual stream h_i^(0) = [e_{x_i}; e_i] ∈ R^{S+T}. Layer ℓ has m_ℓ heads, each a bilinear
score matrix A: u_ij = h_iᵀ A h_j for j ≤ i (the mask includes the diagonal), s = softmax_j u,
o_i = Σ_{j≤i} s_ij h_j; head outputs are *concatenated* to the stream,
h^(ℓ) = [h^(ℓ−1); o^(ℓ,1); …; o^(ℓ,m_ℓ)], so d_ℓ = (1 + m_ℓ) d_{ℓ−1}. Readout
logits = Wᵀ h^(L)_{T−1} at the last position. No scaling, values, biases, norms or MLPs.

Parameters are a plain dict ``{"A1": [m_1, d_0, d_0], …, "AL": [m_L, d_{L−1}, d_{L−1}],
"W": [d_L, S]}``: the top-level keys are the engine's parameter groups, and every shape
(S, T, heads) is read from the arrays.

:meth:`CatFormer.apply` computes only what the readout needs, exactly: layer 1 exploits the
one-hot embedding (scores from S-wide products, no d_0-wide matmuls), the last layer is
evaluated at the query position only (one row of attention instead of T), and a two-layer
model never builds its layer-1 stream: layer 2 reads each layer-1 attention map through two
matrix–vector products (:func:`_logits_two_layer`). It equals the naive full-attention design
of the official code (:mod:`icl_jax.models.reference`) up to float rounding, and the general
path of any depth in float64 (tested).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.losses import cross_entropy_logits, targets
from icl_jax.models.protocol import MeanLoss
from icl_jax.models.tokens import check_tokens
from icl_jax.tasks.graphs import CausalGraph, tree_from_dag_array

__all__ = ["CatFormer", "catformer_embed", "catformer_heads", "layer1_positional_attention", "stream_blocks"]


def _layer_names(num_layers: int) -> list[str]:
    return [f"A{l + 1}" for l in range(num_layers)]


_INITS = ("zero", "normal")


@dataclasses.dataclass(frozen=True)
class CatFormer(MeanLoss):
    """A disentangled transformer (Nichani et al.; docs/models.md#catformer), following the model protocol.

    Attributes:
      vocab_size: S >= 2.
      seq_len: T >= 2 (the positional one-hot has exactly T entries).
      heads: heads per layer, e.g. ``(1, 1)`` (single parent) or ``(2, 1)`` (multi-parent).
      init_dist: ``"zero"`` (single-parent recipe: uniform attention, uniform output) or
        ``"normal"`` (multi-parent recipe: every A ~ ``init_scale``·N(0, 1), W = 0, which
        breaks the symmetry between heads of one layer).
      init_scale: standard deviation of the normal init.

    ``apply`` returns **logits** ``[B, S]`` of the token after position T−1 (the query).
    Tokens must be integer ids in [0, S−1] of shape ``[B, T]``: checked eagerly when concrete
    (``ValueError``); inside ``jit`` the range check is skipped unless the call is wrapped by
    :func:`icl_jax.models.checked` (see :mod:`icl_jax.models.tokens`).
    """

    vocab_size: int
    seq_len: int
    heads: tuple[int, ...] = (1, 1)
    init_dist: str = "zero"
    init_scale: float = 1e-4

    output = "logits"

    def __post_init__(self):
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        if isinstance(self.vocab_size, bool) or int(self.vocab_size) != self.vocab_size or self.vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2 (got {self.vocab_size!r})")
        if isinstance(self.seq_len, bool) or int(self.seq_len) != self.seq_len or self.seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2 (got {self.seq_len!r})")
        if len(self.heads) < 1 or min(self.heads) < 1:
            raise ValueError(f"heads must list >= 1 head for each of >= 1 layers (got {self.heads!r})")
        if self.init_dist not in _INITS:
            raise ValueError(f"init_dist must be one of {_INITS} (got {self.init_dist!r})")
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be > 0 (got {self.init_scale!r})")

    @property
    def widths(self) -> tuple[int, ...]:
        """(d_0, …, d_L) with d_0 = S + T and d_ℓ = (1 + m_ℓ) d_{ℓ−1}."""
        d = [self.vocab_size + self.seq_len]
        for m in self.heads:
            d.append((1 + m) * d[-1])
        return tuple(d)

    @property
    def num_params(self) -> int:
        d = self.widths
        return sum(m * d[l] ** 2 for l, m in enumerate(self.heads)) + d[-1] * self.vocab_size

    def init(self, key: jax.Array | None = None, scale=None) -> dict:
        """Initial parameters. ``key`` is used by ``init_dist="normal"`` only; ``scale``
        overrides ``init_scale`` and may be a traced scalar (a swept init scale)."""
        d = self.widths
        names = _layer_names(len(self.heads))
        scale = self.init_scale if scale is None else scale
        if self.init_dist == "normal":
            if key is None:
                raise ValueError("key: init_dist='normal' needs a PRNG key")
            keys = jax.random.split(key, len(names))
        params = {}
        for l, (name, m) in enumerate(zip(names, self.heads)):
            shape = (m, d[l], d[l])
            params[name] = jnp.zeros(shape) if self.init_dist == "zero" else scale * jax.random.normal(keys[l], shape)
        params["W"] = jnp.zeros((d[-1], self.vocab_size))
        return params

    def apply(self, params: dict, tokens_BxT: jax.Array) -> jax.Array:
        """Next-token logits at the last position, ``[B, S]`` (efficient, exact forward)."""
        self._check_params(params)
        return _logits(params, check_tokens(tokens_BxT, self.vocab_size, seq_len=self.seq_len))

    def _check_params(self, params: dict) -> None:
        got = {k: tuple(v.shape) for k, v in params.items()} if isinstance(params, dict) else None
        want = _param_shapes(self)
        if got != want:
            raise ValueError(f"params: shapes {got} do not match this model's {want} (S={self.vocab_size}, T={self.seq_len}, heads={self.heads})")

    def per_example_loss(self, params: dict, batch, *, labels: str = "soft") -> jax.Array:
        """Cross-entropy of softmax(logits), ``[B]``; ``labels="soft"`` (the official target
        π(x_T, ·)) or ``"hard"`` (the sampled label)."""
        logits = self.apply(params, batch.tokens_BxT)
        return cross_entropy_logits(logits, targets(batch, labels, logits.shape[-1], logits.dtype))

    def attention(self, params: dict, tokens_BxT: jax.Array) -> list[jax.Array]:
        """Full attention of every layer on real sequences (token blocks included), one
        ``[B, H, T, T]`` array per layer (row i: causal softmax over j ≤ i)."""
        tokens_BxT = check_tokens(tokens_BxT, self.vocab_size, seq_len=self.seq_len)
        s, _ = _check_shapes(params, tokens_BxT)
        layers, w = _split(params)
        h = catformer_embed(tokens_BxT, s, w.dtype)
        maps = []
        for a in layers:
            h, attn = attend_all(h, a)
            maps.append(attn)
        return maps

    def positional_attention(self, params: dict) -> jax.Array:
        """Layer-1 position-block attention ``[H, T, T]`` (Figs. 2, 5 and 9)."""
        return layer1_positional_attention(params, self.vocab_size)

    def stream_blocks(self) -> list[tuple[str, int, int]]:
        """Named blocks of the final stream (see :func:`stream_blocks`)."""
        return stream_blocks(self.vocab_size, self.seq_len, self.heads)

    def reference_params(
        self, parents: CausalGraph | Sequence[int | None], c: float = 50.0, beta: float = 50.0, gamma: float = 1.0
    ) -> dict:
        """Hand-set two-layer weights that implement the count estimator (Nichani et al.;
        docs/models.md#reference-construction).

        Args:
          parents: a tree :class:`~icl_jax.tasks.graphs.CausalGraph` over the T−1 context
            positions, or its official dag array (−1 or None = root); the query is
            position T−1.
          c: layer-1 position block c·Adj (position i attends to p(i)); also the layer-2
            bias that removes roots and the query from the keys (their layer-1 token part
            is not a parent token).
          beta: layer-2 block (query token) × (key's layer-1 token part) = β·I.
          gamma: W reads the layer-2 raw-token block with γ·I.

        As c, β → ∞, logits/γ → the in-context empirical conditional N(x_T, ·)/N(x_T) over
        positions whose parent token equals the query token (when N(x_T) > 0).
        """
        try:
            graph = parents if isinstance(parents, CausalGraph) else tree_from_dag_array(parents)
            dag = graph.dag_array
        except ValueError as e:
            raise ValueError(f"parents: {e}") from None
        if self.heads != (1, 1) or len(dag) + 1 != self.seq_len:
            raise ValueError(
                f"parents: the reference construction needs heads=(1, 1) and len(parents) = seq_len − 1 = "
                f"{self.seq_len - 1} (got heads={self.heads}, len(parents)={len(dag)})"
            )
        s, t = self.vocab_size, self.seq_len
        d0 = s + t
        a1 = np.zeros((1, d0, d0), np.float32)
        for i, p in enumerate(dag):
            if p >= 0:
                a1[0, s + i, s + p] = c
        d1 = 2 * d0
        a2 = np.zeros((1, d1, d1), np.float32)
        a2[0, :s, d0 : d0 + s] = beta * np.eye(s)
        no_parent = [j for j, p in enumerate(dag) if p < 0] + [t - 1]
        a2[0, s + t - 1, [s + j for j in no_parent]] = -c
        w = np.zeros((2 * d1, s), np.float32)
        w[d1 : d1 + s] = gamma * np.eye(s)
        return {"A1": jnp.asarray(a1), "A2": jnp.asarray(a2), "W": jnp.asarray(w)}


@functools.lru_cache(maxsize=64)
def _param_shapes(model: CatFormer) -> dict:
    return {k: tuple(v.shape) for k, v in jax.eval_shape(model.init, jax.random.key(0)).items()}


def _split(params: dict) -> tuple[list[jax.Array], jax.Array]:
    names = _layer_names(len(params) - 1)
    if set(params) != {*names, "W"} or not names:
        raise ValueError(f"params must hold A1..AL and W (got keys {sorted(params, key=str)})")
    return [params[n] for n in names], params["W"]


def catformer_heads(params: dict) -> tuple[int, ...]:
    """Heads per layer, read from the parameter shapes."""
    return tuple(a.shape[0] for a in _split(params)[0])


def _check_shapes(params: dict, tokens_BxT: jax.Array) -> tuple[int, int]:
    layers, w = _split(params)
    if w.ndim != 2:
        raise ValueError(f"W must have shape [d_L, S] (got {w.shape})")
    s = w.shape[1]
    d0 = layers[0].shape[-1]
    t = d0 - s
    if tokens_BxT.ndim != 2 or tokens_BxT.shape[1] != t:
        raise ValueError(
            f"tokens_BxT must have shape [B, T] with T = d_0 − S = {d0} − {s} = {t} "
            f"(the positional one-hot width fixes T); got {tokens_BxT.shape}"
        )
    d = d0
    for l, a in enumerate(layers):
        if a.ndim != 3 or a.shape[1:] != (d, d):
            raise ValueError(f"A{l + 1} must have shape [heads, {d}, {d}] (got {a.shape})")
        d = (1 + a.shape[0]) * d
    if w.shape[0] != d:
        raise ValueError(f"W must have shape [{d}, S] for these layers (got {w.shape})")
    return s, t


def catformer_embed(tokens_BxT: jax.Array, vocab_size: int, dtype=jnp.float32) -> jax.Array:
    """h^(0) = [e_{x_i}; e_i] (token one-hot first, then position one-hot)."""
    b, t = tokens_BxT.shape
    tok = jax.nn.one_hot(tokens_BxT, vocab_size, dtype=dtype)
    pos = jnp.broadcast_to(jnp.eye(t, dtype=dtype), (b, t, t))
    return jnp.concatenate([tok, pos], axis=-1)


def _causal_softmax(u_BxHxQxK: jax.Array, offset: int = 0) -> jax.Array:
    """Softmax over keys j ≤ i (query i = row + offset); masked scores are −inf."""
    q, k = u_BxHxQxK.shape[-2:]
    mask = jnp.broadcast_to(jnp.arange(k)[None, :] <= (jnp.arange(q) + offset)[:, None], u_BxHxQxK.shape)
    return jax.nn.softmax(jnp.where(mask, u_BxHxQxK, -jnp.inf), axis=-1)


def attend_all(h_BxTxD: jax.Array, a_HxDxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One dense layer at every position; returns (new stream, attention)."""
    u = jnp.einsum("bid,hde,bje->bhij", h_BxTxD, a_HxDxD, h_BxTxD)
    s = _causal_softmax(u)
    o = jnp.einsum("bhij,bjd->bihd", s, h_BxTxD)
    b, t, d = h_BxTxD.shape
    return jnp.concatenate([h_BxTxD, o.reshape(b, t, -1)], axis=-1), s


def _layer1(a_HxDxD: jax.Array, tokens_BxT: jax.Array, s: int) -> tuple[jax.Array, jax.Array]:
    """Layer 1 on the one-hot embedding (exact): the attention of :func:`_layer1_attention` and
    the head outputs [Σ_j s_ij e_{x_j}; s_i·] (token part, position part), ``[B, T, H·d0]``."""
    b, t = tokens_BxT.shape
    onehot = jax.nn.one_hot(tokens_BxT, s, dtype=a_HxDxD.dtype)
    attn = _layer1_attention(a_HxDxD, onehot)  # [B, H, T, T]
    tok = jnp.einsum("bhij,bjs->bihs", attn, onehot)
    out = jnp.concatenate([tok, jnp.moveaxis(attn, 1, 2)], axis=-1)  # [B, T, H, d0]
    return out.reshape(b, t, -1), attn


def _layer1_attention(a_HxDxD: jax.Array, onehot_BxTxS: jax.Array) -> jax.Array:
    """Layer-1 attention ``[B, H, T, T]`` on the one-hot embedding, by small matmuls (exact).

    q_i = h_iᵀA = onehot(x_i)ᵀA[:S] + A[S+i] (one [B·T, S] × [S, d_0] matmul per head), and
    u_ij = q_i[x_j] + q_i[S+j] (a [T, S] × [S, T] product per sequence). Matmuls instead of row
    and element gathers: their gradients are matmuls too, where a gather's is a scatter-add that
    XLA:CPU runs element by element (2-3× slower per training step at the papers' sizes)."""
    s = onehot_BxTxS.shape[-1]
    q = jnp.einsum("bts,hsd->bhtd", onehot_BxTxS, a_HxDxD[:, :s, :]) + a_HxDxD[:, s:, :][None]
    u = jnp.einsum("bhis,bjs->bhij", q[..., :s], onehot_BxTxS) + q[..., s:]
    return _causal_softmax(u)


def _logits_two_layer(layers: list, w: jax.Array, tokens_BxT: jax.Array, s: int, t: int) -> jax.Array:
    """Next-token logits of a two-layer CatFormer without materialising the layer-1 stream.

    With h_j = [e_{x_j}; e_j; (tok_{j,h}; attn_h[j, ·])_h] and tok_{j,h} = Σ_k attn_h[j,k] e_{x_k},
    layer-2 head g at the query (q_g = A2_gᵀ h_{T−1}, split into blocks like h) scores

        u_g[j] = q_g,tok[x_j] + q_g,pos[j] + Σ_h Σ_k attn_h[j,k] v_{g,h}[k],
        v_{g,h}[k] = q_{g,h,tok}[x_k] + q_{g,h,pos}[k],

    and its output Σ_j σ_g[j] h_j has the blocks [Σ_j σ_g[j] e_{x_j}; σ_g; (Σ_k r_{g,h}[k] e_{x_k};
    r_{g,h})_h] with r_{g,h} = σ_gᵀ attn_h. So layer 2 costs two matrix–vector products with each
    layer-1 attention map per sequence instead of the [B, T, d_1] stream (exact: same sums,
    reassociated; tested against the general path and the naive design)."""
    a1, a2 = layers
    h1, h2 = a1.shape[0], a2.shape[0]
    b = tokens_BxT.shape[0]
    onehot = jax.nn.one_hot(tokens_BxT, s, dtype=w.dtype)  # [B, T, S]
    attn = _layer1_attention(a1, onehot)  # [B, H1, T, T]
    eye_t = jnp.eye(t, dtype=w.dtype)
    # the query's stream h_{T−1} = [e_x; e_{T−1}; (tok_{T−1,h}; attn_h[T−1, ·])_h]
    last = attn[:, :, -1, :]  # [B, H1, T]
    tok_last = jnp.einsum("bhk,bks->bhs", last, onehot)
    h_q = jnp.concatenate([onehot[:, -1], jnp.broadcast_to(eye_t[-1], (b, t)),
                           jnp.concatenate([tok_last, last], axis=-1).reshape(b, -1)], axis=-1)  # [B, d1]
    q = jnp.einsum("bd,gde->bge", h_q, a2)  # [B, H2, d1]
    q_tok, q_pos = q[..., :s], q[..., s : s + t]
    q_heads = q[..., s + t :].reshape(b, h2, h1, s + t)  # [B, H2, H1, S+T]
    v = jnp.einsum("bghs,bks->bghk", q_heads[..., :s], onehot) + q_heads[..., s:]  # [B, H2, H1, T]
    u = jnp.einsum("bgs,bjs->bgj", q_tok, onehot) + q_pos + jnp.einsum("bhjk,bghk->bgj", attn, v)
    sigma = jax.nn.softmax(u, axis=-1)  # [B, H2, T]: the query attends to every position
    r = jnp.einsum("bgj,bhjk->bghk", sigma, attn)  # [B, H2, H1, T]
    out_heads = jnp.concatenate([jnp.einsum("bghk,bks->bghs", r, onehot), r], axis=-1).reshape(b, h2, -1)
    o = jnp.concatenate([jnp.einsum("bgj,bjs->bgs", sigma, onehot), sigma, out_heads], axis=-1)  # [B, H2, d1]
    return jnp.concatenate([h_q, o.reshape(b, -1)], axis=-1) @ w


def _logits(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """Next-token logits at the last position (efficient, exact forward)."""
    s, t = _check_shapes(params, tokens_BxT)
    layers, w = _split(params)
    if len(layers) == 2:
        return _logits_two_layer(layers, w, tokens_BxT, s, t)
    return _logits_general(layers, w, tokens_BxT, s, t)


def _logits_general(layers: list, w: jax.Array, tokens_BxT: jax.Array, s: int, t: int) -> jax.Array:
    """Any depth: layer 1 on the one-hot embedding, the middle layers dense, the last at the query only."""
    dtype = w.dtype
    b = tokens_BxT.shape[0]
    h = catformer_embed(tokens_BxT, s, dtype)
    if len(layers) > 1:
        o1, _ = _layer1(layers[0], tokens_BxT, s)
        h = jnp.concatenate([h, o1], axis=-1)
        for a in layers[1:-1]:
            h, _ = attend_all(h, a)
    last = layers[-1]
    if len(layers) == 1:
        # single layer: its query-row attention straight from the one-hot gathers
        q_h = jnp.take(last, tokens_BxT[:, -1], axis=1) + last[:, s + t - 1][:, None]  # [H, B, d0]
        u = jnp.einsum("hbd,bjd->bhj", q_h, h)
    else:
        q_h = jnp.einsum("bd,hde->bhe", h[:, -1], last)
        u = jnp.einsum("bhe,bje->bhj", q_h, h)
    sigma = jax.nn.softmax(u, axis=-1)  # the query attends to every position j ≤ T−1
    o = jnp.einsum("bhj,bjd->bhd", sigma, h).reshape(b, -1)
    return jnp.concatenate([h[:, -1], o], axis=-1) @ w


def layer1_positional_attention(params: dict, vocab_size: int | None = None) -> jax.Array:
    """Causally masked softmax of the position×position block of every layer-1 head,
    [H, T, T] (the quantity of Figs. 2, 5 and 9; token blocks ignored)."""
    a = params["A1"]
    s = params["W"].shape[1] if vocab_size is None else vocab_size
    return _causal_softmax(a[:, s:, s:])


def stream_blocks(vocab_size: int, seq_len: int, heads: Sequence[int]) -> list[tuple[str, int, int]]:
    """Named [start, stop) blocks of the final stream h^(L) (docs/models.md#stream-index-map), e.g.
    ``("L2h0 token", 60, 70)`` = layer-2 head-0 average of raw tokens."""
    blocks = [("token", 0, vocab_size), ("position", vocab_size, vocab_size + seq_len)]
    for l, m in enumerate(heads):
        width = blocks[-1][2]
        prev = list(blocks)
        for h in range(m):
            off = width * (h + 1)
            blocks += [(f"L{l + 1}h{h} {name}", a + off, b + off) for name, a, b in prev]
    return blocks
