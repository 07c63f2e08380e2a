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

The timed runs go through the lanes of ``icl-jax reproduce`` (``--lanes``, default as
reproduce: one per core on a CPU-only host; :mod:`icl_jax.experiments.lanes`): each is one
``run_experiment`` in a child process pinned to its lane's cores, and the lanes run timed runs
side by side as reproduce runs experiments, so a timing includes the neighbour's load.
``projected_s`` is therefore an experiment's time in one lane. ``makespan_s`` is the projected
wall time of ``icl-jax reproduce --full``: reproduce's plan order (longest first) and
prerequisites under the lanes' scheduling rule (``lanes.schedule``) on the projected times;
``total_lane_s`` is their sum. An experiment that ``icl-jax reproduce`` runs on another's
trained model (``chen-generalization`` on ``chen-cw-a``'s run, ``icl_jax.cli._REUSES``) is
timed once on the longer prefix run of that experiment: its cost has no training part, so it is
projected as that one wall time.

The timed runs start in registry order, so the last few (short) ones may run without a
neighbour in the other lane; the long experiments' prefixes all ran beside another timed run.
Experiments without a step schedule (``data-baselines``) run once, in full. Each timed run is
written to ``--out`` (``timed_runs``) as soon as it finishes; the projections at the end. One
JSON object goes to stdout at the end.

Usage:
    python benchmarks/full_scale.py [--out benchmarks/results/full_scale_before_cpu_2core.json]
                                    [--only NAME ...] [--prefix-scale 1 3] [--min-fraction 0.02]
                                    [--lanes N]
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

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


def _jobs(experiments, scales, min_fraction, root):
    """The prefix runs to time, as lane jobs: two prefixes per experiment with a step schedule,
    one full run of the others, and a reusing experiment once on its source's longer prefix."""
    from icl_jax.experiments.lanes import Job

    jobs, plans, by_name = [], {}, {e.name: e for e in experiments}
    for exp in experiments:
        official = exp.official
        field, steps, every = _schedule(official)
        source = _REUSES.get(exp.name)
        if field is None:
            jobs.append(Job(exp.name, official.to_dict(), root / exp.name, "official", "new"))
            plans[exp.name] = {"kind": "once", "job": exp.name}
            continue
        if source in by_name:
            continue  # after its source's jobs (below)
        # the shorter prefix: at least one record interval per stage and `min_fraction` of the
        # recipe (a step of a few ms must add up to seconds over the difference of the prefixes)
        base = max(every * len(steps) / sum(steps), min_fraction)
        names = []
        for scale in scales:
            config, n = _prefix(official, scale * base)
            name = f"{exp.name}@{n}"
            jobs.append(Job(name, config.to_dict(), root / name, "custom", "new", experiment=exp.name))
            names.append((name, n, scale * base))
        if names[0][1] == names[-1][1]:
            raise ValueError(f"{exp.name}: the two prefixes have the same length; use other --prefix-scale values")
        plans[exp.name] = {"kind": "prefixes", "jobs": names, "official_steps": sum(steps)}
    for exp in experiments:
        source = _REUSES.get(exp.name)
        if source not in by_name or _schedule(exp.official)[0] is None:
            continue
        src_name, n, fraction = plans[source]["jobs"][-1]
        config, n_own = _prefix(exp.official, fraction)
        if n_own != n:
            raise ValueError(f"{exp.name}: its prefix ({n_own} steps) does not match {source}'s ({n})")
        name = f"{exp.name}@{n}"
        config = config.replace(trained_run=str(root / src_name))
        jobs.append(Job(name, config.to_dict(), root / name, "custom", "new", after=src_name, experiment=exp.name))
        plans[exp.name] = {"kind": "reuses", "job": name, "source": source,
                           "official_steps": sum(_schedule(exp.official)[1])}
    return jobs, plans


def _project(plan, results) -> dict:
    """An experiment's projected lane-seconds from its timed jobs (see the module docstring)."""
    if plan["kind"] == "once":
        return {"projected_s": results[plan["job"]]["metrics"]["wall_seconds"], "measured_in_full": True}
    if plan["kind"] == "reuses":
        return {"official_steps": plan["official_steps"], "reuses": plan["source"],
                "projected_s": results[plan["job"]]["metrics"]["wall_seconds"],
                "note": f"evaluates the trained {plan['source']} run as icl-jax reproduce does (no training)"}
    points = []
    for name, n, _ in plan["jobs"]:
        m, r = results[name]["metrics"], results[name]
        points.append({"steps": n, "wall_s": m["wall_seconds"], "train_loop_s": m.get("train_wall_seconds"),
                       "lane": r["lane"]})
    p, q = points[0], points[-1]
    per_step = (q["wall_s"] - p["wall_s"]) / (q["steps"] - p["steps"])
    fixed = p["wall_s"] - p["steps"] * per_step
    result = {"official_steps": plan["official_steps"], "prefixes": points, "per_step_s": per_step,
              "steps_per_s": (1.0 / per_step) if per_step > 0 else None, "fixed_s": fixed,
              "projected_s": fixed + plan["official_steps"] * per_step}
    if q["train_loop_s"] is not None:
        result["train_share_of_longer_prefix"] = q["train_loop_s"] / q["wall_s"]
    return result


def _makespan(projected: dict, lanes: int) -> dict:
    """Wall time of ``icl-jax reproduce --full --lanes N``: its plan order and prerequisites,
    the lanes' scheduling rule (icl_jax.experiments.lanes.schedule) on the projected durations."""
    from icl_jax.cli import _reproduce_plan
    from icl_jax.experiments.lanes import schedule

    with tempfile.TemporaryDirectory() as tmp:
        plan = _reproduce_plan(Path(tmp) / "full", "official", "new")
    names = [name for name, *_ in plan if name in projected]
    after = [_REUSES[name] if getattr(cfg, "trained_run", None) and _REUSES[name] in names else None
             for name, _, cfg, *_ in plan if name in projected]
    return schedule(names, [projected[n]["projected_s"] for n in names], after, lanes)


def main():
    from icl_jax.experiments.lanes import default_lanes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON file, updated as each timed run finishes")
    parser.add_argument("--only", nargs="*", default=None, help="registered experiment names (default: all)")
    parser.add_argument("--prefix-scale", nargs=2, type=float, default=(1.0, 3.0),
                        help="the two prefix lengths, in units of the shorter-prefix base")
    parser.add_argument("--min-fraction", type=float, default=0.02,
                        help="the base is at least this fraction of the official steps (default 0.02)")
    parser.add_argument("--lanes", type=int, default=default_lanes(),
                        help="timed runs at once, as icl-jax reproduce runs experiments (default: its default)")
    args = parser.parse_args()

    from icl_jax.engine.cores import use_cpu_cores

    use_cpu_cores()  # as the icl-jax command line
    import jax

    from icl_jax.experiments import get_experiment, list_experiments
    from icl_jax.experiments.lanes import run_jobs

    names = args.only or [e.name for e in list_experiments()]
    experiments = [get_experiment(n) for n in names]
    report = {"machine": {"cpu_count": os.cpu_count(), "backend": jax.default_backend(),
                          "devices": len(jax.devices())},
              "method": "two-prefix linear projection of run_experiment wall time, timed in lanes (module docstring)",
              "prefix_scale": list(args.prefix_scale), "min_fraction": args.min_fraction, "lanes": args.lanes,
              "experiments": {}}
    previous = {}
    if args.out and os.path.exists(args.out):
        with open(args.out) as f:
            previous = json.load(f).get("experiments", {})
    report["experiments"] = {k: v for k, v in previous.items() if k not in names}
    raw = {}

    def write():
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jobs, plans = _jobs(experiments, args.prefix_scale, args.min_fraction, root)

        def on_result(name, result):
            raw[name] = result
            report.setdefault("timed_runs", {})[name] = {"wall_s": result["metrics"]["wall_seconds"],
                                                         "lane": result["lane"], "start_s": result["start"]}
            write()

        results = run_jobs(jobs, args.lanes, root / "logs", on_result=on_result)
    for name, plan in plans.items():
        report["experiments"][name] = _project(plan, results)
    projected = report["experiments"]
    report["total_lane_s"] = sum(v["projected_s"] for v in projected.values())
    if set(projected) >= {e.name for e in list_experiments()}:
        sched = _makespan(projected, args.lanes)
        report["makespan_s"] = sched["makespan"]
        report["makespan_h"] = sched["makespan"] / 3600
        report["schedule"] = sched["jobs"]
    write()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
