r"""Chen, Sheen, Wang & Yang's two-attention-layer induction-head model (Chen et al.;
docs/models.md#chen-induction-model): the static config :class:`InductionModel` with the
model protocol's ``init`` / ``apply`` / ``loss``.

The layers (banded copier, selector, classifier) are in
:mod:`icl_jax.models.induction_layers`; the window-statistics fast path (simplified and full
model) in :mod:`icl_jax.models.induction_stats`.

Parameters are a dict whose top-level keys are the engine's groups (the official
``--train-cmd`` letters): ``"W"`` RPE logits ``[K, H]`` (row k−1 = offset k; only the live
rows 1..max offset are allocated), ``"C"`` selector coefficients ``[n_subsets]``, ``"a"``
the classifier scale. The full model of Appendix B (Chen et al.;
docs/models.md#appendix-b-full-model) adds ``"Q"``, ``"K"``, ``"OV"`` (``[H, d, d]``) and the shared
LayerNorm ``"ln_scale"``, ``"ln_bias"`` (``[d]``).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.losses import DEFAULT_EPS, check_labels, cross_entropy_probs, floored_probs, official_double_softmax_ce, targets
from icl_jax.models.induction_layers import copier_attention, induction_probs
from icl_jax.models.induction_stats import WindowStats, compress_window_stats, induction_probs_from_stats, window_stats
from icl_jax.models.protocol import MeanLoss

__all__ = ["InductionModel", "LOSSES"]

LOSSES = ("prob_ce", "official")


@dataclasses.dataclass(frozen=True)
class InductionModel(MeanLoss):
    """The copier / selector / classifier model (Chen et al.; docs/models.md#chen-induction-model),
    following the model protocol.

    Attributes:
      vocab_size: d >= 2.
      num_heads: H >= 1 copier heads.
      max_degree: D, the largest head subset the selector builds (0 <= D <= H).
      window: ``"paper"`` (every head sees offsets 1..M) or ``"official"`` (head h sees
        offsets h..h+H−1, the official code's shifted window; M = H).
      window_size: M for ``window="paper"`` (default H).
      include_raw: also build the official code's subsets that contain the raw-token
        component 0. Its query value is the zero token, so their kernel is exactly 0; they
        only add c_S² to the normaliser Σ c_S² (docs/quirks.md#chen-quirk-8).
      relu: ReLU on each head's inner product (official; matters for the full model only).
      full: the Appendix-B model (docs/models.md#appendix-b-full-model): content Q_hK_hᵀ logits,
        OV_h after attention.
      self_offset: let layer 1 attend to offset 0 with the fixed logit ``self_logit``
        (default: on for the full model, as in the official code; it leaks x_l into
        position l's own features).
      norm: ``"unit"`` (v/(‖v‖ + norm_eps), the simplified model) or ``"layernorm"``
        (centred LayerNorm over d with γ, β shared across heads, eps ``ln_eps``; the full
        model's default).
      self_logit, norm_eps, ln_eps: the official hard-coded constants 1e−6, 1e−7, 1e−5.
      w_plus, w_minus, c_init, a_init, proj_init: the deterministic official
        initialisation (:meth:`init`); ``None`` takes the official value of the model kind
        (simplified: w_+ = 3, w_− = 0.1; full: w_+ = 1, w_− = 0.01; c = a = 0.01,
        proj = 0.001).

    ``apply`` returns **probabilities** ``[B, d]`` of x_{T+1} given x_1..x_T (Chen et al.;
    docs/models.md#classifier). Tokens must be integer ids in [0, d−1] of shape ``[B, T]``:
    checked eagerly when concrete (``ValueError``); inside ``jit`` the range check is skipped
    unless the call is wrapped by :func:`icl_jax.models.checked` (:mod:`icl_jax.models.tokens`).
    ``per_example_loss`` also accepts the :class:`WindowStats` of a batch (same value, much
    faster: docs/models.md#window-statistics; not token-checked).
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
    w_plus: float | None = None
    w_minus: float | None = None
    c_init: float = 0.01
    a_init: float = 0.01
    proj_init: float = 0.001

    output = "probs"

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
        for name in _INIT_FIELDS:  # None: the official value of the model kind (w_plus, w_minus)
            v = getattr(self, name)
            if not (v is None and name in ("w_plus", "w_minus")) and (
                isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v)
            ):
                raise ValueError(f"{name} must be a finite number (got {v!r})")

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
        """``bool[K, H]``: row k−1 is offset k, column h−1 head h (docs/models.md#copier)."""
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

    # -- the model protocol ---------------------------------------------------------------
    def init(self, key: jax.Array | None = None, *, dtype=jnp.float32, **overrides) -> dict:
        """Deterministic official initialisation (docs/models.md#initialisation-of-the-chen-model); ``key`` is
        accepted and ignored. W = w_− everywhere and w_+ on (offset h, head h); every
        c_S = c_init; a = a_init; the full model adds Q_h = K_h = OV_h = proj_init·I and
        LayerNorm γ = 1, β = 0. ``overrides`` (w_plus, w_minus, c_init, a_init, proj_init)
        replace the config's values and may be traced scalars (vmapped init scales)."""
        bad = set(overrides) - set(_INIT_FIELDS)
        if bad:
            raise ValueError(f"init: unknown override(s) {sorted(bad)}; valid: {_INIT_FIELDS}")
        v = {name: overrides.get(name, getattr(self, name)) for name in _INIT_FIELDS}
        if v["w_plus"] is None:
            v["w_plus"] = 1.0 if self.full else 3.0
        if v["w_minus"] is None:
            v["w_minus"] = 0.01 if self.full else 0.1
        k, h, d = self.max_offset, self.num_heads, self.vocab_size
        diag = np.zeros((k, h), bool)
        diag[np.arange(min(k, h)), np.arange(min(k, h))] = True
        w = jnp.where(jnp.asarray(diag), jnp.asarray(v["w_plus"], dtype), jnp.asarray(v["w_minus"], dtype))
        params = {
            "W": w,
            "C": jnp.full((self.num_subsets,), v["c_init"], dtype),
            "a": jnp.asarray(v["a_init"], dtype),
        }
        if self.full:
            eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), (h, d, d)) * jnp.asarray(v["proj_init"], dtype)
            params.update({"Q": eye, "K": eye, "OV": eye, "ln_scale": jnp.ones((d,), dtype), "ln_bias": jnp.zeros((d,), dtype)})
        return params

    def apply(self, params: dict, tokens_BxT: jax.Array) -> jax.Array:
        """ŷ ``[B, d]``: the distribution of x_{T+1} given x_1..x_T (position-wise forward)."""
        return induction_probs(params, tokens_BxT, self)

    def per_example_loss(
        self, params: dict, batch, *, loss: str = "prob_ce", labels: str = "hard", eps: float = DEFAULT_EPS
    ) -> jax.Array:
        """Per-sequence loss ``[B]`` of ``batch``: a :class:`~icl_jax.tasks.sampling.Batch`,
        or the :class:`WindowStats` of one (same value and gradients, much faster; simplified
        and full model: docs/models.md#window-statistics).

        Args:
          loss: ``"prob_ce"`` (default, the theory's cross-entropy of the output
            distribution, scored as (ŷ + ε)/(1 + dε)) or ``"official"``
            (``CrossEntropyLoss`` applied to the probabilities: a second softmax,
            −ŷ_y + log Σ_e exp ŷ_e; docs/quirks.md#chen-quirk-1).
          labels: ``"hard"`` (the sampled x_{T+1}, as the official code trains) or
            ``"soft"`` (the true π(·|z), same expectation and lower variance).
          eps: the floor ε ≥ 0 of ``"prob_ce"``.
        """
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES} (got {loss!r})")
        check_labels(labels)
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0 (got {eps!r})")
        if isinstance(batch, WindowStats):
            probs = induction_probs_from_stats(params, batch, self)
        else:
            probs = self.apply(params, batch.tokens_BxT)
        y = targets(batch, labels, self.vocab_size, probs.dtype)
        if loss == "official":
            return official_double_softmax_ce(probs, y)
        return cross_entropy_probs(floored_probs(probs, eps), y)

    # -- analysis helpers -----------------------------------------------------------------
    def copier_attention(self, params: dict, seq_len: int) -> jax.Array:
        """Content-free layer-1 attention ``[T+1, K', H]`` (see :func:`copier_attention`)."""
        return copier_attention(params, self, seq_len)

    def window_stats(self, batch, compress: bool = False) -> WindowStats:
        """The window statistics of ``batch`` (``compress=True``: merged on the host, for a
        fixed dataset; see :func:`~icl_jax.models.induction_stats.compress_window_stats`)."""
        stats = window_stats(batch, self)
        return compress_window_stats(stats) if compress else stats


_INIT_FIELDS = ("w_plus", "w_minus", "c_init", "a_init", "proj_init")
