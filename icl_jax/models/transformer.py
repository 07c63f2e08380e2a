r"""A general decoder-only transformer in Flax NNX, used pure-functionally
(docs/models.md#fig-8-transformer-with-mlps).

:class:`Transformer` is a frozen, validated config with the library's model protocol:
``init(key) -> params`` (a plain nested dict whose top-level keys are the engine's
parameter groups), ``apply(params, tokens_BxT) -> logits_BxS`` at the last position,
``apply_all`` (every position), ``attention`` (maps per layer), ``loss`` and
``per_example_loss``. The network is an ``nnx.Module`` tree; ``apply`` merges the params
into its cached graphdef (``nnx.replace_by_pure_dict`` + ``nnx.merge``) inside the pure
function, so everything jits, vmaps over seeds and differentiates like a dict model.

Stream (width d): ``positions="absolute"`` x_i = wte[x_i] + wpe[i]; ``"relative"``
x_i = wte[x_i] and each head adds a learned bias b[h, i−j] to its scores;
``"disentangled"`` x_i = [e_{x_i}; e_i] (one-hots, d = S + T, nothing learned).
Attention (``attention_kind``), causal with the diagonal: ``"qk"`` per-head Q/K/V/O projections of head dim
d/H, scores scaled by 1/√(d/H); ``"bilinear"`` per head u_ij = x_iᵀ A_h x_j (unscaled) and
output Σ_h Σ_j s_hij x_j V_h. Blocks: ``"standard"`` x += attn(LN x); x += MLP(LN x);
``"composed"`` x += MLP(attn(LN x)) (Nichani Fig. 8: one residual, MLP on the attention
output). LN is pre-norm (plus a final LN) when ``layernorm``; the readout is W ∈ R^{d×S}
or, tied, wteᵀ.

Parameter layout (absent entries are left out)::

    {"wte": [S, d], "wpe": [T, d],
     "L1": {"ln1": {"scale", "bias"}, "attn": {...}, "ln2": {...},
            "mlp": {"fc1": {"w": [d, m], "b": [m]}, "fc2": {"w": [m, d], "b": [d]}}},
     …, "LL": {…}, "ln_f": {"scale": [d], "bias": [d]}, "W": [d, S]}

with ``attn`` = {"A": [H, d, d], "V": [H, d, d]} (bilinear) or {"q", "k", "v": [H, d, d/H],
"o": [H, d/H, d]} (qk), plus "rel": [H, T] (b[h, i−j]) for relative positions.

Initialisation: wte, wpe, W ~ N(0, 1/d); bilinear A ~ N(0, 1/d), V ~ N(0, 1/(H d)); q, k,
v, o ~ N(0, 1/d); rel = 0; LN scale 1, bias 0; MLP ``"standard"`` w ~ N(0, 1/in), b = 0;
``"mup"`` stored w ~ N(0, 1/out) multiplied by √(out/in) in the forward, stored b = 0
multiplied by √out. ``zero_scores`` zeroes A (bilinear) or q (qk), ``zero_mlp_out`` the
last MLP weight, ``zero_readout`` W. Keys: ``split(key, 2L + k)``; key 2l → layer l's
attention, 2l+1 → its MLP (split once more, one key per linear), and the k top-level
tensors drawn at random (wte, wpe, W, in this order) take the last k keys. A module that
draws n tensors uses its key directly if n = 1, else ``split(key, n)`` (V before A; q, k,
v, o). :func:`fig8_transformer` thus draws exactly what the plain-dict reference (tests/models/fig8_reference.py) draws (bit
for bit when both are compiled; ``init`` always is, and eager draws differ in the last ulp).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from icl_jax.losses import cross_entropy_logits, sequence_targets, targets
from icl_jax.models.interventions import Interventions
from icl_jax.models.protocol import MeanLoss
from icl_jax.models.tokens import check_tokens

__all__ = ["Transformer", "fig8_transformer"]

_CHOICES = {
    "positions": ("absolute", "relative", "disentangled"),
    "attention_kind": ("qk", "bilinear"),
    "block": ("standard", "composed"),
    "mlp_init": ("standard", "mup"),
}
_BOOLS = ("mlp", "layernorm", "tied_readout", "zero_scores", "zero_mlp_out", "zero_readout")


def _draw(key, n: int) -> list:
    """n keys for n random tensors: the key itself if n == 1, else split(key, n)."""
    return [key] if n == 1 else list(jax.random.split(key, n)) if n else []


def _normal(key, shape, fan: int, zero: bool = False) -> nnx.Param:
    """N(0, 1/fan) (or zeros), computed as normal / √fan like the plain-dict reference (tests/models/fig8_reference.py)."""
    if zero:
        return nnx.Param(jnp.zeros(shape, jnp.float32))
    return nnx.Param(jax.random.normal(key, shape, jnp.float32) / math.sqrt(fan))


def _lead(v: jax.Array, ndim: int) -> jax.Array:
    """Reshape a trailing-axis vector for broadcasting against an ndim array (rank-strict)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


@dataclasses.dataclass(frozen=True)
class Transformer(MeanLoss):
    """Static configuration of a decoder-only transformer (see the module docstring).

    Attributes:
      vocab_size: S >= 2.
      seq_len: T >= 2 (training and evaluation sequences have exactly T tokens).
      heads: heads per layer, e.g. ``(1, 1)``; the number of layers is ``len(heads)``.
      width: model width d (None: S + T; must be S + T for disentangled positions and a
        multiple of every layer's heads for qk attention).
      positions: "absolute", "relative" or "disentangled".
      attention_kind: "qk" or "bilinear" (named so as not to shadow :meth:`attention`).
      block: "standard" (two residuals) or "composed" (x + MLP(attn(x)), Nichani Fig. 8).
      mlp: whether blocks have a ReLU MLP [d, mlp_width, d].
      mlp_width: hidden width of the MLP (None: d).
      mlp_init: "standard" or "mup" (μP-style stored weights, see the module docstring).
      layernorm: pre-LN in every block plus a final LN before the readout.
      tied_readout: logits = x wteᵀ (not with disentangled positions or zero_readout).
      zero_scores, zero_mlp_out, zero_readout: zero-initialise A / q, the last MLP weight, W.

    Tokens must be integer ids in [0, S−1] of shape ``[B, T]``: checked eagerly when concrete
    (``ValueError``); inside ``jit`` the range check is skipped unless the call is wrapped by
    :func:`icl_jax.models.checked` (see :mod:`icl_jax.models.tokens`).
    """

    vocab_size: int
    seq_len: int
    heads: tuple[int, ...] = (1, 1)
    width: int | None = None
    positions: str = "absolute"
    attention_kind: str = "qk"
    block: str = "standard"
    mlp: bool = True
    mlp_width: int | None = None
    mlp_init: str = "standard"
    layernorm: bool = True
    tied_readout: bool = False
    zero_scores: bool = False
    zero_mlp_out: bool = False
    zero_readout: bool = False

    output = "logits"  # apply returns logits (the model protocol's tag), not a field

    def __post_init__(self):
        def integer(name, value, minimum):
            if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
            return int(value)

        object.__setattr__(self, "vocab_size", integer("vocab_size", self.vocab_size, 2))
        object.__setattr__(self, "seq_len", integer("seq_len", self.seq_len, 2))
        if isinstance(self.heads, (str, bytes)) or not hasattr(self.heads, "__iter__") or not len(self.heads):
            raise ValueError(f"heads must be a non-empty tuple of integers >= 1, one per layer (got {self.heads!r})")
        object.__setattr__(self, "heads", tuple(integer("heads", h, 1) for h in self.heads))
        for name in ("width", "mlp_width"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, integer(name, getattr(self, name), 1))
        for name, options in _CHOICES.items():
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options} (got {getattr(self, name)!r})")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool (got {getattr(self, name)!r})")
        if self.positions == "disentangled":
            if self.width not in (None, self.vocab_size + self.seq_len):
                raise ValueError(f"width must be None or S + T = {self.vocab_size + self.seq_len} with "
                                 f"positions='disentangled' (got {self.width})")
            if self.tied_readout:
                raise ValueError("tied_readout must be False with positions='disentangled' (no token embedding)")
        if self.tied_readout and self.zero_readout:
            raise ValueError("zero_readout must be False with tied_readout=True (the readout is wte)")
        if self.attention_kind == "qk" and any(self.d % h for h in self.heads):
            raise ValueError(f"width d = {self.d} must be a multiple of every layer's heads {self.heads} "
                             "with attention_kind='qk' (head dim d/H)")

    @property
    def d(self) -> int:
        """The model width (``width`` or S + T)."""
        return self.width if self.width is not None else self.vocab_size + self.seq_len

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    # ------------------------------------------------------------------ the protocol
    def init(self, key: jax.Array) -> dict:
        """Initial parameters (float32 plain nested dict) from a typed key; vmappable.

        Compiled once per config (eager random draws would compile one kernel per shape)."""
        return _init(self, key)

    def embed(self, params: dict, tokens_BxT: jax.Array) -> jax.Array:
        """The input stream x^(0), shape [B, T, d]."""
        return self._net(params).embed(self._check_tokens(tokens_BxT), _dtype(params))

    def apply_embedded(self, params: dict, x0_BxTxD: jax.Array, *, interventions=None) -> jax.Array:
        """Logits at every position, [B, T, S], from any continuous input stream of width d
        (:meth:`embed` for real tokens; used for causality checks)."""
        if x0_BxTxD.ndim != 3 or x0_BxTxD.shape[1:] != (self.seq_len, self.d):
            raise ValueError(f"x0_BxTxD must have shape [B, {self.seq_len}, {self.d}] (got {x0_BxTxD.shape})")
        return self._net(params)(x0_BxTxD, interventions=self._interventions(interventions))[0]

    def apply(self, params: dict, tokens_BxT: jax.Array, *, interventions=None) -> jax.Array:
        """Next-token logits at the last position, [B, S] (feed ``log_softmax`` to a loss).

        The last layer is evaluated at the query position only (the readout needs nothing
        else, so this is exact); equals ``apply_all(...)[:, -1]`` up to float rounding."""
        net = self._net(params)
        x = net.embed(self._check_tokens(tokens_BxT), _dtype(params))
        return net(x, last_only=True, interventions=self._interventions(interventions))[0][:, 0]

    def apply_all(self, params: dict, tokens_BxT: jax.Array, *, interventions=None) -> jax.Array:
        """Next-token logits at every position, [B, T, S] (row i sees tokens ≤ i)."""
        net = self._net(params)
        return net(net.embed(self._check_tokens(tokens_BxT), _dtype(params)),
                   interventions=self._interventions(interventions))[0]

    def attention(self, params: dict, tokens_BxT: jax.Array, *, interventions=None) -> list[jax.Array]:
        """Attention maps on real sequences, one [B, H, T, T] array per layer (row i is the
        causal softmax over keys j ≤ i, or a clamped head's fixed pattern)."""
        net = self._net(params)
        return net(net.embed(self._check_tokens(tokens_BxT), _dtype(params)),
                   interventions=self._interventions(interventions))[1]

    def per_example_loss(self, params: dict, batch, *, labels: str = "soft", interventions=None) -> jax.Array:
        """Cross-entropy at the last position, shape [B]: against ``batch.label_probs_BxS``
        (``labels="soft"``) or the one-hot of ``batch.label_B`` (``"hard"``). ``interventions``:
        heads to ablate or clamp (:class:`~icl_jax.models.interventions.Interventions`)."""
        logits = self.apply(params, batch.tokens_BxT, interventions=interventions)
        return cross_entropy_logits(logits, targets(batch, labels, self.vocab_size, logits.dtype))

    def per_position_loss(self, params: dict, batch, *, labels: str = "soft", interventions=None) -> jax.Array:
        """Cross-entropy at every position of a :class:`~icl_jax.tasks.sampling.SequenceBatch`,
        shape [B, T] (the peers' next-token loss; docs/peer-tasks.md#next-token-labels-at-every-position)."""
        logits = self.apply_all(params, batch.tokens_BxT, interventions=interventions)
        return cross_entropy_logits(logits, sequence_targets(batch, labels, self.vocab_size, logits.dtype))

    def sequence_loss(self, params: dict, batch, **kw) -> jax.Array:
        """Mean of :meth:`per_position_loss` (what the engine trains on every-position tasks)."""
        return jnp.mean(self.per_position_loss(params, batch, **kw))

    # ------------------------------------------------------------------ internals
    def _interventions(self, interventions):
        if interventions is None:
            return None
        if not isinstance(interventions, Interventions):
            raise ValueError(f"interventions must be an Interventions (got {type(interventions).__name__})")
        interventions.check(self.heads)
        return interventions

    def _check_tokens(self, tokens_BxT: jax.Array) -> jax.Array:
        return check_tokens(tokens_BxT, self.vocab_size, seq_len=self.seq_len)

    def _net(self, params: dict) -> _Net:
        """The module with ``params`` merged in (a fresh state; the cached one stays abstract)."""
        graphdef, abstract = _abstract(self)
        expected = jax.tree.map(lambda v: v.shape, nnx.to_pure_dict(abstract))
        try:
            got = jax.tree.map(lambda x: tuple(x.shape), params)
        except (AttributeError, TypeError):
            got = None
        if got != expected:
            raise ValueError(f"params must have the layout of Transformer.init for this config: expected "
                             f"shapes {expected}, got {got}")
        state = jax.tree.map(lambda v: v, abstract)  # fresh Variables, so the cache is never mutated
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state)


def _dtype(params: dict):
    return jax.tree.leaves(params)[0].dtype


@functools.partial(jax.jit, static_argnums=0)
def _init(cfg: Transformer, key: jax.Array) -> dict:
    return nnx.to_pure_dict(nnx.split(_Net(cfg, key), nnx.Param)[1])


@functools.lru_cache(maxsize=None)
def _abstract(cfg: Transformer):
    """(graphdef, abstract State of Params) of a config, built once by ``nnx.eval_shape``."""
    return nnx.split(nnx.eval_shape(lambda: _Net(cfg, jax.random.key(0))), nnx.Param)


def fig8_transformer(vocab_size: int, seq_len: int, num_layers: int = 2) -> Transformer:
    """Nichani et al. Fig. 8 (docs/models.md#fig-8-transformer-with-mlps): d = S + T, learned wte +
    wpe, one bilinear head per layer (A = 0, V ~ N(0, 1/d)), x ← x + MLP(attn(x; A) V) with a μP MLP
    [d, d, d] whose last weight is 0, no norms, untied zero readout W. Same forward, init draws and
    group names (wte, wpe, L1..LL, W) as the plain-dict reference; inside a layer A, V are [1, d, d] under
    ``attn`` and the MLP linears are ``mlp.fc1``, ``mlp.fc2`` (see the module docstring)."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1 (got {num_layers!r})")
    return Transformer(vocab_size, seq_len, heads=(1,) * num_layers, positions="absolute", attention_kind="bilinear",
                       block="composed", mlp=True, mlp_init="mup", layernorm=False, tied_readout=False,
                       zero_scores=True, zero_mlp_out=True, zero_readout=True)


# ---------------------------------------------------------------------- modules
class LayerNorm(nnx.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))

    def __call__(self, x):
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + self.eps) * _lead(self.scale[...], x.ndim) + _lead(self.bias[...], x.ndim)


class Linear(nnx.Module):
    """x @ w + b, or with ``mup`` x @ (w √(out/in)) + b √out (stored w ~ N(0, 1/out))."""

    def __init__(self, key, din: int, dout: int, mup: bool, zero: bool):
        self.mup = mup
        self.w = _normal(key, (din, dout), dout if mup else din, zero)
        self.b = nnx.Param(jnp.zeros((dout,), jnp.float32))

    def __call__(self, x):
        w, b = self.w[...], self.b[...]
        if self.mup:
            din, dout = w.shape
            w, b = w * math.sqrt(dout / din), b * math.sqrt(dout)
        return x @ w + _lead(b, x.ndim)


class MLP(nnx.Module):
    def __init__(self, cfg: Transformer, key):
        k1, k2 = jax.random.split(key)
        m, mup = cfg.mlp_width or cfg.d, cfg.mlp_init == "mup"
        self.fc1 = Linear(k1, cfg.d, m, mup, zero=False)
        self.fc2 = Linear(k2, m, cfg.d, mup, zero=cfg.zero_mlp_out)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.fc1(x)))


class Attention(nnx.Module):
    """Causal multi-head attention of queries (the last Q positions) over all T keys."""

    def __init__(self, cfg: Transformer, h: int, key):
        d, t = cfg.d, cfg.seq_len
        self.bilinear = cfg.attention_kind == "bilinear"
        if self.bilinear:
            keys = _draw(key, 1 if cfg.zero_scores else 2)
            self.V = _normal(keys[0], (h, d, d), h * d)
            self.A = _normal(keys[-1], (h, d, d), d, cfg.zero_scores)
        else:
            dh = d // h
            self.scale = 1.0 / math.sqrt(dh)
            keys = _draw(key, 3 if cfg.zero_scores else 4)
            self.q = _normal(keys[0], (h, d, dh), d, cfg.zero_scores)
            self.k, self.v = (_normal(k, (h, d, dh), d) for k in keys[-3:-1])
            self.o = _normal(keys[-1], (h, dh, d), d)
        self.rel = nnx.Param(jnp.zeros((h, t), jnp.float32)) if cfg.positions == "relative" else None

    def __call__(self, xq_BxQxD, x_BxTxD, gate_H=None, clamp=None):
        q, t = xq_BxQxD.shape[1], x_BxTxD.shape[1]
        i = jnp.arange(t - q, t)[:, None]  # query positions
        j = jnp.arange(t)[None, :]
        if self.bilinear:
            u = jnp.einsum("bid,hde,bje->bhij", xq_BxQxD, self.A[...], x_BxTxD)
        else:
            qh = jnp.einsum("bid,hde->bhie", xq_BxQxD, self.q[...])
            kh = jnp.einsum("bjd,hde->bhje", x_BxTxD, self.k[...])
            u = jnp.einsum("bhie,bhje->bhij", qh, kh) * self.scale
        if self.rel is not None:
            u = u + self.rel[...][:, jnp.clip(i - j, 0, t - 1)][None]
        s = jax.nn.softmax(jnp.where(jnp.broadcast_to(j <= i, u.shape), u, -jnp.inf), axis=-1)
        if clamp is not None:  # fixed patterns for the clamped heads (models/interventions.py)
            mask_H, pattern_HxQxT = clamp
            s = jnp.where(mask_H[None, :, None, None], pattern_HxQxT[None].astype(s.dtype), s)
        if self.bilinear:
            heads = jnp.einsum("bhij,bjd->bhid", s, x_BxTxD)
        else:
            heads = jnp.einsum("bhij,bhje->bhie", s, jnp.einsum("bjd,hde->bhje", x_BxTxD, self.v[...]))
        if gate_H is not None:  # ablated heads contribute nothing (models/interventions.py)
            heads = heads * gate_H[None, :, None, None].astype(heads.dtype)
        if self.bilinear:
            return jnp.einsum("bhid,hde->bie", heads, self.V[...]), s
        return jnp.einsum("bhie,hed->bid", heads, self.o[...]), s


class Block(nnx.Module):
    def __init__(self, cfg: Transformer, h: int, k_attn, k_mlp):
        self.composed = cfg.block == "composed"
        self.ln1 = LayerNorm(cfg.d) if cfg.layernorm else None
        self.attn = Attention(cfg, h, k_attn)
        self.ln2 = LayerNorm(cfg.d) if cfg.layernorm and cfg.mlp and not self.composed else None
        self.mlp = MLP(cfg, k_mlp) if cfg.mlp else None

    def __call__(self, x_BxTxD, last_only: bool = False, gate_H=None, clamp=None):
        hx = self.ln1(x_BxTxD) if self.ln1 is not None else x_BxTxD
        a, s = self.attn(hx[:, -1:] if last_only else hx, hx, gate_H, clamp)
        x = x_BxTxD[:, -1:] if last_only else x_BxTxD
        if self.mlp is None:
            return x + a, s
        if self.composed:
            return x + self.mlp(a), s
        x = x + a
        return x + self.mlp(self.ln2(x) if self.ln2 is not None else x), s


class _Net(nnx.Module):
    def __init__(self, cfg: Transformer, key):
        d, s, t, n = cfg.d, cfg.vocab_size, cfg.seq_len, cfg.num_layers
        self.cfg = cfg
        top = [name for name, on in (("wte", cfg.positions != "disentangled"), ("wpe", cfg.positions == "absolute"),
                                     ("W", not cfg.tied_readout and not cfg.zero_readout)) if on]
        keys = jax.random.split(key, 2 * n + len(top))
        top_keys = dict(zip(top, keys[2 * n:]))
        if "wte" in top_keys:
            self.wte = _normal(top_keys["wte"], (s, d), d)
        if "wpe" in top_keys:
            self.wpe = _normal(top_keys["wpe"], (t, d), d)
        for l, h in enumerate(cfg.heads):
            setattr(self, f"L{l + 1}", Block(cfg, h, keys[2 * l], keys[2 * l + 1]))
        self.ln_f = LayerNorm(d) if cfg.layernorm else None
        if not cfg.tied_readout:
            self.W = _normal(top_keys.get("W"), (d, s), d, cfg.zero_readout)

    def embed(self, tokens_BxT, dtype):
        cfg = self.cfg
        if cfg.positions == "disentangled":
            b, t = tokens_BxT.shape
            pos = jnp.broadcast_to(jnp.eye(t, dtype=dtype), (b, t, t))
            return jnp.concatenate([jax.nn.one_hot(tokens_BxT, cfg.vocab_size, dtype=dtype), pos], axis=-1)
        x = self.wte[...][tokens_BxT]
        return x + self.wpe[...][None] if cfg.positions == "absolute" else x

    def __call__(self, x_BxTxD, last_only: bool = False, interventions=None):
        """(logits [B, T or 1, S], attention maps) from the input stream."""
        maps = []
        n, t = self.cfg.num_layers, x_BxTxD.shape[1]
        for l in range(n):
            last = last_only and l == n - 1
            gate = clamp = None
            if interventions:
                h = self.cfg.heads[l]
                gate, clamp = interventions.gate(l + 1, h), interventions.clamps(l + 1, h, 1 if last else t, t)
            x_BxTxD, s = getattr(self, f"L{l + 1}")(x_BxTxD, last_only=last, gate_H=gate, clamp=clamp)
            maps.append(s)
        if self.ln_f is not None:
            x_BxTxD = self.ln_f(x_BxTxD)
        readout = self.wte[...].T if self.cfg.tied_readout else self.W[...]
        return x_BxTxD @ readout, maps
