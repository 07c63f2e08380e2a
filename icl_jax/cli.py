"""``icl-jax`` command line: list, run, resume, reproduce, baselines, theory.

Errors — a bad argument, an invalid configuration, a diverging run — are reported as one
line ``icl-jax: error: ...`` (exit code 2; 1 for a diverging run) naming the argument, or the
step, run and checkpoint; ``--debug`` shows the traceback instead (docs/experiments.md#errors)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers (got {text!r})") from None


def _dag_list(text: str) -> list[int]:
    """An official parent array: comma-separated parents, -1 / r / none for a root."""
    out = []
    for v in text.split(","):
        v = v.strip()
        if not v:
            continue
        if v.lower() in ("r", "none", "root"):
            out.append(-1)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise ValueError(f"--dag: expected comma-separated parents (-1 or r for a root), got {text!r}") from None
    return out


def _parent_lists(text: str) -> list[list[int]]:
    """'r;r;0;0,1' → [[], [], [0], [0, 1]] (one ';'-separated entry per node, 'r' = root)."""
    out = []
    for entry in text.split(";"):
        entry = entry.strip()
        out.append([] if entry in ("", "r", "-") else _int_list(entry))
    return out


def _check_seq_len(args, implied: int, source: str) -> None:
    """An explicit graph fixes T; a --seq-len given on the command line must agree."""
    if args.seq_len_given and args.seq_len != implied:
        raise ValueError(f"--seq-len {args.seq_len} conflicts with {source} (the graph implies T = {implied})")


def _build_task(args):
    from icl_jax.tasks import graphs
    from icl_jax.tasks.tasks import DAGTask, NGramTask, TreeTask, dag_task, tree_task

    if args.task == "tree":
        if args.dag is not None:
            graph = graphs.tree_from_dag_array(_dag_list(args.dag))
            _check_seq_len(args, graph.num_nodes + 1, "--dag")
            return TreeTask(graph, args.vocab_size, args.alpha)
        return tree_task(
            args.graph,
            vocab_size=args.vocab_size,
            seq_len=args.seq_len,
            alpha=args.alpha,
            graph_seed=args.graph_seed,
            root_prob=args.root_prob,
        )
    if args.task == "dag":
        if args.parent_lists is not None:
            g = graphs.graph_from_parent_lists(_parent_lists(args.parent_lists))
            _check_seq_len(args, g.num_nodes - 1, "--parent-lists")
            return DAGTask(g, args.vocab_size, args.roots, args.alpha)
        return dag_task("fig5", vocab_size=args.vocab_size, seq_len=args.seq_len, alpha=args.alpha, roots=args.roots)
    return NGramTask(args.vocab_size, args.seq_len, tuple(args.parents), args.init, args.query, args.alpha)


def _task_config(task) -> dict:
    from icl_jax.tasks.tasks import DAGTask, NGramTask

    cfg = {"task": type(task).__name__, "vocab_size": task.vocab_size, "seq_len": task.seq_len, "alpha": float(task.alpha)}
    if isinstance(task, NGramTask):
        cfg.update(parent_offsets=list(task.parent_offsets), init=task.init, query=task.query)
    elif isinstance(task, DAGTask):
        cfg.update(parents=[list(p) for p in task.graph.parents], roots=task.roots)
    else:
        cfg["dag"] = task.graph.dag_array.tolist()
    return cfg


def cmd_baselines(args) -> int:
    import jax

    from icl_jax.tasks.baselines import HARD_ESTIMATOR_EPS, estimate_baseline_losses

    task = _build_task(args)
    if args.samples < 2:
        raise ValueError(f"--samples must be >= 2 (got {args.samples})")
    losses = estimate_baseline_losses(
        task,
        jax.random.key(args.seed),
        args.samples,
        official_metric=args.task == "ngram",
        progress=not args.json and sys.stderr.isatty(),
    )
    baselines = {}
    for name, v in losses.items():
        base, _, metric = name.partition("/")
        entry = baselines.setdefault(base, {})
        if metric:
            entry["official_metric"], entry["official_metric_se"] = v["loss"], v["se"]
        else:
            entry.update(v)
    config = {**_task_config(task), "samples": args.samples, "seed": args.seed, "hard_estimator_eps": HARD_ESTIMATOR_EPS}
    result = {"config": config, "baselines": baselines, "oracle_closed_form": task.oracle_closed_form()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'baseline':<22}{'loss':>10}{'s.e.':>10}")
        for name, v in sorted(baselines.items(), key=lambda kv: kv[1]["loss"]):
            print(f"{name:<22}{v['loss']:>10.4f}{v['se']:>10.4f}")
        if result["oracle_closed_form"] is not None:
            print(f"{'oracle (closed form)':<22}{result['oracle_closed_form']:>10.4f}")
    return 0


def cmd_list(args) -> int:
    from icl_jax.experiments import list_experiments

    for exp in list_experiments():
        print(f"{exp.name:<28}{exp.description}")
    return 0


def _show_config(exp, preset: str, config) -> None:
    official = exp.official.to_dict()
    values = config.to_dict()
    print(f"{exp.name}: {preset} preset ({type(config).__name__}); * = differs from the official preset")
    rows = [(r["key"] + ("*" if values[r["key"]] != official[r["key"]] else ""), json.dumps(values[r["key"]]), r["type"],
             r["help"]) for r in config.describe()]
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'key':<{w[0]}}  {'value':<{w[1]}}  {'type':<{w[2]}}  meaning")
    for key, value, tp, help_ in rows:
        print(f"{key:<{w[0]}}  {value:<{w[1]}}  {tp:<{w[2]}}  {help_}")


def _print_headline(name: str, out, metrics: dict, summary: list) -> None:
    print(f"{name}: done in {metrics['wall_seconds']:.1f} s; results in {out}")
    width = max((len(label) for label, _ in summary), default=0)
    for label, value in summary:
        print(f"  {label:<{width}}  {value}")


def _mode(args) -> str:
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    return "resume" if args.resume else "overwrite" if args.overwrite else "new"


def cmd_run(args) -> int:
    from icl_jax.experiments import get_experiment, run_experiment

    exp = get_experiment(args.name)
    preset = "quick" if args.quick else "official"
    overrides = {}
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    config = exp.config(preset, overrides, args.set or ())
    if args.show_config:
        _show_config(exp, preset, config)
        return 0
    if args.out is None:
        raise ValueError("run: --out DIR is required (or pass --show-config)")
    metrics = run_experiment(args.name, args.out, config, preset=preset, mode=_mode(args), progress=sys.stderr.isatty())
    _print_headline(args.name, args.out, metrics, exp.summary(metrics))
    return 0


def cmd_resume(args) -> int:
    from icl_jax.experiments import get_experiment, resume_experiment

    name, metrics = resume_experiment(args.dir, progress=sys.stderr.isatty())
    _print_headline(name, args.dir, metrics, get_experiment(name).summary(metrics))
    return 0


def cmd_animate(args) -> int:
    """Every matrix-valued recorded metric of the run in DIR as DIR/<experiment>_<metric>.gif."""
    import matplotlib

    matplotlib.use("Agg")
    from icl_jax.analysis.animation import animate_maps, frame_indices, matrix_metrics
    from icl_jax.experiments import get_experiment, load_run

    run = load_run(args.dir)
    if run.trajectories is None:
        raise ValueError(f"{args.dir}: the run has no recorded trajectories (run/trajectory.npz); finish it first")
    n = len(run.seeds)
    if not 0 <= args.seed_index < n:
        raise ValueError(f"--seed-index must be in [0, {n - 1}] (the run has {n} seeds), got {args.seed_index}")
    g = len(next(iter(run.grid.values()))) if run.grid else 1
    if not 0 <= args.grid_index < g:
        raise ValueError(f"--grid-index must be in [0, {g - 1}] (the run has {g} grid points), got {args.grid_index}")
    maps = matrix_metrics(run.trajectories, args.seed_index, args.grid_index)
    if not maps:
        raise ValueError(f"{args.dir}: {run.experiment} records no matrix-valued metric over training "
                         f"(recorded: {sorted(run.trajectories.get('metrics') or {})})")
    steps = np.asarray(run.trajectories["steps"])
    keep = frame_indices(len(steps), args.max_frames)
    axes = get_experiment(run.experiment).map_axes
    for name, frames in maps.items():
        xlabel, ylabel = axes.get(name.split("_head")[0], ("column", "row"))
        out = animate_maps(Path(args.dir) / f"{run.experiment}_{name}.gif", steps[keep].tolist(),
                           [{"frames": frames[keep], "title": name, "xlabel": xlabel, "ylabel": ylabel}],
                           f"{run.experiment}: {name} over training (seed {run.seeds[args.seed_index]})", fps=args.fps)
        print(out)
    return 0


#: experiment -> the experiment whose finished run it evaluates (``trained_run``) instead of
#: training the same recipe again, when ``reproduce`` runs both with equal training settings
_REUSES = {"chen-generalization": "chen-cw-a"}


def _reproduce_plan(out: Path, preset: str, mode: str, variants: bool = False, refused: list | None = None) -> list:
    """(name, experiment, config, folder, mode) of every registered experiment (or, with
    ``variants``, of every :data:`~icl_jax.experiments.variants.VARIANTS` entry), longest first
    (:func:`~icl_jax.experiments.lanes.run_steps`), each config and output folder checked
    before the first run starts; with ``--resume`` the runs already started
    continue (their settings must match) and the others start. An experiment of ``_REUSES``
    runs after the run it reuses and gets that folder as ``trained_run`` (checked when it starts,
    since the folder is written by the earlier run; reproduce stops at the first failing run, so
    it never starts on an unfinished one). A run that had finished (``metrics.json``) gets mode
    "done": ``--resume`` reports it from its metrics instead of running it again (``icl-jax resume
    DIR`` re-evaluates one). Given a ``refused`` list, a folder that fails its check is appended
    to it as (name, reason) and left out of the plan instead of raising (``--summary``)."""
    from icl_jax.experiments import check_out, list_experiments
    from icl_jax.experiments.chen.generalization import training_differences
    from icl_jax.experiments.lanes import run_steps
    from icl_jax.experiments.variants import VARIANTS

    if variants:
        entries = [(v.name, v.exp, v.config(preset)) for v in VARIANTS]
    else:
        entries = [(exp.name, exp, exp.preset(preset)) for exp in list_experiments()]
    configs = {name: config for name, _, config in entries}

    # longest first (training steps × runs; a reusing run trains nothing), so that in lanes no
    # long run starts last while the others idle; a reusing run goes after the run it reuses
    def reuses(name):
        source = _REUSES.get(name)
        return source in configs and not training_differences(configs[name], configs[source])

    entries.sort(key=lambda entry: 0 if reuses(entry[0]) else -run_steps(entry[2]))
    names = [name for name, *_ in entries]
    order = {n: max(i, names.index(_REUSES[n]) + 0.5) if _REUSES.get(n) in names else i for i, n in enumerate(names)}
    entries.sort(key=lambda entry: order[entry[0]])
    plan = []
    for name, exp, config in entries:
        folder = out / name
        exp.check(config)
        if reuses(name):
            config = config.replace(trained_run=str(out / _REUSES[name]))
        run_mode = "new" if mode == "resume" and not (folder / "config.json").is_file() else mode
        try:
            check_out(exp, config, folder, run_mode)
        except ValueError as err:
            if refused is not None:
                refused.append((name, str(err)))
                continue
            if mode == "new":
                raise ValueError(f"--out {out}: {folder} already holds a run; pass --resume to continue the runs "
                                 "there or --overwrite to replace them") from None
            raise
        if run_mode == "resume" and (folder / "metrics.json").is_file():
            run_mode = "done"  # finished (its settings match): reported as it is, not run again
        plan.append((name, exp, config, folder, run_mode))
    return plan


def _lanes(args, jobs: int) -> int:
    from icl_jax.experiments.lanes import accelerator_host, default_lanes, lane_cores

    if args.lanes == "auto":
        return default_lanes(jobs)
    try:
        lanes = int(args.lanes)
    except ValueError:
        raise ValueError(f"--lanes must be 'auto' or an integer >= 1 (got {args.lanes!r})") from None
    lane_cores(lanes)  # validates against the cores available
    if lanes > 1 and accelerator_host():
        raise ValueError(f"--lanes {lanes}: lanes split CPU cores; on this accelerator host run --lanes 1 "
                         "(or JAX_PLATFORMS=cpu for CPU lanes)")
    return lanes


def cmd_reproduce(args) -> int:
    from icl_jax.experiments import run_experiment
    from icl_jax.experiments.lanes import Job, run_jobs

    if args.quick == args.full:
        raise ValueError("reproduce needs exactly one of --quick (CPU, minutes) or --full (GPU)")
    mode = _mode(args)
    if args.summary and mode != "new":
        raise ValueError("--summary trains nothing: it excludes --resume and --overwrite")
    _lanes(args, 1)  # a bad --lanes fails before the plan is built
    preset = "quick" if args.quick else "official"
    out = Path(args.out)
    if args.summary and not out.is_dir():
        raise ValueError(f"--summary: --out {out} is not a folder of runs")
    # --summary reads the runs as --resume would (settings checked), and runs none of them
    refused = [] if args.summary else None
    plan = _reproduce_plan(out, preset, "resume" if args.summary else mode, variants=args.variants, refused=refused)
    done = {name: json.loads((folder / "metrics.json").read_text())
            for name, _, _, folder, run_mode in plan if run_mode == "done"}
    todo = [entry for entry in plan if entry[0] not in done]
    if args.summary:
        todo.sort(key=lambda entry: entry[0])
        _write_summary(out, plan, done, args, [_progress_note(folder) for _, _, _, folder, _ in todo], todo,
                       refused=refused)
        return 0
    lanes = _lanes(args, max(1, len(todo)))
    what = "variants" if args.variants else "experiments"
    if done:
        print(f"[reproduce] {len(done)} finished before, reported as they are: {', '.join(done)}", file=sys.stderr)
    start = time.perf_counter()
    if lanes == 1:
        results = dict(done)
        for name, exp, config, folder, run_mode in todo:
            print(f"[reproduce] {name} ...", file=sys.stderr, flush=True)
            results[name] = run_experiment(exp.name, folder, config, preset=preset,
                                           mode=run_mode, progress=sys.stderr.isatty())
    else:
        print(f"[reproduce] {len(todo)} {what} in {lanes} lanes (logs in {out / 'logs'})", file=sys.stderr, flush=True)
        jobs = [Job(name, config.to_dict(), folder, preset, run_mode,  # a variant records the preset it varies
                    after=_REUSES[name] if getattr(config, "trained_run", None) and _REUSES[name] not in done else None,
                    experiment=None if name == exp.name else exp.name)
                for name, exp, config, folder, run_mode in todo]
        results = {**done, **{name: r["metrics"] for name, r in run_jobs(jobs, lanes, out / "logs").items()}}
    _write_summary(out, plan, results, args, [], [], lanes=lanes, seconds=time.perf_counter() - start, ran=todo)
    return 0


def _progress_note(folder: Path) -> str:
    """How far an unfinished run in ``folder`` got: the step of each checkpoint under ``run/``
    (an experiment that trains several models keeps one per model), or not started."""
    from icl_jax.engine.checkpoint import read_meta

    notes = []
    for ckpt in sorted((folder / "run").rglob("checkpoint.npz")):
        meta = read_meta(ckpt)
        where = ckpt.parent.relative_to(folder).as_posix()
        seconds = meta.get("train_seconds")  # absent in checkpoints written before it was recorded
        notes.append(f"{where}/ at step {meta['step']:,}" + (f" ({seconds:,.0f} s of training)" if seconds else ""))
    if notes:
        return "checkpoints: " + "; ".join(notes)
    return "started, no checkpoint yet" if (folder / "config.json").is_file() else "not started"


def _train_seconds(metrics) -> float:
    """The sum of every ``train_wall_seconds`` in a run's metrics (one per trained model, at any
    depth): its training time across all the calls that made it, which ``wall_seconds`` (that
    call's only) does not show for a run resumed from checkpoints."""
    if isinstance(metrics, dict):
        return sum(float(v) if k == "train_wall_seconds" else _train_seconds(v) for k, v in metrics.items())
    return 0.0


def _write_summary(out: Path, plan: list, results: dict, args, pending_notes: list, pending: list, *,
                   lanes: int = 0, seconds: float = 0.0, ran: list = (), refused: list = ()) -> None:
    """``out/summary.md``: every finished run's summary rows (by name), its wall time, and a
    line on each run not finished (``pending`` with ``pending_notes``) and on each folder whose
    run does not match the preset (``refused``: (name, reason)); both only with --summary."""
    what = "variants" if args.variants else "experiments"
    done_before = {name for name, *_, run_mode in plan if run_mode == "done"}
    title = "# icl-jax reproduce " + ("--quick" if args.quick else "--full") + (" --variants" if args.variants else "")
    lines = [title, "", "| experiment | quantity | value |", "|---|---|---|"]
    for name, exp, *_ in sorted(plan, key=lambda entry: entry[0]):  # by name: stable across plan orders
        if name not in results:
            continue
        metrics = results[name]
        for label, value in exp.summary(metrics):
            lines.append(f"| {name} | {label} | {value} |")
        earlier = metrics.get("earlier_calls_wall_seconds")
        extra = f" (this call; earlier calls that finished it: {' + '.join(f'{s:.1f}' for s in earlier)})" if earlier else ""
        lines.append(f"| {name} | wall time (s) | {metrics['wall_seconds']:.1f}{extra} |")
        trained = _train_seconds(metrics)
        # trained by earlier calls (resumed after a kill, or in parallel processes); a run that
        # reuses another's trained model (``trained_run``) reports that training in its own rows
        if trained > metrics["wall_seconds"] and "trained_run" not in metrics:
            lines.append(f"| {name} | training time over all its calls (s) | {trained:,.0f} |")
    if args.variants:
        from icl_jax.experiments.variants import get_variant

        lines += ["", "| variant | experiment | changed keys | what it answers |", "|---|---|---|---|"]
        preset = "quick" if args.quick else "official"
        for name, *_ in sorted(plan, key=lambda entry: entry[0]):
            v = get_variant(name)
            changed = ", ".join(f"{k}={val}" for k, val in v.keys(preset).items())
            lines.append(f"| {name} | {v.experiment} | {changed} | {v.question} |")
    lines.append("")
    if ran or not done_before and not pending:
        noun = what if len(ran) != 1 else what[:-1]
        lines.append(f"{len(ran)} {noun} in {lanes} lane(s): {seconds:.0f} s wall in all.")
    if done_before:
        own = sum(results[name]["wall_seconds"] for name in done_before)
        lines.append(f"{len(done_before)}{' more' if ran else ''} had finished before this call and are reported from "
                     f"their metrics.json (their own wall times above sum to {own:.0f} s): "
                     f"{', '.join(sorted(done_before))}.")
    if pending:
        lines += ["", f"Not finished ({len(pending)}; `reproduce --resume` continues them):", ""]
        lines += [f"- {entry[0]}: {note}" for entry, note in zip(pending, pending_notes)]
    if refused:
        lines += ["", f"Not reported ({len(refused)}; the folder does not hold a run of the current preset):", ""]
        lines += [f"- {name}: {reason}" for name, reason in sorted(refused)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"[reproduce] wrote {out / 'summary.md'}", file=sys.stderr)


def cmd_theory_nichani_gradient(args) -> int:
    from icl_jax.tasks.tasks import tree_task
    from icl_jax.theory.nichani import nichani_gradient_report

    from icl_jax.tasks.graphs import tree_from_dag_array

    if args.dag is not None:
        graph = tree_from_dag_array(_dag_list(args.dag))
        if args.seq_len is not None and args.seq_len != graph.num_nodes + 1:
            raise ValueError(f"--seq-len {args.seq_len} conflicts with --dag ({graph.num_nodes} nodes: T = {graph.num_nodes + 1})")
        seq_len, args.graph = graph.num_nodes + 1, "dag"
    else:
        graph = args.graph
        seq_len = args.seq_len if args.seq_len is not None else (6 if args.graph == "manual" else 20)
    task = tree_task(
        graph,
        vocab_size=args.vocab_size,
        seq_len=seq_len,
        alpha=args.alpha,
        graph_seed=args.graph_seed,
        root_prob=args.root_prob,
    )
    report = nichani_gradient_report(
        task, beta0=args.beta0, samples=args.samples, draws=args.draws, eps=args.eps, seed=args.seed, labels=args.labels
    )
    report["config"]["graph"] = args.graph
    report["config"]["graph_seed"] = args.graph_seed
    if args.plot is not None:
        from icl_jax.analysis.gradient_plots import plot_gradient_comparison

        nan = float("nan")
        as_array = lambda m: [[nan if v is None else v for v in row] for row in m]  # noqa: E731
        plot_gradient_comparison(
            args.plot,
            report["autodiff"],
            report["first_order"],
            report["parents"],
            f"Nichani reduced model, dL/dA1 at init: {args.graph}, S={task.vocab_size}, T={task.seq_len}, "
            f"beta0={args.beta0:g}",
            population_TxT=as_array(report["population"]),
        )
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cfg = report["config"]
    print(
        f"graph {args.graph} (dag {cfg['dag']}), S={cfg['vocab_size']}, T={cfg['seq_len']}, alpha={cfg['alpha']:g}, "
        f"beta0={cfg['beta0']:g}, samples={cfg['samples']}, draws={cfg['draws']}, eps={cfg['eps']:g}, {cfg['labels']} labels"
    )
    print(f"{'vs autodiff':<14}{'rel. error':>12}{'corr':>10}{'argmax=parent':>15}")
    print(f"{'autodiff':<14}{'':>12}{'':>10}{report['argmax_recovery_autodiff']:>15.3f}")
    for name in ("first_order", "population"):
        print(
            f"{name:<14}{report['rel_error_' + name]:>12.3e}{report['corr_' + name]:>10.4f}"
            f"{report['argmax_recovery_' + name]:>15.3f}"
        )
    edge, tr = report["edge_chi2"], report["trace_minus_one"]
    print(f"E[I_chi2(edge)] = {edge['mean']:.4f} +- {edge['se']:.4f};  E[tr pi - 1] = {tr['mean']:.4f} +- {tr['se']:.4f}")
    print(f"(population compared on {report['population_rows_compared']}; argmax over k <= i, self included)")
    if "plot" in report:
        print(f"figure: {report['plot']}")
    return 0


def cmd_theory_chen_selection(args) -> int:
    import warnings

    from icl_jax.theory.chen import chen_selection_report

    with warnings.catch_warnings():  # the report's warnings are printed below (and kept in --json)
        warnings.simplefilter("ignore")
        report = chen_selection_report(
            args.vocab_size, args.parents, args.heads, args.max_degree, args.alpha, draws=args.draws, seed=args.seed
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cfg = report["config"]
    print(
        f"Chen selection: d={cfg['vocab_size']}, parents {tuple(cfg['parent_offsets'])}, H={cfg['num_heads']}, "
        f"D={cfg['max_degree']}, alpha={cfg['alpha']:g}, draws={cfg['draws']}, seed={cfg['seed']} (head h copies offset h)"
    )
    print(f"{'offsets':<12}{'heads':>6}{'mod. chi2':>11}{'s.e.':>9}{'chi2':>9}{'s.e.':>9}{'H(X0|X_-S)':>12}{'wins':>7}")
    for row in report["subsets"]:
        name = "{" + ",".join(map(str, row["offsets"])) + "}"
        mark = "  <- S*" if row["offsets"] == report["selected"] else ""
        print(
            f"{name:<12}{row['label']:>6}{row['modified_chi2']:>11.4f}{row['modified_chi2_se']:>9.4f}{row['chi2']:>9.4f}"
            f"{row['chi2_se']:>9.4f}{row['conditional_entropy']:>12.4f}{row['win_fraction']:>7.3f}{mark}"
        )
    sel = "{" + ",".join(map(str, report["selected"])) + "}"
    print(f"selected S* = argmax modified chi2 = {sel} ({report['selected_label']}); gap to runner-up "
          f"{report['gap']:.4f} +- {report['gap_se']:.4f}")
    ties = ", ".join("{" + ",".join(map(str, s)) + "}" for s in report["chi2_maximisers"])
    print(f"argmax of the standard chi2: {ties}")
    for warning in report.get("warnings", ()):
        print(f"warning: {warning}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="icl-jax", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("baselines", help="Monte-Carlo loss of every reference predictor")
    b.add_argument("--task", choices=["tree", "dag", "ngram"], default="tree")
    b.add_argument("--graph", default="chain", help="tree: chain | icl | random | fig9 | manual")
    b.add_argument("--dag", default=None, help="tree: explicit parent array (overrides --graph), e.g. --dag=-1,0,0,1,2")
    b.add_argument("--graph-seed", type=int, default=0)
    b.add_argument("--root-prob", type=float, default=0.5, help="fig9 root probability p")
    b.add_argument("--parent-lists", default=None, help="dag: ';'-separated parent lists, target last, 'r' = root, e.g. 'r;r;0,1;1,2'")
    b.add_argument("--roots", choices=["uniform", "official"], default="uniform")
    b.add_argument("--parents", type=_int_list, default=[1, 2], help="ngram: parent offsets, e.g. 1,2")
    b.add_argument("--init", choices=["uniform", "stationary"], default="uniform")
    b.add_argument("--query", choices=["natural", "uniform"], default="natural")
    b.add_argument("--vocab-size", type=int, default=None)
    b.add_argument("--seq-len", type=int, default=None)
    b.add_argument("--alpha", type=float, default=0.1)
    b.add_argument("--samples", type=int, default=65536)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_baselines)

    sub.add_parser("list", help="registered experiments").set_defaults(func=cmd_list)

    r = sub.add_parser("run", help="run one registered experiment")
    r.add_argument("name")
    r.add_argument("--quick", action="store_true", help="the quick preset (CPU minutes) instead of the official recipe")
    r.add_argument("--seeds", type=int, default=None, help="shorthand for --set seeds=N")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (see --show-config)")
    r.add_argument("--out", type=Path, default=None, help="run folder (must be empty unless --resume / --overwrite)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--overwrite", action="store_true", help="delete the run in --out and start again")
    r.add_argument("--show-config", action="store_true", help="print every config key with its value, type and meaning")
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("resume", help="continue a killed run from its checkpoint, with the config stored in DIR")
    rs.add_argument("dir", type=Path)
    rs.set_defaults(func=cmd_resume)

    an = sub.add_parser("animate", help="matrix-valued metrics of a run over training as GIFs (e.g. Chen's W)")
    an.add_argument("dir", type=Path)
    an.add_argument("--seed-index", type=int, default=0, help="which run of the seed axis (default 0)")
    an.add_argument("--grid-index", type=int, default=0, help="which grid point of a sweep (default 0)")
    an.add_argument("--fps", type=int, default=6, help="frames per second")
    an.add_argument("--max-frames", type=int, default=60,
                    help="at most this many records, log-spaced in record index (early training changes fastest)")
    an.set_defaults(func=cmd_animate)

    q = sub.add_parser("reproduce", help="run every registered experiment; figures + summary.md")
    q.add_argument("--quick", action="store_true", help="CPU-sized versions (minutes)")
    q.add_argument("--full", action="store_true", help="paper-sized versions (GPU)")
    q.add_argument("--out", type=Path, default=Path("figures"))
    q.add_argument("--resume", action="store_true", help="continue the runs already in --out")
    q.add_argument("--overwrite", action="store_true", help="replace the runs already in --out")
    q.add_argument("--variants", action="store_true",
                   help="run the variants (extra seeds, the official code's behaviour) instead of the presets; "
                        "see icl_jax/experiments/variants.py")
    q.add_argument("--summary", action="store_true",
                   help="train nothing: rewrite --out/summary.md from the finished runs there (their settings "
                        "checked as --resume checks them) and list the unfinished ones")
    q.add_argument("--lanes", default="auto", metavar="N|auto",
                   help="experiments run at once, each in a process pinned to its share of the cores "
                        "(auto: one per core on a CPU-only host, 1 with an accelerator)")
    q.set_defaults(func=cmd_reproduce)

    th = sub.add_parser("theory", help="numerical checks of the papers' theory")
    theory = th.add_subparsers(dest="theory_command", required=True)
    ng = theory.add_parser(
        "nichani-gradient",
        help="Nichani et al.: layer-1 gradient at init, autodiff vs first-order vs chi2 population form",
    )
    ng.add_argument("--graph", choices=["chain", "icl", "random", "fig9", "manual"], default="chain")
    ng.add_argument("--dag", default=None, help="explicit parent array (overrides --graph), e.g. --dag=-1,0,0,1,2 (r = root)")
    ng.add_argument("--graph-seed", type=int, default=0)
    ng.add_argument("--root-prob", type=float, default=0.5, help="fig9 root probability p")
    ng.add_argument("--vocab-size", type=int, default=10)
    ng.add_argument("--seq-len", type=int, default=None, help="T incl. the query (default 20; 6 for manual)")
    ng.add_argument("--alpha", type=float, default=0.1)
    ng.add_argument("--beta0", type=float, default=1e-3, help="A2 = beta0 * I at init")
    ng.add_argument("--samples", type=int, default=65536, help="sequences in the batch (autodiff, first order)")
    ng.add_argument("--draws", type=int, default=1024, help="kernels pi for the population Monte Carlo")
    ng.add_argument("--eps", type=float, default=1e-3, help="loss floor epsilon")
    ng.add_argument("--labels", choices=["soft", "hard"], default="soft")
    ng.add_argument("--seed", type=int, default=0)
    ng.add_argument("--plot", type=Path, default=None, help="also write the comparison figure here")
    ng.add_argument("--json", action="store_true")
    ng.set_defaults(func=cmd_theory_nichani_gradient)
    cs = theory.add_parser(
        "chen-selection",
        help="Chen et al.: modified and standard chi2 MI of every head subset, S* = argmax modified chi2",
    )
    cs.add_argument("--vocab-size", type=int, default=3)
    cs.add_argument("--parents", type=_int_list, default=[1, 2], help="parent offsets, e.g. 1,2")
    cs.add_argument("--heads", type=int, default=3, help="H (head h copies offset h)")
    cs.add_argument("--max-degree", type=int, default=2, help="D, the largest subset size")
    cs.add_argument("--alpha", type=float, default=0.1)
    cs.add_argument("--draws", type=int, default=4096, help="kernels pi for the Monte Carlo over the prior")
    cs.add_argument("--seed", type=int, default=0)
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=cmd_theory_chen_selection)
    return p


_TASK_DEFAULTS = {"tree": (10, 20), "dag": (5, 32), "ngram": (3, 100)}


def main(argv=None) -> int:
    # One XLA host device per core before the first computation, so a sweep's runs use every
    # core (icl_jax.engine.cores); an XLA_FLAGS device count set by the user is kept.
    from icl_jax.engine.cores import use_cpu_cores

    use_cpu_cores()
    # The CLI only writes figure files: a non-interactive backend, chosen here and not at
    # import time of the library (a notebook importing icl_jax keeps its own backend).
    import matplotlib

    matplotlib.use("Agg")
    from icl_jax.experiments.lanes import LaneError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "baselines":
        args.seq_len_given = args.seq_len is not None
        s, t = _TASK_DEFAULTS[args.task]
        args.vocab_size = s if args.vocab_size is None else args.vocab_size
        if args.seq_len is None:
            args.seq_len = 6 if args.graph == "manual" and args.task == "tree" else t
    from icl_jax.engine import NonFiniteLossError

    try:
        return args.func(args)
    except (ValueError, NonFiniteLossError, OSError, LaneError) as err:  # OSError: e.g. an unwritable --out
        if args.debug:
            raise
        parser.exit(1 if isinstance(err, (NonFiniteLossError, LaneError)) else 2, f"icl-jax: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
