r"""Chen, Sheen, Wang & Yang's two-attention-layer induction-head model (spec §3).

Layer 1, the **copier** (§3.1): H heads of relative-positional softmax attention. Head h at
position i mixes the earlier tokens x̃_{i−k} over the offsets k of its window with weights
softmax_k(w^{(h)}_k) (content-independent in the simplified model), and the output is
rescaled to unit norm (zero stays zero). The query slot L+1 holds the all-zero token, so
there offset k copies x_{L+1−k}: the target's parents.

The **selector** (§3.2, FFN with normalisation) and layer 2, the **classifier** (§3.3):
feature map φ(U) = (c_S ⊗_{h∈S} v^{(h)})_{|S|≤D}, so the query–key similarity is

.. math:: \mathrm{sim}(q, l) = \frac{\sum_S c_S^2 \prod_{h∈S} ⟨v_q^{(h)}, v_l^{(h)}⟩_+}{\sum_S c_S^2},

and the output is ŷ = Σ_l softmax_l(a·sim(q, l)) x_l ∈ Δ_d (values are the raw one-hot
tokens). Products are exact (``where(in S, ip, 1)``), not the official exp(Σ log(ip + 1e−24)).

Parameters are a dict whose top-level keys are the engine's groups (the official
``--train-cmd`` letters): ``"W"`` RPE logits ``[K, H]`` (row k−1 = offset k; only the live
rows 1..max offset are allocated), ``"C"`` selector coefficients ``[n_subsets]``, ``"a"``
the classifier scale. The full model of Appendix B (§3.5) adds ``"Q"``, ``"K"``, ``"OV"``
(``[H, d, d]``) and the shared LayerNorm ``"ln_scale"``, ``"ln_bias"`` (``[d]``).

Two forwards of layer 1, equal up to float rounding (tested):

* :func:`copier_features` — banded: one gather of the K shifted copies of X̃ and a masked
  softmax over a K×H logit table per position, O(B·L·H·K·d), never an (L+1)×(L+1) matrix;
* :func:`copier_features_dense` — the official design: a dense (L+1)×(L+1) RPE matrix per
  head, masked and softmaxed row by row, then a matmul with X̃.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.losses import cross_entropy_probs, official_double_softmax_ce
from icl_jax.models.induction_stats import WindowStats, stats_per_example_loss

__all__ = [
    "InductionModel",
    "induction_init",
    "induction_probs",
    "induction_loss",
    "induction_per_example_loss",
    "copier_features",
    "copier_features_dense",
    "copier_attention",
    "selector_similarity",
    "subset_shares",
    "LOSSES",
    "DEFAULT_LOSS_EPS",
]

LOSSES = ("prob_ce", "official")
# ε of the true cross-entropy: the output is scored as (ŷ + ε)/(1 + dε). ŷ_y is exactly 0
# when the target never occurs in the context (values are one-hot tokens), so without a
# floor the loss is +inf on a small fraction of sequences (spec §4). The same floor scores
# the hard-count / GIH baselines (icl_jax.tasks.baselines.HARD_ESTIMATOR_EPS).
DEFAULT_LOSS_EPS = 1e-3


@dataclasses.dataclass(frozen=True)
class InductionModel:
    """Static configuration of the copier / selector / classifier model (spec §3).

    Attributes:
      vocab_size: d >= 2.
      num_heads: H >= 1 copier heads.
      max_degree: D, the largest head subset the selector builds (0 <= D <= H).
      window: ``"paper"`` (every head sees offsets 1..M) or ``"official"`` (head h sees
        offsets h..h+H−1, the official code's shifted window; M = H).
      window_size: M for ``window="paper"`` (default H).
      include_raw: also build the official code's subsets that contain the raw-token
        component 0. Its query value is the zero token, so their kernel is exactly 0; they
        only add c_S² to the normaliser Σ c_S² (spec §3.2).
      relu: ReLU on each head's inner product (official; matters for the full model only).
      full: the Appendix-B model (§3.5): content Q_hK_hᵀ logits, OV_h after attention.
      self_offset: let layer 1 attend to offset 0 with the fixed logit ``self_logit``
        (default: on for the full model, as in the official code; it leaks x_l into
        position l's own features).
      norm: ``"unit"`` (v/(‖v‖ + norm_eps), the simplified model) or ``"layernorm"``
        (centred LayerNorm over d with γ, β shared across heads, eps ``ln_eps``; the full
        model's default).
      self_logit, norm_eps, ln_eps: the official hard-coded constants 1e−6, 1e−7, 1e−5.
    """

    vocab_size: int
    num_heads: int = 3
    max_degree: int = 2
    window: Literal["paper", "official"] = "paper"
    window_size: int | None = None
    include_raw: bool = False
    relu: bool = True
    full: bool = False
    self_offset: bool | None = None
    norm: Literal["unit", "layernorm"] | None = None
    self_logit: float = 1e-6
    norm_eps: float = 1e-7
    ln_eps: float = 1e-5

    def __post_init__(self):
        def integer(name, lo):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo} (got {v!r})")

        integer("vocab_size", 2)
        integer("num_heads", 1)
        if not isinstance(self.max_degree, (int, np.integer)) or not 0 <= self.max_degree <= self.num_heads:
            raise ValueError(f"max_degree must be an integer in [0, num_heads={self.num_heads}] (got {self.max_degree!r})")
        if self.window not in ("paper", "official"):
            raise ValueError(f"window must be 'paper' or 'official' (got {self.window!r})")
        if self.window_size is not None:
            integer("window_size", 1)
            if self.window == "official" and self.window_size != self.num_heads:
                raise ValueError(
                    f"window_size: the official window has M = num_heads = {self.num_heads} (got {self.window_size})"
                )
        if self.norm not in (None, "unit", "layernorm"):
            raise ValueError(f"norm must be 'unit' or 'layernorm' (got {self.norm!r})")
        for name in ("norm_eps", "ln_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)!r})")

    # -- derived static structure -------------------------------------------------------
    @property
    def use_self_offset(self) -> bool:
        return self.full if self.self_offset is None else bool(self.self_offset)

    @property
    def norm_kind(self) -> str:
        return self.norm or ("layernorm" if self.full else "unit")

    @property
    def max_offset(self) -> int:
        """Rows of W: M (paper window) or 2H − 1 (official window)."""
        if self.window == "official":
            return 2 * self.num_heads - 1
        return self.window_size or self.num_heads

    def head_offsets(self, h: int) -> tuple[int, ...]:
        """Offsets seen by head h (1-indexed), excluding the self offset."""
        if self.window == "official":
            return tuple(range(h, h + self.num_heads))
        return tuple(range(1, self.max_offset + 1))

    def window_mask(self) -> np.ndarray:
        """``bool[K, H]``: row k−1 is offset k, column h−1 head h (spec §3.1)."""
        mask = np.zeros((self.max_offset, self.num_heads), bool)
        for h in range(1, self.num_heads + 1):
            mask[[k - 1 for k in self.head_offsets(h)], h - 1] = True
        return mask

    def subsets(self) -> tuple[tuple[int, ...], ...]:
        """Selector subsets, each a tuple of components (0 = raw token, h = head h), in the
        official lexicographic order of their 0/1 vectors ('000', '001', '010', ...)."""
        comps = ([0] if self.include_raw else []) + list(range(1, self.num_heads + 1))
        out = []
        for bits in itertools.product((0, 1), repeat=len(comps)):
            if sum(bits) <= self.max_degree:
                out.append(tuple(c for c, b in zip(comps, bits) if b))
        return tuple(out)

    def subset_labels(self) -> tuple[str, ...]:
        """Official labels: one digit per head (and a leading raw digit with include_raw);
        '110' = heads {1, 2}."""
        comps = ([0] if self.include_raw else []) + list(range(1, self.num_heads + 1))
        return tuple("".join("1" if c in s else "0" for c in comps) for s in self.subsets())

    def live_subsets(self) -> np.ndarray:
        """``bool[n_subsets]``: subsets without the raw component (the others have kernel 0)."""
        return np.array([0 not in s for s in self.subsets()])

    def subset_mask(self) -> np.ndarray:
        """``float[n_subsets, H+1]``: column 0 the raw component, column h head h."""
        subs = self.subsets()
        m = np.zeros((len(subs), self.num_heads + 1), np.float32)
        for i, s in enumerate(subs):
            m[i, list(s)] = 1.0
        return m

    @property
    def num_subsets(self) -> int:
        return len(self.subsets())


def induction_init(
    model: InductionModel,
    *,
    w_plus=3.0,
    w_minus=0.1,
    c_init=0.01,
    a_init=0.01,
    proj_init=0.001,
    dtype=jnp.float32,
) -> dict:
    """Deterministic official initialisation (spec §3.1, §3.4, §3.5).

    W = w_− everywhere and w_+ on (offset h, head h); every c_S = c_init; a = a_init. The
    full model adds Q_h = K_h = OV_h = proj_init·I and LayerNorm γ = 1, β = 0. Every value
    may be a traced scalar (vmapped init scales). Official values: simplified w_+ = 3,
    w_− = 0.1; full w_+ = 1, w_− = 0.01, proj_init = 0.001; c_init = a_init = 0.01."""
    k, h, d = model.max_offset, model.num_heads, model.vocab_size
    diag = np.zeros((k, h), bool)
    diag[np.arange(min(k, h)), np.arange(min(k, h))] = True
    w = jnp.where(jnp.asarray(diag), jnp.asarray(w_plus, dtype), jnp.asarray(w_minus, dtype))
    params = {
        "W": w,
        "C": jnp.full((model.num_subsets,), c_init, dtype),
        "a": jnp.asarray(a_init, dtype),
    }
    if model.full:
        eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), (h, d, d)) * jnp.asarray(proj_init, dtype)
        params.update({"Q": eye, "K": eye, "OV": eye, "ln_scale": jnp.ones((d,), dtype), "ln_bias": jnp.zeros((d,), dtype)})
    return params


# ----------------------------------------------------------------------------- layer 1
def _offsets_and_mask(model: InductionModel):
    """Offsets (0 first when the self offset is on) and the ``bool[K', H]`` window mask."""
    mask = model.window_mask()
    offsets = np.arange(1, model.max_offset + 1)
    if model.use_self_offset:
        offsets = np.concatenate([[0], offsets])
        mask = np.concatenate([np.ones((1, model.num_heads), bool), mask])
    return offsets, mask


def _rpe_logits(params, model: InductionModel) -> jax.Array:
    """``[K', H]`` RPE logits, the fixed self logit first when the self offset is on."""
    w = params["W"]
    if model.use_self_offset:
        w = jnp.concatenate([jnp.full((1, model.num_heads), model.self_logit, w.dtype), w])
    return w


def _padded_onehot(tokens_BxL, d: int, dtype) -> jax.Array:
    """X̃ ``[B, L+1, d]``: one-hot tokens and the all-zero query slot."""
    x = jax.nn.one_hot(tokens_BxL, d, dtype=dtype)
    return jnp.pad(x, ((0, 0), (0, 1), (0, 0)))


def _normalise(u_BxIxHxd, params, model: InductionModel) -> jax.Array:
    if model.norm_kind == "unit":
        # NaN-safe norm: u = 0 (no valid offset) must give v = 0 and a finite gradient
        n2 = jnp.sum(jnp.square(u_BxIxHxd), axis=-1, keepdims=True)
        norm = jnp.where(n2 > 0, jnp.sqrt(jnp.where(n2 > 0, n2, 1.0)), 0.0)
        return u_BxIxHxd / (norm + model.norm_eps)
    mean = jnp.mean(u_BxIxHxd, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(u_BxIxHxd - mean), axis=-1, keepdims=True)
    scale, bias = params["ln_scale"][None, None, None, :], params["ln_bias"][None, None, None, :]
    return (u_BxIxHxd - mean) * jax.lax.rsqrt(var + model.ln_eps) * scale + bias


def _masked_softmax(logits, valid, axis):
    """Softmax over ``axis`` restricted to ``valid``; rows with no valid entry give 0
    (the official code turns that NaN row into zeros)."""
    neg = jnp.where(valid, logits, -jnp.inf)
    peak = jnp.max(neg, axis=axis, keepdims=True)
    e = jnp.where(valid, jnp.exp(neg - jnp.where(jnp.isfinite(peak), peak, 0.0)), 0.0)
    total = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def copier_attention(params, model: InductionModel, seq_len: int) -> jax.Array:
    """Content-free attention ``[L+1, K', H]`` of the simplified copier: weight of offset
    ``offsets[k]`` for head h at position i (0-indexed; row L is the query slot). For the
    full model this is the RPE part only (the content logits are added per sequence)."""
    offsets, mask = _offsets_and_mask(model)
    pos = np.arange(seq_len + 1)
    valid = (pos[:, None] - offsets[None, :] >= 0)[:, :, None] & mask[None]  # [L+1, K', H]
    logits = jnp.broadcast_to(_rpe_logits(params, model)[None], valid.shape)
    return _masked_softmax(logits, jnp.asarray(valid), axis=1)


def _shift(x_BxIxd, k: int) -> jax.Array:
    """X̃_{i−k} for every position i (zero rows where i − k < 1): a static pad and slice."""
    if k == 0:
        return x_BxIxd
    return jnp.pad(x_BxIxd, ((0, 0), (k, 0), (0, 0)))[:, : x_BxIxd.shape[1]]


def copier_features(params, tokens_BxL: jax.Array, model: InductionModel) -> jax.Array:
    """Layer-1 head outputs after normalisation, ``v [B, L+1, H, d]`` (banded, spec §3.1).

    Each offset k contributes attn[i, k, h]·X̃_{i−k}: K' shifted copies (static pad and
    slice) weighted by a masked softmax over the ``[L+1, K', H]`` logit table, which in the
    simplified model is content-free and shared by the batch; the full model adds content
    logits x̃_iᵀ Q_h K_hᵀ x̃_{i−k} per sequence. Cost O(B·L·H·K'·d), fused elementwise ops
    (a dot_general with the position as batch axis is ~10× slower on CPU)."""
    d = model.vocab_size
    dtype = params["W"].dtype
    x = _padded_onehot(tokens_BxL, d, dtype)  # [B, L+1, d]
    n = x.shape[1]
    offsets, mask = _offsets_and_mask(model)
    shifted = [_shift(x, int(k)) for k in offsets]  # K' × [B, L+1, d]
    valid = (np.arange(n)[:, None] - offsets[None, :] >= 0)[:, :, None] & mask[None]  # [L+1, K', H]
    rpe = _rpe_logits(params, model)
    if model.full:
        qk = jnp.einsum("hde,hfe->hdf", params["Q"], params["K"])  # Q_h K_hᵀ
        q = jnp.einsum("bid,hdf->bihf", x, qk)  # [B, L+1, H, d]
        content = jnp.stack([jnp.sum(q * s[:, :, None, :], axis=-1) for s in shifted], axis=2)  # [B, L+1, K', H]
        attn = _masked_softmax(content + rpe[None, None], jnp.asarray(valid)[None], axis=2)
    else:
        attn = _masked_softmax(jnp.broadcast_to(rpe[None], valid.shape), jnp.asarray(valid), axis=1)[None]
    u = sum(attn[:, :, k, :, None] * s[:, :, None, :] for k, s in enumerate(shifted))  # [B, L+1, H, d]
    if model.full:
        u = jnp.einsum("bihd,hde->bihe", u, params["OV"])
    return _normalise(u, params, model)


def copier_features_dense(params, tokens_BxL: jax.Array, model: InductionModel) -> jax.Array:
    """Reference layer 1 in the official design: per head a dense ``[L+1, L+1]`` matrix of
    RPE logits w_{i−j} (plus content logits for the full model), masked to the window,
    softmaxed per row and multiplied with X̃. O(B·H·L²·d); for tests and benchmarks."""
    d = model.vocab_size
    dtype = params["W"].dtype
    x = _padded_onehot(tokens_BxL, d, dtype)
    n = x.shape[1]
    offsets, mask = _offsets_and_mask(model)
    rpe = _rpe_logits(params, model)  # [K', H]
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]  # i − j
    slot = np.full((n, n), -1)
    for k, o in enumerate(offsets):
        slot[lag == o] = k
    valid = (slot >= 0)[:, :, None] & mask[np.maximum(slot, 0)]  # [L+1, L+1, H]
    logits = rpe[np.maximum(slot, 0)]  # [L+1, L+1, H]
    if model.full:
        qk = jnp.einsum("hde,hfe->hdf", params["Q"], params["K"])
        content = jnp.einsum("bid,hdf,bjf->bijh", x, qk, x)
        attn = _masked_softmax(logits[None] + content, jnp.asarray(valid)[None], axis=2)
        u = jnp.einsum("bijh,bjd->bihd", attn, x)
        u = jnp.einsum("bihd,hde->bihe", u, params["OV"])
    else:
        attn = _masked_softmax(logits, jnp.asarray(valid), axis=1)
        u = jnp.einsum("ijh,bjd->bihd", attn, x)
    return _normalise(u, params, model)


# ------------------------------------------------------------------ selector + layer 2
def _head_inner_products(v_BxIxHxd, model: InductionModel) -> list:
    """Per head ``[B, L]`` the (ReLU'd) ⟨v_q^{(h)}, v_l^{(h)}⟩ (elementwise products and a
    sum over d: a dot_general batched over (b, h) is much slower on CPU)."""
    vq = v_BxIxHxd[:, -1:]  # [B, 1, H, d]
    ip = jnp.sum(vq * v_BxIxHxd[:, :-1], axis=-1)  # [B, L, H]
    if model.relu:
        ip = jax.nn.relu(ip)
    return [ip[..., h] for h in range(model.num_heads)]


def subset_kernel_sum(ip_per_head: list, c, model: InductionModel) -> jax.Array:
    """Σ_S c_S² Π_{h∈S} ip_h / Σ_S c_S² for per-head inner products of any shape. Subsets
    with the raw-token component contribute 0 (its query value is the zero token) but stay
    in the normaliser. Products are exact, not exp(Σ log(ip + 1e−24))."""
    c2 = jnp.square(c)
    total = jnp.zeros_like(ip_per_head[0])
    for s, subset in enumerate(model.subsets()):
        if 0 in subset:
            continue
        term = jnp.ones_like(ip_per_head[0])
        for h in subset:
            term = term * ip_per_head[h - 1]
        total = total + c2[s] * term
    return total / jnp.sum(c2)


def selector_similarity(params, v_BxIxHxd, tokens_BxL, model: InductionModel) -> jax.Array:
    """sim(q, l) = Σ_S c_S² Π_{h∈S} ⟨v_q^h, v_l^h⟩₊ / Σ_S c_S², ``[B, L]`` (spec §3.2)."""
    return subset_kernel_sum(_head_inner_products(v_BxIxHxd, model), params["C"], model)


def subset_shares(params) -> jax.Array:
    """p_S = c_S² / Σ c² (the shares plotted by the paper and the replicator flow, §6.3)."""
    c2 = jnp.square(params["C"])
    return c2 / jnp.sum(c2, axis=-1, keepdims=True)


def induction_probs(params, tokens_BxL: jax.Array, model: InductionModel) -> jax.Array:
    """ŷ ``[B, d]``: the model's distribution of x_{L+1} given x_1..x_L (spec §3.3)."""
    tokens_BxL = jnp.asarray(tokens_BxL)
    if tokens_BxL.ndim != 2 or tokens_BxL.shape[1] < 1:
        raise ValueError(f"tokens_BxL must have shape [B, L] with L >= 1 (got {tokens_BxL.shape})")
    v = copier_features(params, tokens_BxL, model)
    sim = selector_similarity(params, v, tokens_BxL, model)
    attn = jax.nn.softmax(params["a"] * sim, axis=-1)  # [B, L]
    x = jax.nn.one_hot(tokens_BxL, model.vocab_size, dtype=attn.dtype)
    return jnp.einsum("bl,bld->bd", attn, x)


def induction_per_example_loss(
    params,
    batch,
    model: InductionModel,
    *,
    loss: str = "prob_ce",
    labels: str = "hard",
    eps: float = DEFAULT_LOSS_EPS,
) -> jax.Array:
    """Per-sequence loss ``[B]`` of ``batch``: a :class:`~icl_jax.tasks.sampling.Batch`, or
    the :class:`~icl_jax.models.induction_stats.WindowStats` of one (same value, much
    faster for the simplified model).

    Args:
      loss: ``"prob_ce"`` (default, the theory's cross-entropy of the output distribution,
        scored as (ŷ + ε)/(1 + dε)) or ``"official"`` (``CrossEntropyLoss`` applied to the
        probabilities: a second softmax, −ŷ_y + log Σ_e exp ŷ_e; spec §4).
      labels: ``"hard"`` (the sampled x_{L+1}, as the official code trains) or ``"soft"``
        (the true π(·|z), same expectation and lower variance).
      eps: the floor ε ≥ 0 of ``"prob_ce"``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES} (got {loss!r})")
    if labels not in ("hard", "soft"):
        raise ValueError(f"labels must be 'hard' or 'soft' (got {labels!r})")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 (got {eps!r})")
    if isinstance(batch, WindowStats):
        return stats_per_example_loss(params, batch, model, loss=loss, labels=labels, eps=eps)
    probs = induction_probs(params, batch.tokens_BxT, model)
    d = model.vocab_size
    y = jax.nn.one_hot(batch.label_B, d, dtype=probs.dtype) if labels == "hard" else batch.label_probs_BxS
    if loss == "official":
        return official_double_softmax_ce(probs, y)
    return cross_entropy_probs((probs + eps) / (1.0 + d * eps), y)


def induction_loss(params, batch, model: InductionModel, **kw) -> jax.Array:
    """Mean of :func:`induction_per_example_loss` over the batch."""
    return jnp.mean(induction_per_example_loss(params, batch, model, **kw))
