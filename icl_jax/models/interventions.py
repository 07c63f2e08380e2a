"""Head interventions for the Flax NNX transformer: ablate a head's output or clamp its
attention pattern (Singh et al. 2024, "What needs to go right for an induction head?";
docs/peer-tasks.md#interventions).

An :class:`Interventions` value is static (hashable, JSON-describable), so it can be a keyword
of the model's loss and of an engine :class:`~icl_jax.engine.Stage` (``loss_kwargs``): the
intervention then holds for that stage's step range and the rest of training runs without it,
in the same compiled program.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

__all__ = ["Interventions", "PATTERNS"]

#: clamped attention patterns (row i over keys j <= i)
PATTERNS = ("previous_token", "uniform", "self")


@dataclasses.dataclass(frozen=True)
class Interventions:
    """Heads to ablate and heads to clamp; layers are 1-based (``L1`` = 1), heads 0-based.

    Attributes:
      ablate: ``((layer, head), ...)``: the head's output is multiplied by 0 (its attention map
        is still computed and returned).
      clamp: ``((layer, head, pattern), ...)``: the head attends with a fixed pattern instead of
        its softmax: ``"previous_token"`` (row i on i − 1, row 0 on itself), ``"uniform"`` (over
        keys j <= i) or ``"self"`` (row i on i).
    """

    ablate: tuple[tuple[int, int], ...] = ()
    clamp: tuple[tuple[int, int, str], ...] = ()

    def __post_init__(self):
        def pairs(name, value, width):
            if not isinstance(value, (tuple, list)):
                raise ValueError(f"Interventions.{name}: must be a tuple of {width}-tuples (got {value!r})")
            out = []
            for item in value:
                if not isinstance(item, (tuple, list)) or len(item) != width:
                    raise ValueError(f"Interventions.{name}: every entry must be a {width}-tuple (got {item!r})")
                out.append(tuple(item))
            return tuple(out)

        object.__setattr__(self, "ablate", pairs("ablate", self.ablate, 2))
        object.__setattr__(self, "clamp", pairs("clamp", self.clamp, 3))
        for layer, head, pattern in self.clamp:
            if pattern not in PATTERNS:
                raise ValueError(f"Interventions.clamp: pattern must be one of {PATTERNS} (got {pattern!r})")
        seen = [(l, h) for l, h, _ in self.clamp]
        if len(set(seen)) != len(seen):
            raise ValueError(f"Interventions.clamp: a head is clamped twice ({self.clamp})")

    def check(self, heads: tuple[int, ...]) -> None:
        """Every named head exists in a model with ``heads`` per layer (``ValueError`` otherwise)."""
        for name, entries in (("ablate", self.ablate), ("clamp", self.clamp)):
            for layer, head, *_ in entries:
                ints = all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (layer, head))
                if not ints or not 1 <= layer <= len(heads) or not 0 <= head < heads[layer - 1]:
                    raise ValueError(f"Interventions.{name}: ({layer}, {head}) is not a head of this model: layers are "
                                     f"1..{len(heads)} with heads {heads} (0-based)")

    def __bool__(self) -> bool:
        return bool(self.ablate or self.clamp)

    def gate(self, layer: int, num_heads: int):
        """``[H]`` output gates of ``layer`` (0 on ablated heads), or None if none is ablated."""
        off = [h for l, h in self.ablate if l == layer]
        if not off:
            return None
        g = np.ones(num_heads, np.float32)
        g[off] = 0.0
        return jnp.asarray(g)

    def clamps(self, layer: int, num_heads: int, q: int, t: int):
        """``(mask [H], pattern [H, Q, T])`` for the last ``q`` query rows of ``layer``, or None."""
        mine = [(h, p) for l, h, p in self.clamp if l == layer]
        if not mine:
            return None
        mask = np.zeros(num_heads, bool)
        pattern = np.zeros((num_heads, q, t))  # float64 here; cast to the scores dtype in use
        rows = np.arange(t - q, t)
        for h, p in mine:
            mask[h] = True
            if p == "uniform":
                pattern[h] = (np.arange(t)[None, :] <= rows[:, None]) / (rows[:, None] + 1.0)
            else:
                keys = np.maximum(rows - 1, 0) if p == "previous_token" else rows
                pattern[h, np.arange(q), keys] = 1.0
        return jnp.asarray(mask), jnp.asarray(pattern)
