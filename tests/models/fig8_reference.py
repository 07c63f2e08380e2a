r"""Reference for tests only: the plain-dict implementation of Nichani, Damian & Lee's Fig. 8
transformer that preceded the Flax NNX :class:`icl_jax.models.Transformer`. The library's
Fig. 8 model is :func:`icl_jax.models.fig8_transformer`; this file is the independent second
implementation it is checked against (logits, attention, gradients in float64; init bit for bit).

Width d = S + T. Learned embeddings are *added*: x_i = wte[x_i] + wpe[i] ∈ R^d. Each of the
L layers has one bilinear score matrix A ∈ R^{d×d}, a value matrix V ∈ R^{d×d} and a ReLU MLP
of widths [d, d, d]:

    attn(x; A)_i = Σ_{j≤i} softmax_j(x_iᵀ A x_j) x_j        (mask includes the diagonal)
    x ← x + MLP(attn(x; A) V)                                (no norms, no separate MLP residual)

Readout logits = Wᵀ x_{T−1} at the last position (W ∈ R^{d×S}, no bias).

The MLP linears are μP-style: the stored weight w ∈ R^{in×out} is drawn N(0, 1/out) and
multiplied by √(out/in) in the forward (effective N(0, 1/in)); the stored bias is 0 and is
multiplied by √out. The last linear of every MLP is zero-initialised, as are A and W, so
the initial output is uniform.

Parameters are a plain dict (top-level keys are the engine's parameter groups)::

    {"wte": [S, d], "wpe": [T, d],
     "L1": {"A": [d, d], "V": [d, d], "mlp": [{"w": [d, d], "b": [d]}, {"w": [d, d], "b": [d]}]},
     …, "LL": {…},
     "W": [d, S]}

Two forwards, equal up to float rounding (tested): :func:`mlp_transformer_logits` evaluates
the last layer at the query position only (the readout needs nothing else, so this is
exact); :func:`mlp_transformer_stream` is the naive all-positions design and also accepts
continuous embeddings (causality tests).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = [
    "MLPTransformer",
    "mlp_transformer_init",
    "mlp_transformer_embed",
    "mlp_transformer_stream",
    "mlp_transformer_logits",
    "mlp_transformer_logits_naive",
    "mlp_transformer_attention",
]


def _layer_names(num_layers: int) -> list[str]:
    return [f"L{l + 1}" for l in range(num_layers)]


@dataclasses.dataclass(frozen=True)
class MLPTransformer:
    """Static shape of the Fig. 8 transformer (docs/models.md#fig-8-transformer-with-mlps).

    Attributes:
      vocab_size: S >= 2.
      seq_len: T >= 2.
      num_layers: L >= 1 (one head per layer; the official model has V ∈ R^{d×d}).
    """

    vocab_size: int
    seq_len: int
    num_layers: int = 2

    def __post_init__(self):
        for name, minimum in (("vocab_size", 2), ("seq_len", 2), ("num_layers", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
            object.__setattr__(self, name, int(value))

    @property
    def width(self) -> int:
        """d = S + T."""
        return self.vocab_size + self.seq_len

    @property
    def mlp_widths(self) -> tuple[int, ...]:
        """Widths of every layer's MLP, [d, d, d] (two linears, ReLU between)."""
        return (self.width,) * 3

    @property
    def num_params(self) -> int:
        d, s, t = self.width, self.vocab_size, self.seq_len
        w = self.mlp_widths
        mlp = sum(a * b + b for a, b in zip(w[:-1], w[1:]))
        return (s + t) * d + self.num_layers * (2 * d * d + mlp) + d * s


def mlp_transformer_init(key: jax.Array, model: MLPTransformer, dtype=jnp.float32) -> dict:
    """Initial parameters (docs/models.md#fig-8-transformer-with-mlps).

    ``split(key, 2L + 2)``: key 2i → V of layer i+1, key 2i+1 → its MLP (split once more, one
    key per linear), key −2 → wte, key −1 → wpe. wte, wpe, V ~ N(0, 1/d); A = 0; MLP stored
    weights N(0, 1/out), biases 0, the last linear's weight 0; W = 0.
    """
    d, s, t, n = model.width, model.vocab_size, model.seq_len, model.num_layers
    keys = jax.random.split(key, 2 * n + 2)
    widths = model.mlp_widths
    params = {
        "wte": jax.random.normal(keys[-2], (s, d), dtype) / math.sqrt(d),
        "wpe": jax.random.normal(keys[-1], (t, d), dtype) / math.sqrt(d),
    }
    for l, name in enumerate(_layer_names(n)):
        mlp_keys = jax.random.split(keys[2 * l + 1], len(widths) - 1)
        mlp = []
        for k, (din, dout) in enumerate(zip(widths[:-1], widths[1:])):
            if k == len(widths) - 2:
                w = jnp.zeros((din, dout), dtype)
            else:
                w = jax.random.normal(mlp_keys[k], (din, dout), dtype) / math.sqrt(dout)
            mlp.append({"w": w, "b": jnp.zeros((dout,), dtype)})
        params[name] = {
            "A": jnp.zeros((d, d), dtype),
            "V": jax.random.normal(keys[2 * l], (d, d), dtype) / math.sqrt(d),
            "mlp": mlp,
        }
    params["W"] = jnp.zeros((d, s), dtype)
    return params


def _split(params: dict) -> tuple[list[dict], jax.Array]:
    if not isinstance(params, dict) or not {"wte", "wpe", "W"} <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must hold wte, wpe, L1..LL and W (got {got})")
    names = [k for k in params if k not in ("wte", "wpe", "W")]
    expected = _layer_names(len(names))
    if not names or sorted(names) != sorted(expected):
        raise ValueError(f"params must hold layers L1..LL besides wte, wpe, W (got {sorted(params)})")
    return [params[n] for n in expected], params["W"]


def _check_shapes(params: dict, tokens_BxT: jax.Array | None = None) -> tuple[int, int, int]:
    layers, w = _split(params)
    wte, wpe = params["wte"], params["wpe"]
    if wte.ndim != 2:
        raise ValueError(f"params['wte'] must have shape [S, d] (got {wte.shape})")
    s, d = wte.shape
    if wpe.ndim != 2 or wpe.shape[1] != d:
        raise ValueError(f"params['wpe'] must have shape [T, {d}] (got {wpe.shape})")
    t = wpe.shape[0]
    for l, layer in enumerate(layers):
        name = f"L{l + 1}"
        if not isinstance(layer, dict) or set(layer) != {"A", "V", "mlp"}:
            raise ValueError(f"params['{name}'] must be a dict with keys A, V, mlp")
        for key in ("A", "V"):
            if layer[key].shape != (d, d):
                raise ValueError(f"params['{name}']['{key}'] must have shape [{d}, {d}] (got {layer[key].shape})")
        width = d
        for k, lin in enumerate(layer["mlp"]):
            wk, bk = lin["w"], lin["b"]
            if wk.ndim != 2 or wk.shape[0] != width or bk.shape != wk.shape[1:]:
                raise ValueError(
                    f"params['{name}']['mlp'][{k}] must have w [{width}, out] and b [out] "
                    f"(got {wk.shape}, {bk.shape})"
                )
            width = wk.shape[1]
        if not layer["mlp"] or width != d:
            raise ValueError(f"params['{name}']['mlp'] must map width {d} back to {d}")
    if w.shape != (d, s):
        raise ValueError(f"params['W'] must have shape [{d}, {s}] (got {w.shape})")
    if tokens_BxT is not None and (tokens_BxT.ndim != 2 or tokens_BxT.shape[1] != t):
        raise ValueError(f"tokens_BxT must have shape [B, {t}] to match params['wpe'] (got {tokens_BxT.shape})")
    return s, t, d


def _mlp(mlp: list[dict], x: jax.Array) -> jax.Array:
    """ReLU MLP of μP-style linears: x @ (w·√(out/in)) + b·√out, ReLU between linears."""
    lead = (1,) * (x.ndim - 1)
    for k, lin in enumerate(mlp):
        din, dout = lin["w"].shape
        x = x @ (lin["w"] * math.sqrt(dout / din)) + (lin["b"] * math.sqrt(dout)).reshape(lead + (dout,))
        if k < len(mlp) - 1:
            x = jax.nn.relu(x)
    return x


def _attend_all(layer: dict, x_BxTxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One layer at every position: (x + MLP(attn(x; A) V), attention [B, T, T])."""
    t = x_BxTxD.shape[1]
    u = jnp.einsum("bid,de,bje->bij", x_BxTxD, layer["A"], x_BxTxD)
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), u.shape)
    attn = jax.nn.softmax(jnp.where(mask, u, -jnp.inf), axis=-1)
    o = jnp.einsum("bij,bjd->bid", attn, x_BxTxD) @ layer["V"]
    return x_BxTxD + _mlp(layer["mlp"], o), attn


def mlp_transformer_embed(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """x^(0)_i = wte[x_i] + wpe[i], shape [B, T, d]."""
    _check_shapes(params, tokens_BxT)
    return params["wte"][tokens_BxT] + params["wpe"][None]


def mlp_transformer_stream(params: dict, x0_BxTxD: jax.Array) -> jax.Array:
    """Naive forward: the residual stream after the last layer at every position.

    ``x0_BxTxD`` is any embedding of width d (usually :func:`mlp_transformer_embed`)."""
    _, t, d = _check_shapes(params)
    if x0_BxTxD.ndim != 3 or x0_BxTxD.shape[1:] != (t, d):
        raise ValueError(f"x0_BxTxD must have shape [B, {t}, {d}] (got {x0_BxTxD.shape})")
    layers, _ = _split(params)
    x = x0_BxTxD
    for layer in layers:
        x, _ = _attend_all(layer, x)
    return x


def mlp_transformer_logits_naive(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """Logits Wᵀ x_{T−1} through :func:`mlp_transformer_stream` (reference forward)."""
    x = mlp_transformer_stream(params, mlp_transformer_embed(params, tokens_BxT))
    return x[:, -1] @ params["W"]


def mlp_transformer_logits(params: dict, tokens_BxT: jax.Array) -> jax.Array:
    """Next-token logits at the last position, [B, S] (efficient, exact forward).

    Every layer but the last runs at all positions; the last runs at the query position
    only (its other outputs never reach the readout). Feed ``jax.nn.log_softmax`` of these
    to the loss."""
    layers, w = _split(params)
    x = mlp_transformer_embed(params, tokens_BxT)
    for layer in layers[:-1]:
        x, _ = _attend_all(layer, x)
    last = layers[-1]
    q_BxD = x[:, -1]
    sigma_BxT = jax.nn.softmax(jnp.einsum("bd,de,bje->bj", q_BxD, last["A"], x), axis=-1)  # all j ≤ T−1
    o_BxD = jnp.einsum("bj,bjd->bd", sigma_BxT, x) @ last["V"]
    return (q_BxD + _mlp(last["mlp"], o_BxD)) @ w


def mlp_transformer_attention(params: dict, tokens_BxT: jax.Array) -> list[jax.Array]:
    """Attention of every layer on real sequences, one [B, T, T] array per layer (row i is
    the causal softmax over j ≤ i). Fig. 8 plots layer 1 averaged over a batch."""
    layers, _ = _split(params)
    x = mlp_transformer_embed(params, tokens_BxT)
    maps = []
    for layer in layers:
        x, attn = _attend_all(layer, x)
        maps.append(attn)
    return maps
