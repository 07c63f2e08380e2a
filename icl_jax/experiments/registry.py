"""Experiment registry: named (config, run) pairs behind ``icl-jax run`` / ``reproduce``.

An experiment's config is a flat dict of JSON scalars/lists. ``--quick`` applies the
experiment's quick overrides (CPU, minutes), ``--seeds N`` sets ``seeds``, and
``--set key=value`` overrides any key, parsed to the type of its default.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Experiment", "register", "get_experiment", "list_experiments", "parse_overrides", "run_experiment"]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment.

    Attributes:
      name: registry name (``icl-jax run NAME``).
      description: one line for ``icl-jax list``.
      defaults: full-size configuration.
      quick: overrides for ``--quick``.
      run: ``run(config, out_dir, progress) -> metrics`` (JSON-serialisable dict);
        writes its figures into ``out_dir``.
      summary: ``summary(metrics) -> list[(label, value)]`` rows for ``summary.md``.
    """

    name: str
    description: str
    defaults: dict
    quick: dict
    run: Callable[[dict, Path, bool], dict]
    summary: Callable[[dict], list] = lambda metrics: []


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    if experiment.name in _REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    unknown = set(experiment.quick) - set(experiment.defaults)
    if unknown:
        raise ValueError(f"{experiment.name}: quick overrides name unknown keys {sorted(unknown)}")
    _REGISTRY[experiment.name] = experiment
    return experiment


def list_experiments() -> list[Experiment]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_experiment(name: str) -> Experiment:
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _parse_value(key: str, text: str, default):
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, (list, tuple)):
            return json.loads(text) if text.startswith("[") else [type(default[0])(v) for v in text.split(",")]
        return text
    except (ValueError, IndexError, json.JSONDecodeError):
        raise ValueError(f"--set {key}={text}: cannot parse as {type(default).__name__} (default {default!r})") from None


def parse_overrides(items: list[str], defaults: dict) -> dict:
    """``["key=value", ...]`` → typed dict; unknown keys are an error naming the valid ones."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value (got {item!r})")
        key, text = item.split("=", 1)
        if key not in defaults:
            raise ValueError(f"--set {key}: unknown key; valid keys: {', '.join(sorted(defaults))}")
        out[key] = _parse_value(key, text, defaults[key])
    return out


def run_experiment(
    name: str,
    out_dir: str | Path,
    *,
    quick: bool = False,
    seeds: int | None = None,
    overrides: dict | None = None,
    progress: bool = True,
) -> dict:
    """Resolve the config, run, and write ``config.json`` and ``metrics.json``."""
    exp = get_experiment(name)
    config = dict(exp.defaults)
    if quick:
        config.update(exp.quick)
    if seeds is not None:
        if "seeds" not in config:
            raise ValueError(f"{name} has no 'seeds' setting")
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1 (got {seeds})")
        config["seeds"] = int(seeds)
    config.update(overrides or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"experiment": name, "quick": quick, **config}, indent=2) + "\n")
    start = time.perf_counter()
    metrics = exp.run(config, out, progress)
    metrics = {**metrics, "wall_seconds": round(time.perf_counter() - start, 3)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
