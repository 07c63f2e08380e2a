"""Projected wall time of ``icl-jax reproduce --full`` on this machine, experiment by experiment.

For every registered experiment's **official** preset (the paper's recipe, unchanged except for
its length), the whole experiment (``run_experiment``: test set, training with its recorded
metrics, baselines, theory, figures) runs twice on a short prefix of its step schedule, each time in a fresh process (so both runs
compile, as a real run does, and the compiles cancel in the slope), at
``a`` and ``b`` times a base prefix (every stage scaled by the same fraction, each at least
one record interval; the base is at least ``--min-fraction`` of the recipe, so that fast steps
add up to seconds between the two prefixes). Each stage of a prefix is one compiled chunk
(``chunk_steps``), so both prefixes compile the same programs and the compiles cancel. The wall time is linear in the number of training steps,

    T(n) = fixed + n × per_step,

so the two prefixes give ``per_step`` (compiles and fixed work cancel) and ``fixed``, and the
projection of the full recipe is ``fixed + n_official × per_step``. Recording and test-set
evaluation scale with the steps (the record interval is the official one), so they are in
``per_step``; baselines, theory, flows and figures are in ``fixed``. ``train_share`` splits the
longer prefix's wall time into the engine's training loop (compiles included) and the rest.

Each child calls :func:`icl_jax.engine.cores.use_cpu_cores` first, as the ``icl-jax``
command line does (one XLA host device per core; a sweep shards its runs over them). An
experiment that ``icl-jax reproduce`` runs on another's trained model (``chen-generalization``
on ``chen-cw-a``'s run, ``icl_jax.cli._REUSES``) is measured once on the longer prefix run of
that experiment: its cost has no training part, so it is projected as that one wall time.

Experiments without a step schedule (``data-baselines``) run once, in full. Each result is
written to ``--out`` as soon as it is measured (so a killed run keeps what it measured; rerun
with ``--only`` for the rest). One JSON object goes to stdout at the end.

Usage:
    python benchmarks/full_scale.py [--out benchmarks/results/full_scale_before_cpu_2core.json]
                                    [--only NAME ...] [--prefix-scale 1 3] [--min-fraction 0.02]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import matplotlib

from icl_jax.cli import _REUSES

matplotlib.use("Agg")


def _schedule(config):
    """(name of the steps field(s), official step counts, record interval)."""
    if hasattr(config, "stage_steps"):
        return "stage_steps", tuple(config.stage_steps), config.record_every
    if hasattr(config, "stage1_steps"):
        return "stage12", (config.stage1_steps, config.stage2_steps), config.record_every
    if hasattr(config, "steps"):
        return "steps", (config.steps,), config.record_every
    return None, (), None


def _prefix(config, fraction: float):
    """``config`` with every stage scaled by ``fraction`` (rounded to whole record intervals,
    at least one), and the number of steps that gives."""
    field, steps, every = _schedule(config)
    scaled = tuple(max(every, int(round(s * fraction / every)) * every) for s in steps)
    if field == "stage_steps":
        config = config.replace(stage_steps=scaled)
    elif field == "stage12":
        config = config.replace(stage1_steps=scaled[0], stage2_steps=scaled[1])
    else:
        config = config.replace(steps=scaled[0])
    if hasattr(config, "chunk_steps"):
        # one compiled chunk per stage in both prefixes: otherwise the longer prefix may compile
        # one more chunk shape (a tail chunk) than the shorter and that compile lands in the slope
        config = config.replace(chunk_steps=max(scaled))
    return config, sum(scaled)


_CHILD = """
import json, sys, time
import matplotlib
matplotlib.use("Agg")
from icl_jax.engine.cores import use_cpu_cores
use_cpu_cores()  # as the icl-jax command line does: one XLA host device per core
from icl_jax.experiments import get_experiment, run_experiment
name, config, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
exp = get_experiment(name)
start = time.perf_counter()
metrics = run_experiment(name, out, exp.config_type.from_dict(config), progress=False)
print(json.dumps({"wall_s": time.perf_counter() - start, "train_loop_s": metrics.get("train_wall_seconds")}))
"""


def _run(exp, config, root):
    """One cold run in a fresh process (compiles included, as in a real run; the imports are not)."""
    out = os.path.join(root, f"{exp.name}-{time.perf_counter_ns()}")
    proc = subprocess.run([sys.executable, "-c", _CHILD, exp.name, json.dumps(config.to_dict()), out],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{exp.name}: the timed run failed:\n{proc.stderr[-3000:]}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    return timing["wall_s"], timing["train_loop_s"], out


def measure(exp, scales, root, folders, min_fraction) -> dict:
    """Project ``exp``'s official wall time; ``folders`` maps each measured experiment to the
    run folder of its longer prefix (an experiment that reuses another's trained run, as
    ``icl-jax reproduce`` does, is timed once on that folder: its cost has no training part)."""
    official = exp.official
    field, steps, every = _schedule(official)
    if field is None:
        wall, _, _ = _run(exp, official, root)
        return {"projected_s": wall, "measured_in_full": True}
    source = _REUSES.get(exp.name)
    if source in folders:
        folder, fraction, n = folders[source]
        config, n_own = _prefix(official, fraction)
        if n_own != n:
            raise ValueError(f"{exp.name}: its prefix ({n_own} steps) does not match {source}'s ({n})")
        wall, _, _ = _run(exp, config.replace(trained_run=folder), root)
        print(f"[full_scale] {exp.name}: reuses {source}'s run, {wall:.1f} s", file=sys.stderr, flush=True)
        return {"official_steps": sum(steps), "reuses": source, "projected_s": wall,
                "note": f"evaluates the trained {source} run as icl-jax reproduce does (no training)"}
    total = sum(steps)
    # the shorter prefix: at least one record interval per stage and `min_fraction` of the
    # recipe (a step of a few ms must add up to seconds over the difference of the prefixes)
    base = max(every * len(steps) / total, min_fraction)
    points = []
    for scale in scales:
        fraction = scale * base
        config, n = _prefix(official, fraction)
        wall, train, out = _run(exp, config, root)
        folders[exp.name] = (out, fraction, n)
        points.append({"steps": n, "wall_s": wall, "train_loop_s": train})
        print(f"[full_scale] {exp.name}: {n} steps in {wall:.1f} s", file=sys.stderr, flush=True)
    (p, q) = points[0], points[-1]
    if q["steps"] == p["steps"]:
        raise ValueError(f"{exp.name}: the two prefixes have the same length; use other --prefix-scale values")
    per_step = (q["wall_s"] - p["wall_s"]) / (q["steps"] - p["steps"])
    fixed = p["wall_s"] - p["steps"] * per_step
    result = {
        "official_steps": total,
        "prefixes": points,
        "per_step_s": per_step,
        "steps_per_s": (1.0 / per_step) if per_step > 0 else None,
        "fixed_s": fixed,
        "projected_s": fixed + total * per_step,
    }
    if q["train_loop_s"] is not None:
        result["train_share_of_longer_prefix"] = q["train_loop_s"] / q["wall_s"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON file, updated after every experiment")
    parser.add_argument("--only", nargs="*", default=None, help="registered experiment names (default: all)")
    parser.add_argument("--prefix-scale", nargs=2, type=float, default=(1.0, 3.0),
                        help="the two prefix lengths, in units of the shorter-prefix base")
    parser.add_argument("--min-fraction", type=float, default=0.02,
                        help="the base is at least this fraction of the official steps (default 0.02)")
    args = parser.parse_args()

    from icl_jax.engine.cores import use_cpu_cores

    use_cpu_cores()  # the children do the same (as the icl-jax command line)
    import jax

    from icl_jax.experiments import get_experiment, list_experiments

    names = args.only or [e.name for e in list_experiments()]
    # an experiment that reuses another's trained run is measured after it (as reproduce runs them)
    names = sorted(names, key=lambda n: (n in _REUSES and _REUSES[n] in names, names.index(n)))
    report = {"machine": {"cpu_count": os.cpu_count(), "backend": jax.default_backend(),
                          "devices": len(jax.devices())},
              "method": "two-prefix linear projection of run_experiment wall time (see the module docstring)",
              "prefix_scale": list(args.prefix_scale), "min_fraction": args.min_fraction, "experiments": {}}
    if args.out and os.path.exists(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        report["experiments"] = {k: v for k, v in previous.get("experiments", {}).items() if k not in names}
    experiments = [get_experiment(n) for n in names]
    folders = {}
    with tempfile.TemporaryDirectory() as root:
        for exp in experiments:
            report["experiments"][exp.name] = measure(exp, args.prefix_scale, root, folders, args.min_fraction)
            report["total_projected_s"] = sum(v["projected_s"] for v in report["experiments"].values())
            report["total_projected_h"] = report["total_projected_s"] / 3600
            if args.out:
                with open(args.out, "w") as f:
                    json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
