"""Typed, validated experiment configurations (``docs/experiments.md#configs``).

Every experiment's configuration is a frozen dataclass deriving from
:class:`ExperimentConfig`. A field is declared with :func:`option`, which records its
meaning (shown by ``icl-jax run NAME --show-config``), its bounds, and whether it changes
the computation (only those enter the resume fingerprint). Construction validates every
field — type, bounds, choices (a ``Literal`` annotation) — and then the cross-field
:meth:`ExperimentConfig.check`, so an invalid configuration never reaches a compile or the
file system. ``--set key=value`` text is parsed by the field's annotated type
(:meth:`ExperimentConfig.with_strings`).

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` (choices) and
``tuple[T, ...]`` of those (written ``1,2`` or ``[1, 2]`` on the command line).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

__all__ = ["ExperimentConfig", "option"]


def option(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    gt: float | None = None,
    max: float | None = None,
    computation: bool = True,
    added: bool = False,
):
    """A config field: ``default``, its meaning, inclusive ``min`` / ``max`` or exclusive
    lower bound ``gt`` (applied to every element of a tuple), and ``computation=False`` for
    fields that do not change what is computed (figure formats), which the resume
    fingerprint ignores. ``added=True`` marks a field added after runs were written: the
    fingerprint leaves it out while it has its default, so those runs still resume."""
    meta = {"help": help, "min": min, "gt": gt, "max": max, "computation": computation, "added": added}
    return dataclasses.field(default=default, metadata=meta)


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar_type(tp) -> tuple[type, tuple | None]:
    """(base type, choices or None) of a scalar annotation."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), choices
    return tp, None


def _element_type(tp):
    """The element annotation of ``tuple[T, ...]``, or None for a scalar annotation."""
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0]
    return None


def _describe_type(tp) -> str:
    elem = _element_type(tp)
    if elem is not None:
        return f"list of {_describe_type(elem)}"
    base, choices = _scalar_type(tp)
    if choices is not None:
        return "one of " + "|".join(str(c) for c in choices)
    return base.__name__


def _coerce_scalar(name: str, value, tp):
    base, choices = _scalar_type(tp)
    if base is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise ValueError(f"{name}: expected an integer, got {value!r}")
        value = int(value)
    elif base is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be finite, got {value}")
    elif base is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))} (got {value!r})")
    return value


def _coerce(name: str, value, tp):
    elem = _element_type(tp)
    if elem is None:
        return _coerce_scalar(name, value, tp)
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValueError(f"{name}: expected a list of {_describe_type(elem)}, got {value!r}")
    return tuple(_coerce_scalar(f"{name}[{i}]", v, elem) for i, v in enumerate(value))


def _bound(x) -> str:
    """A bound as messages print it: an integral one exactly (2**32 − 1 is 4294967295, not
    4.29497e+09), a fractional one %g."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _check_bounds(name: str, value, meta: Mapping) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, (bool, str)):
            continue
        if meta["min"] is not None and v < meta["min"]:
            raise ValueError(f"{name}: must be >= {_bound(meta['min'])} (got {v!r})")
        if meta["gt"] is not None and not v > meta["gt"]:
            raise ValueError(f"{name}: must be > {_bound(meta['gt'])} (got {v!r})")
        if meta["max"] is not None and v > meta["max"]:
            raise ValueError(f"{name}: must be <= {_bound(meta['max'])} (got {v!r})")


_POWER = re.compile(r"^\s*(\d+)\s*\*\*\s*(\d+)\s*$")


def _parse_scalar(name: str, text: str, tp):
    base, _ = _scalar_type(tp)
    text = text.strip()
    try:
        if base is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            power = _POWER.match(text)
            if power:
                return int(power.group(1)) ** int(power.group(2))
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError
            return int(text) if re.fullmatch(r"[+-]?\d+", text) else int(as_float)
        if base is float:
            power = _POWER.match(text)
            return float(int(power.group(1)) ** int(power.group(2))) if power else float(text)
        return text
    except (ValueError, OverflowError):
        raise ValueError(f"--set {name}={text}: cannot parse as {_describe_type(tp)}") from None


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every experiment has. Subclasses add theirs with :func:`option` and may
    override :meth:`check` for cross-field rules; ``title_fields`` names the fields (and
    their short labels) that figure titles show."""

    title_fields: ClassVar[dict[str, str]] = {"seeds": "seeds"}

    seed: int = option(0, "first seed; the runs use seed, seed+1, …, seed+seeds−1", min=0)
    seeds: int = option(1, "number of independent runs (one vmapped call)", min=1)
    figure_format: Literal["png", "pdf", "svg"] = option(
        "png", "figures are always PNG; pdf or svg also writes a vector copy", computation=False
    )

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name])
            _check_bounds(f.name, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field validation (override; raise ValueError naming the fields)."""

    # ------------------------------------------------------------------ construction
    def replace(self, **changes) -> "ExperimentConfig":
        """A validated copy with ``changes``; an unknown key is an error naming the valid ones."""
        unknown = sorted(set(changes) - set(self.keys()))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(self.keys())}")
        return dataclasses.replace(self, **changes)

    def with_strings(self, items: Sequence[str]) -> "ExperimentConfig":
        """Apply ``["key=value", ...]`` (``--set``), each value parsed by its field's type."""
        return self.replace(**self.parse_strings(items))

    def parse_strings(self, items: Sequence[str]) -> dict:
        hints = _hints(type(self))
        changes = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"--set expects key=value (got {item!r})")
            key, text = (s.strip() for s in item.split("=", 1))
            if key not in hints or key not in self.keys():
                raise ValueError(f"--set {key}: unknown key; valid keys: {', '.join(self.keys())} "
                                 "(see --show-config)")
            tp = hints[key]
            elem = _element_type(tp)
            if elem is None:
                changes[key] = _parse_scalar(key, text, tp)
            elif text.startswith("["):
                try:
                    changes[key] = tuple(json.loads(text))
                except json.JSONDecodeError:
                    raise ValueError(f"--set {key}={text}: cannot parse as {_describe_type(tp)}") from None
            else:
                changes[key] = tuple(_parse_scalar(key, v, elem) for v in text.split(",") if v.strip())
        return changes

    @classmethod
    def from_dict(cls, data: Mapping) -> "ExperimentConfig":
        """From ``to_dict`` output (a stored config.json); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"config: unknown key(s) {', '.join(unknown)} for {cls.__name__}")
        return cls(**dict(data))

    # ------------------------------------------------------------------ views
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict:
        """JSON-ready: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def computation_fields(self) -> dict:
        """Every field that changes the computation (all but ``computation=False`` ones)."""
        out = self.to_dict()
        return {f.name: out[f.name] for f in dataclasses.fields(self) if f.metadata["computation"]}

    def fingerprint(self) -> dict:
        """What a checkpoint must match to resume: :meth:`computation_fields`, less the fields
        marked ``added`` while they hold their default (runs written before the field existed
        stored fingerprints without it)."""
        fields = self.computation_fields()
        return {f.name: fields[f.name] for f in dataclasses.fields(self) if f.name in fields
                and not (f.metadata.get("added") and getattr(self, f.name) == f.default)}

    def differences(self, other: "ExperimentConfig") -> list[str]:
        """Keys whose values differ from ``other`` (same class)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if a[k] != b.get(k)]

    @classmethod
    def describe(cls) -> list[dict]:
        """One entry per field: name, type, bounds and meaning (for ``--show-config``)."""
        hints = _hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            m = f.metadata
            bounds = []
            if m["min"] is not None:
                bounds.append(f">= {_bound(m['min'])}")
            if m["gt"] is not None:
                bounds.append(f"> {_bound(m['gt'])}")
            if m["max"] is not None:
                bounds.append(f"<= {_bound(m['max'])}")
            rows.append({"key": f.name, "type": _describe_type(hints[f.name]) + (" " + ", ".join(bounds) if bounds else ""),
                         "help": m["help"]})
        return rows

    def settings(self, preset: str = "", base: "ExperimentConfig | None" = None) -> str:
        """The line figure titles carry: preset and the ``title_fields`` values, then, given the
        ``base`` config the run varies, every other computation key that differs from it
        (``key=value``)."""
        parts = [f"{preset} preset"] if preset else []
        parts += [f"{label} {_title_value(getattr(self, key))}" for key, label in self.title_fields.items()]
        if base is not None:
            computed = self.computation_fields()
            parts += [f"{k}={_title_value(getattr(self, k))}" for k in self.differences(base)
                      if k in computed and k not in self.title_fields]
        return " · ".join(parts)


def _title_value(value) -> str:
    """A config value as figure titles show it (tuples comma-separated, floats %g)."""
    if isinstance(value, (list, tuple)):
        return ",".join(_title_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
