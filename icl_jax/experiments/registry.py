"""Experiment registry: named experiments behind ``icl-jax run`` / ``resume`` / ``reproduce``
(``docs/experiments.md``).

An :class:`Experiment` has two presets of its typed config (``official``: the paper's
recipe; ``quick``: CPU minutes), a ``build(config)`` that makes its task and model (cheap,
host-side: this is where a configuration that only a model, a task or the theory would
reject fails), and ``run(config, ctx)``, which trains, writes figures through its
:class:`RunContext` and returns the metrics (a JSON dict).

:func:`run_experiment` validates the whole configuration — fields, cross-field rules and
``build`` — before anything is compiled or written, and never replaces results silently:
a non-empty output folder is refused unless ``mode="resume"`` (continue from its
checkpoint; only computation-relevant fields must match) or ``mode="overwrite"``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from icl_jax.experiments.config import ExperimentConfig

__all__ = [
    "Experiment",
    "RunContext",
    "Setup",
    "register",
    "get_experiment",
    "list_experiments",
    "run_experiment",
    "resume_experiment",
    "read_run_config",
    "check_out",
    "RUN_MODES",
]

RUN_MODES = ("new", "resume", "overwrite")
CONFIG_FILE = "config.json"


class Setup(NamedTuple):
    """What an experiment's ``build`` returns: its task and model (either may be None, e.g.
    for the data checks; Fig. 9 has one task per graph, a tuple)."""

    task: Any
    model: Any


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Where and how one run writes: its folder, figure names and formats, titles.

    Figures are named ``<experiment>_<kind>.png`` (plus a vector copy when the config's
    ``figure_format`` is pdf or svg); titles end with the run's settings line."""

    name: str
    out: Path
    preset: str
    config: ExperimentConfig
    resume: bool = False
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        """The engine's run folder (checkpoint, params.npz, trajectory.npz)."""
        return self.out / "run"

    def figure(self, kind: str) -> Path:
        return self.out / f"{self.name}_{kind}.png"

    @property
    def formats(self) -> tuple[str, ...]:
        fmt = self.config.figure_format
        return () if fmt == "png" else (fmt,)

    @property
    def settings(self) -> str:
        """The preset and title fields, then every other computation key that differs from that
        preset (e.g. ``official preset · … · loss=official`` for ``--set loss=official``; a custom
        run is compared with the official preset)."""
        exp = _REGISTRY.get(self.name)
        if exp is None or type(exp.official) is not type(self.config):
            return self.config.settings(self.preset)
        base = exp.preset(self.preset) if self.preset in ("official", "quick") else exp.official
        return self.config.settings(self.preset, base)

    def title(self, text: str) -> str:
        return f"{text}\n{self.settings}" if text else self.settings

    def sweep_kwargs(self) -> dict:
        """Keyword arguments of ``engine.sweep`` that tie a sweep to this run folder."""
        return {"out_dir": self.run_dir, "resume": self.resume, "progress": self.progress,
                "config": self.config.fingerprint()}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment.

    Attributes:
      name: registry name (``icl-jax run NAME``).
      description: one line for ``icl-jax list``.
      official: the paper's recipe (GPU-sized).
      quick: the CPU-minutes preset (``--quick``).
      run: ``run(config, ctx) -> metrics`` (a JSON-serialisable dict).
      build: ``build(config) -> Setup`` (task, model); run before anything is written, and by
        :func:`icl_jax.load_run` to rebuild the model of a stored run.
      summary: ``summary(metrics) -> [(label, value), ...]``: the headline rows printed at the
        end of a run and added to ``summary.md``.
      map_axes: ``{metric: (xlabel, ylabel)}`` of the matrix-valued recorded metrics, for
        ``icl-jax animate`` (docs/experiments.md#animations).
    """

    name: str
    description: str
    official: ExperimentConfig
    quick: ExperimentConfig
    run: Callable[[Any, RunContext], dict]
    build: Callable[[Any], Setup]
    summary: Callable[[dict], list] = lambda metrics: []
    map_axes: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if type(self.official) is not type(self.quick):
            raise ValueError(f"{self.name}: official and quick presets must be the same config type")

    @property
    def config_type(self) -> type[ExperimentConfig]:
        return type(self.official)

    def preset(self, name: str) -> ExperimentConfig:
        if name not in ("official", "quick"):
            raise ValueError(f"preset must be 'official' or 'quick' (got {name!r})")
        return self.official if name == "official" else self.quick

    def config(self, preset: str = "official", overrides: Mapping | None = None, sets=()) -> ExperimentConfig:
        """The preset with ``overrides`` (typed values) and ``sets`` (``key=value`` strings)."""
        cfg = self.preset(preset)
        if overrides:
            cfg = cfg.replace(**dict(overrides))
        if sets:
            cfg = cfg.with_strings(list(sets))
        return cfg

    def check(self, config: ExperimentConfig) -> Setup:
        """Everything that can be checked without computing: the config's type, its fields
        (at construction) and what ``build`` rejects."""
        if not isinstance(config, self.config_type):
            raise ValueError(f"{self.name}: config must be a {self.config_type.__name__} (got {type(config).__name__})")
        return self.build(config)


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    if experiment.name in _REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    _REGISTRY[experiment.name] = experiment
    return experiment


def list_experiments() -> list[Experiment]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_experiment(name: str) -> Experiment:
    if name not in _REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def read_run_config(out_dir: str | Path) -> tuple[Experiment, str, ExperimentConfig]:
    """(experiment, preset, config) stored in a run folder's ``config.json``."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{out_dir}: no {CONFIG_FILE}; not a run folder written by icl-jax run")
    stored = json.loads(path.read_text())
    if not {"experiment", "preset", "config"} <= set(stored):
        raise ValueError(f"{path}: not a run record of this icl_jax version (keys {sorted(stored)})")
    exp = get_experiment(stored["experiment"])
    return exp, stored["preset"], exp.config_type.from_dict(stored["config"])


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def check_out(exp: Experiment, config: ExperimentConfig, out: Path, mode: str) -> bool:
    """Check the output folder against ``mode`` without touching it; return whether the run
    resumes. ``new``: ``out`` must be empty or absent. ``resume``: ``out`` must hold a run of
    ``exp`` whose computation-relevant settings equal ``config``'s. ``overwrite``: ``out`` must
    be empty, absent or a run folder (it is never a folder icl-jax did not write)."""
    if mode not in RUN_MODES:
        raise ValueError(f"mode must be one of {', '.join(RUN_MODES)} (got {mode!r})")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a folder")
    if mode == "resume":
        if _is_empty(out):
            raise ValueError(f"resume: {out} holds no run to resume (no {CONFIG_FILE})")
        stored_exp, _, stored = read_run_config(out)
        if stored_exp.name != exp.name:
            raise ValueError(f"resume: {out} holds a {stored_exp.name} run, not {exp.name}")
        # every computation field, defaults filled in (a field the stored run predates included),
        # not the fingerprints, which leave ``added`` fields out at their defaults
        a, b = stored.computation_fields(), config.computation_fields()
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if changed:
            diffs = "; ".join(f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in changed)
            raise ValueError(f"resume: the configuration differs from the run stored in {out} ({diffs}); "
                             "resume with the stored configuration (icl-jax resume DIR), or --overwrite to start again")
        return True
    if _is_empty(out):
        return False
    if mode == "new":
        raise ValueError(f"--out {out} is not empty (it holds {', '.join(sorted(p.name for p in out.iterdir())[:4])}…); "
                         "pass --resume to continue that run or --overwrite to replace it")
    if not (out / CONFIG_FILE).is_file():
        raise ValueError(f"--overwrite: {out} is not a run folder (no {CONFIG_FILE}); refusing to delete it")
    read_run_config(out)  # a run record this version wrote, not any file called config.json
    return False


def _preset_of(exp: Experiment, config: ExperimentConfig) -> str:
    return "official" if config == exp.official else "quick" if config == exp.quick else "custom"


def run_experiment(
    name: str,
    out_dir: str | Path,
    config: ExperimentConfig | None = None,
    *,
    preset: Literal["official", "quick", "custom"] | None = None,
    overrides: Mapping | None = None,
    mode: Literal["new", "resume", "overwrite"] = "new",
    progress: bool = True,
) -> dict:
    """Validate, run, and write ``config.json`` and ``metrics.json`` into ``out_dir``.

    ``config`` defaults to the ``preset`` (default "official") with ``overrides`` applied; a
    ``config`` given without ``preset`` is recorded as "official" or "quick" when it equals that
    preset and "custom" otherwise. ``mode``: "new" refuses
    a non-empty ``out_dir``; "resume" continues the run stored there (its checkpoint) and
    requires the same computation-relevant settings; "overwrite" deletes it first. All
    validation happens before the folder is touched.
    """
    from icl_jax.engine import NonFiniteLossError

    exp = get_experiment(name)
    if config is None:
        config = exp.config(preset or "official", overrides)
    else:
        if overrides:
            config = config.replace(**dict(overrides))
        preset = preset or _preset_of(exp, config)
    exp.check(config)
    out = Path(out_dir)
    resume = check_out(exp, config, out, mode)
    earlier = _earlier_wall_seconds(out) if mode == "resume" else []
    if mode == "overwrite" and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"experiment": name, "preset": preset, "config": config.to_dict()}
    (out / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    ctx = RunContext(name, out, preset, config, resume=resume, progress=progress)
    start = time.perf_counter()
    try:
        metrics = exp.run(config, ctx)
    except NonFiniteLossError as err:
        hint = (f"; the checkpoint holds the last finite state for inspection (icl_jax.engine.checkpoint.load_checkpoint); "
                if err.checkpoint else "; ")
        raise NonFiniteLossError(f"{name}: training diverged: {err}{hint}rerun with a smaller learning rate "
                                 f"(--overwrite --set ...), since resuming the same config diverges again",
                                 step=err.step, run=err.run, checkpoint=err.checkpoint) from None
    metrics = {**metrics, "wall_seconds": round(time.perf_counter() - start, 3)}
    if earlier:
        metrics["earlier_calls_wall_seconds"] = earlier
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _earlier_wall_seconds(out: Path) -> list:
    """The wall times of the earlier calls that finished this run (a resume of a finished run
    re-evaluates it; its ``wall_seconds`` is then that call's only). A call killed before its
    end wrote no metrics; its training time is in ``train_wall_seconds``."""
    try:
        prev = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    return [*prev.get("earlier_calls_wall_seconds", []), prev["wall_seconds"]] if "wall_seconds" in prev else []


def resume_experiment(out_dir: str | Path, *, progress: bool = True) -> tuple[str, dict]:
    """Continue the run stored in ``out_dir`` with its stored configuration; returns
    (experiment name, metrics)."""
    exp, preset, config = read_run_config(out_dir)
    return exp.name, run_experiment(exp.name, out_dir, config, preset=preset, mode="resume", progress=progress)
