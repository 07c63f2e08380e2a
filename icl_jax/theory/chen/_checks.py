"""Argument checks shared by the Chen theory modules: integers, α, ε and subsets of
offsets (docs/chen-theory.md#code-and-tests)."""

from __future__ import annotations

import math

import numpy as np


def _check_int(name: str, value, lo: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (got {value!r})")
    return int(value)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, (bool, str, bytes)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"alpha must be a finite scalar > 0 (got {alpha!r})")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite scalar > 0 (got {alpha!r})")
    return float(alpha)


def _check_subsets(subsets, window: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Subsets as sorted offset tuples; offsets distinct, >= 1 and (if given) <= window."""
    out = []
    for s in subsets:
        try:
            s = tuple(sorted(int(o) for o in s))
        except (TypeError, ValueError):
            raise ValueError(f"subsets must be sequences of integer offsets (got {s!r})") from None
        if len(set(s)) != len(s) or any(o < 1 or (window is not None and o > window) for o in s):
            bound = "" if window is None else f", at most window={window}"
            raise ValueError(f"subsets: offsets must be distinct integers >= 1{bound} (got {s})")
        out.append(s)
    if not out:
        raise ValueError("subsets must name at least one subset (the empty subset is ())")
    return tuple(out)


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0 (got {eps!r})")
