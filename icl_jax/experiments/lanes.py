"""Several experiments at once on a CPU host: one process per *lane*, each pinned to its own cores.

A single run of the papers' models (a few thousand parameters, batches of ~10^3 sequences)
does not keep two cores busy: on this project's 2-core machine one Fig. 2 step takes 12.8 ms
with both cores and 13.9 ms pinned to one, and two pinned runs side by side take no longer
than one alone. So ``icl-jax reproduce`` runs its experiments in lanes: lane k is a child
process whose CPU affinity is the k-th share of this process's cores (``lane_cores``), with one
XLA host device per core of it (:func:`icl_jax.engine.cores.use_cpu_cores`; a device count in
the inherited ``XLA_FLAGS`` is replaced). Each job is one
``run_experiment`` call writing its own folder, exactly as in a single process.

Jobs start by **greedy list scheduling**: ``reproduce`` orders them longest first by
:func:`run_steps` (training steps × runs); whenever a lane is free, the first job in the given
order whose prerequisite (``after``) has finished starts on it. :func:`schedule` applies the
same rule to projected durations, so ``benchmarks/full_scale.py`` projects the wall time of the
scheduler that actually runs. A failed job stops new jobs from starting; the running ones
finish (their work is kept), then the failure is raised with the tail of the job's log.

Accelerators are not split into lanes (``default_lanes`` gives 1 when an accelerator plugin is
installed or ``JAX_PLATFORMS`` names one): a GPU runs one experiment at a time, in process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["Job", "LaneError", "accelerator_host", "default_lanes", "lane_cores", "run_jobs", "run_steps", "schedule"]

# accelerator PJRT plugins: their presence means the default backend is not the CPU
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


class LaneError(RuntimeError):
    """One or more lane jobs failed (the message names them and quotes their logs)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One ``run_experiment`` call in a lane.

    Attributes:
      name: the job's name (unique; names its log), by default the registered experiment.
      config: its ``to_dict()`` (JSON-able), rebuilt in the child with ``from_dict``.
      folder: the run folder.
      preset: "official", "quick" or "custom" (recorded in config.json).
      mode: "new", "resume" or "overwrite" (``run_experiment``).
      after: a job name that must finish first (its folder is this job's input), or None.
      experiment: the registered experiment when it differs from ``name``.
    """

    name: str
    config: dict
    folder: Path
    preset: str
    mode: str
    after: str | None = None
    experiment: str | None = None


def run_steps(config) -> int:
    """Training steps × runs of an experiment config: ``reproduce`` starts experiments in
    decreasing order of this (longest first, so that no long run starts last while the other
    lanes idle). Steps are ``steps``, ``stage_steps`` or ``stage1_steps + stage2_steps``; runs
    are ``seeds`` × ``num_graphs`` where the config has them; 0 for configs that do not train."""
    steps = getattr(config, "steps", None)
    if steps is None:
        steps = sum(getattr(config, "stage_steps", ()) or ())
        steps += getattr(config, "stage1_steps", 0) + getattr(config, "stage2_steps", 0)
    return int(steps) * int(getattr(config, "seeds", 1)) * int(getattr(config, "num_graphs", 1))


def _available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity API
        return list(range(os.cpu_count() or 1))


def accelerator_host() -> bool:
    """Whether JAX's default backend here is an accelerator: ``JAX_PLATFORMS`` names a non-CPU
    platform, or (unset) an accelerator plugin is installed. Decided without starting a backend
    (a started GPU client would hold device memory the lane children need)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return set(platforms.split(",")) != {"cpu"}
    return any(importlib.util.find_spec(p) is not None for p in _ACCELERATOR_PLUGINS)


def default_lanes(jobs: int | None = None) -> int:
    """Lanes ``reproduce`` uses unless told: one per core on a CPU-only host with CPU affinity
    (Linux), at most one per job; otherwise 1."""
    if accelerator_host() or not hasattr(os, "sched_setaffinity"):
        return 1
    cores = len(_available_cores())
    return max(1, min(cores, jobs)) if jobs is not None else cores


def lane_cores(lanes: int, cores: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Split ``cores`` (default: this process's affinity) into ``lanes`` disjoint, near-equal shares."""
    cores = list(_available_cores() if cores is None else cores)
    if lanes != 1 and not hasattr(os, "sched_setaffinity"):
        raise ValueError(f"lanes must be 1 on this platform (no CPU affinity to pin a lane to its cores) (got {lanes!r})")
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= len(cores):
        raise ValueError(f"lanes must be an integer in [1, {len(cores)}] (the cores available) (got {lanes!r})")
    q, r = divmod(len(cores), lanes)
    shares, start = [], 0
    for k in range(lanes):
        size = q + (k < r)
        shares.append(tuple(cores[start : start + size]))
        start += size
    return shares


def _check_order(names: Sequence[str], after: Sequence[str | None]) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"jobs: names must be unique (got {list(names)})")
    for name, dep in zip(names, after):
        if dep is not None and dep not in names:
            raise ValueError(f"jobs: {name} waits for {dep!r}, which is not a job")
        if dep is not None and names.index(dep) > names.index(name):
            raise ValueError(f"jobs: {name} waits for {dep}, which must come before it in the order")


def _next_ready(pending: list[int], after: Sequence[str | None], names: Sequence[str], done: set) -> int | None:
    for i in pending:
        if after[i] is None or names.index(after[i]) in done:
            return i
    return None


def schedule(names: Sequence[str], durations: Sequence[float], after: Sequence[str | None], lanes: int) -> dict:
    """Simulate :func:`run_jobs`' rule on known durations.

    Returns ``{"makespan": s, "jobs": {name: {"lane", "start", "end"}}}``."""
    names = list(names)
    _check_order(names, after)
    if len(durations) != len(names) or any(not d >= 0 for d in durations):
        raise ValueError("durations: one non-negative number per job")
    if not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be an integer >= 1 (got {lanes!r})")
    free_at = [0.0] * lanes
    running: list[tuple[float, int, int]] = []  # (end, job, lane)
    pending, done, out, now = list(range(len(names))), set(), {}, 0.0
    while pending:
        idle = [k for k in range(lanes) if free_at[k] <= now]
        job = _next_ready(pending, after, names, done)
        if idle and job is not None:
            lane = idle[0]
            end = now + float(durations[job])
            free_at[lane] = end
            running.append((end, job, lane))
            pending.remove(job)
            out[names[job]] = {"lane": lane, "start": now, "end": end}
            continue
        running.sort()
        end, finished, _ = running.pop(0)  # nothing can start before the next job finishes
        now = max(now, end)
        done.add(finished)
    makespan = max((v["end"] for v in out.values()), default=0.0)
    return {"makespan": makespan, "jobs": out}


_CHILD = """
import json, os, sys
spec = json.loads(sys.argv[1])
os.sched_setaffinity(0, spec["cores"])
# one host device per core of this lane: a device count inherited from the parent (whose own
# count covers all of its cores) is replaced
flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count=")]
os.environ["XLA_FLAGS"] = " ".join(flags)
os.environ.pop("JAX_NUM_CPU_DEVICES", None)
from icl_jax.engine.cores import use_cpu_cores
use_cpu_cores(len(spec["cores"]))
import matplotlib
matplotlib.use("Agg")
from icl_jax.experiments import get_experiment, run_experiment
exp = get_experiment(spec["experiment"])
run_experiment(spec["experiment"], spec["folder"], exp.config_type.from_dict(spec["config"]),
               preset=spec["preset"], mode=spec["mode"], progress=False)
"""


def run_jobs(jobs: Sequence[Job], lanes: int, log_dir: Path, *, on_event: Callable[[str], None] | None = None,
             on_result: Callable[[str, dict], None] | None = None) -> dict:
    """Run ``jobs`` in ``lanes`` pinned child processes by the rule of :func:`schedule`.

    Each job's output (stdout and stderr) is appended to ``log_dir/<name>.log``. Returns
    ``{name: {"metrics": metrics.json, "lane", "start", "end"}}`` (seconds from the start);
    ``on_result(name, that entry)`` is called as each job finishes. Raises :class:`LaneError`
    naming the failed jobs after the running ones have finished; on an interrupt the children
    are terminated (their runs resume from their checkpoints)."""
    names = [j.name for j in jobs]
    after = [j.after for j in jobs]
    _check_order(names, after)
    shares = lane_cores(lanes)
    say = on_event or (lambda line: print(line, file=sys.stderr, flush=True))
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pending, done, failed, results = list(range(len(jobs))), set(), [], {}
    running: dict[int, tuple[subprocess.Popen, int, float, object]] = {}  # lane -> (proc, job, start, log)
    try:
        while pending or running:
            idle = [k for k in range(lanes) if k not in running]
            job = None if failed else _next_ready(pending, after, names, done)
            if idle and job is not None:
                lane, j = idle[0], jobs[job]
                spec = {"experiment": j.experiment or j.name, "config": j.config, "folder": str(j.folder), "preset": j.preset,
                        "mode": j.mode, "cores": list(shares[lane])}
                log = open(log_dir / f"{j.name}.log", "a")
                proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec)], stdout=log,
                                        stderr=subprocess.STDOUT)
                running[lane] = (proc, job, time.perf_counter() - t0, log)
                pending.remove(job)
                say(f"[lanes] {j.name} started on lane {lane} (cores {','.join(map(str, shares[lane]))})")
                continue
            if not running:
                break  # a failure left jobs that will not start
            finished = [k for k, (proc, *_rest) in running.items() if proc.poll() is not None]
            if not finished:
                time.sleep(0.2)
                continue
            for lane in finished:
                proc, job, start, log = running.pop(lane)
                log.close()
                j, end = jobs[job], time.perf_counter() - t0
                if proc.returncode != 0:
                    failed.append(j.name)
                    say(f"[lanes] {j.name} FAILED (exit {proc.returncode}) after {end - start:.1f} s; "
                        f"log: {log_dir / (j.name + '.log')}")
                    continue
                done.add(job)
                metrics = json.loads((Path(j.folder) / "metrics.json").read_text())
                results[j.name] = {"metrics": metrics, "lane": lane, "start": start, "end": end}
                if on_result is not None:
                    on_result(j.name, results[j.name])
                say(f"[lanes] {j.name} done in {end - start:.1f} s (lane {lane})")
    finally:
        for proc, _job, _start, log in running.values():  # an interrupt: stop the children (runs resume)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    if failed:
        tails = []
        for name in failed:
            text = (log_dir / f"{name}.log").read_text(errors="replace")
            tails.append(f"--- {name} (log {log_dir / (name + '.log')}) ---\n{text[-2000:]}")
        skipped = [names[i] for i in pending]
        raise LaneError(f"{len(failed)} experiment(s) failed: {', '.join(failed)}"
                           + (f"; not started: {', '.join(skipped)}" if skipped else "") + "\n" + "\n".join(tails))
    return results
