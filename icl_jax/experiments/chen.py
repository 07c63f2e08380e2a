"""Chen, Sheen, Wang & Yang (2024) experiments (spec §5, §7): the official recipes as stage
lists, the Appendix-B full model, the bigram job, and new length / prior generalisation.

Registered: ``chen-three-stage-d2``, ``chen-three-stage-d3``, ``chen-cw-a``, ``chen-cwa``,
``chen-full-model``, ``chen-bigram``, ``chen-generalization``. Each trains all its seeds in
one vmapped engine call (seed = the run's dataset: the initialisation is deterministic, as in
the official code), writes the engine's run folder ``DIR/run`` (checkpoints, resumable with
``--set resume=true``), ``metrics.json`` and figures.

Every config is flat (``--set key=value``): the stages are ``stage_groups`` (letters of the
official ``--train-cmd``: "C", "W", "a", "CW", "CWa", or "all" for every parameter of the
full model), ``stage_steps`` and ``stage_lrs``, plain SGD as in the official code. Defaults
follow the paper where the official code deviates (spec §9): ``loss="prob_ce"`` (the true
cross-entropy, ε-floored) and ``window="paper"``; ``--set loss=official window=official
include_raw=true`` gives the official behaviour. Both losses are always reported.
``data="fixed"`` (official) is full-batch GD on ``num_train`` sequences drawn once per seed;
``data="fresh"`` draws ``batch_size`` new sequences every step (a population-risk proxy).
Test losses use one held-out set of ``test_size`` sequences shared by every seed.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_bars, plot_heatmaps, plot_lines
from icl_jax.experiments.registry import Experiment, register
from icl_jax.models.induction import InductionModel
from icl_jax.models.induction_layers import copier_attention, subset_shares
from icl_jax.losses import cross_entropy_probs, floored_probs, official_double_softmax_ce
from icl_jax.tasks.baselines import HARD_ESTIMATOR_EPS, baseline_losses, gih_predictive, ngram_match
from icl_jax.tasks.sampling import Batch
from icl_jax.tasks.tasks import NGramTask, chen_bigram_task

TEST_STREAM = 10_000_019  # fold_in index of the test set: independent of every run key

COMMON = {
    "seed": 2024,
    "seeds": 1,
    "task": "ngram",
    "vocab_size": 3,
    "seq_len": 100,
    "parents": [1, 2],
    "alpha": 0.1,
    "init": "uniform",
    "bigram_variant": "official",
    "num_heads": 3,
    "max_degree": 2,
    "window": "paper",
    "window_size": 0,  # 0: M = num_heads
    "include_raw": False,
    "full_model": False,
    "w_plus": 3.0,
    "w_minus": 0.1,
    "c_init": 0.01,
    "a_init": 0.01,
    "proj_init": 0.001,
    "loss": "prob_ce",
    "labels": "hard",
    "loss_eps": 1e-3,
    "data": "fixed",
    "num_train": 9000,
    "batch_size": 9000,
    "stage_groups": ["C", "W", "a"],
    "stage_steps": [2000, 5000, 5000],
    "stage_lrs": [1.0, 1e5, 1.0],
    "test_size": 10000,
    "record_every": 10,
    "resume": False,
}
_GROUPS = {"C": "C", "W": "W", "a": "a"}


# ----------------------------------------------------------------------------- helpers
def _seeds(config) -> list[int]:
    return [config["seed"] + i for i in range(config["seeds"])]


def chen_task(config, **changes):
    """The config's task (n-gram or the official bigram job), with optional changes of
    ``seq_len`` / ``alpha`` for generalisation tests."""
    cfg = {**config, **changes}
    if cfg["task"] == "bigram":
        return chen_bigram_task(vocab_size=cfg["vocab_size"], seq_len=cfg["seq_len"], alpha=cfg["alpha"], variant=cfg["bigram_variant"])
    if cfg["task"] != "ngram":
        raise ValueError(f"task must be 'ngram' or 'bigram' (got {cfg['task']!r})")
    return NGramTask(cfg["vocab_size"], cfg["seq_len"], tuple(cfg["parents"]), cfg["init"], "natural", cfg["alpha"])


def chen_model(config) -> InductionModel:
    return InductionModel(
        config["vocab_size"],
        num_heads=config["num_heads"],
        max_degree=config["max_degree"],
        window=config["window"],
        window_size=config["window_size"] or None,
        include_raw=config["include_raw"],
        full=config["full_model"],
        w_plus=config["w_plus"],
        w_minus=config["w_minus"],
        c_init=config["c_init"],
        a_init=config["a_init"],
        proj_init=config["proj_init"],
    )


def chen_stages(config) -> list[engine.Stage]:
    """Plain-SGD stages from ``stage_groups`` / ``stage_steps`` / ``stage_lrs`` (spec §5.2)."""
    groups, steps, lrs = config["stage_groups"], config["stage_steps"], config["stage_lrs"]
    if not (len(groups) == len(steps) == len(lrs) >= 1):
        raise ValueError(
            f"stage_groups, stage_steps and stage_lrs must have the same length >= 1 (got {len(groups)}, {len(steps)}, {len(lrs)})"
        )
    stages = []
    for g, n, lr in zip(groups, steps, lrs):
        if g == "all":
            names = None
        else:
            bad = [ch for ch in g if ch not in _GROUPS]
            if bad or not g:
                raise ValueError(f"stage_groups: {g!r} must be letters of 'CWa' or 'all'")
            names = tuple(_GROUPS[ch] for ch in g)
        stages.append(engine.Stage(int(n), groups=names, learning_rate=float(lr), optimizer="sgd", name=g))
    return stages


def _loss_kw(config) -> dict:
    return {"loss": config["loss"], "labels": config["labels"], "eps": config["loss_eps"]}


def _test_set(task, config, size=None) -> Batch:
    key = jax.random.fold_in(jax.random.key(config["seed"]), TEST_STREAM)
    return task.sample(key, size or config["test_size"])


def _test_losses(params, test: Batch, model, config) -> dict:
    """Mean test loss in both conventions (hard labels, as the official validation)."""
    eps = config["loss_eps"]
    return {
        "prob_ce": model.loss(params, test, loss="prob_ce", eps=eps),
        "official": model.loss(params, test, loss="official"),
    }


def _baselines(task, test: Batch) -> dict:
    """Every baseline in both conventions (``name`` and ``name/official``), scored against
    the sampled label as the official validation; the oracle predicts the true law π."""
    out = {}
    for name, v in baseline_losses(task, test, labels="hard", official_metric=True).items():
        v = np.asarray(v, np.float64)
        out[name] = {"loss": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(v.size))}
    return out


def _gih_loss(test: Batch, offsets, a: float, d: int) -> dict:
    """GIH(S, a) at the trained a on the test set, both conventions (ε as the baselines)."""
    p = gih_predictive(test.tokens_BxT, ngram_match(offsets, test.tokens_BxT), d, a)
    p = floored_probs(p, HARD_ESTIMATOR_EPS)
    y = jax.nn.one_hot(test.label_B, d)
    return {"prob_ce": float(jnp.mean(cross_entropy_probs(p, y))), "official": float(jnp.mean(official_double_softmax_ce(p, y)))}


def _per_seed(values) -> dict:
    v = np.asarray(values, np.float64).reshape(-1)
    return {"mean": float(v.mean()), "sd": float(v.std()), "per_seed": v.tolist()}


def _fmt(stat: dict, digits: int = 3) -> str:
    if len(stat["per_seed"]) == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f} ({len(stat['per_seed'])} seeds)"


def _head_offsets(model: InductionModel, params_final) -> list[int]:
    """The offset each head attends to most at the query slot (RPE part)."""
    att = np.asarray(copier_attention(params_final, model, 1 + 2 * model.max_offset))[-1]  # [K', H]
    offs = ([0] if model.use_self_offset else []) + list(range(1, model.max_offset + 1))
    return [int(offs[k]) for k in np.argmax(att, axis=0)]


def _own_offset_attention(params, model: InductionModel, seq_len: int) -> jax.Array:
    """Query-slot attention of head h on offset h (the offset it was initialised towards)."""
    att = copier_attention(params, model, seq_len)[-1]  # [K', H]
    shift = 1 if model.use_self_offset else 0
    h = np.arange(model.num_heads)
    return att[h + shift, h]


# ------------------------------------------------------------------------------ training
def train_chen(config, out: Path, progress: bool):
    """Train every seed of ``config`` in one sweep; return (task, model, result, metrics
    with the grid axis dropped, recorded steps, test set)."""
    task, model = chen_task(config), chen_model(config)
    stages = chen_stages(config)
    test = _test_set(task, config)
    kw = _loss_kw(config)
    init = model.init()
    seq_len = task.seq_len
    # the simplified model trains on window statistics (same loss, ~10× faster per step)
    fast = not (model.full or model.use_self_offset)
    prep = model.window_stats if fast else (lambda b: b)
    test_in = model.window_stats(test, compress=True) if fast else test

    def loss(params, batch):
        return model.loss(params, batch, **kw)

    def record(params, step):
        tl = _test_losses(params, test_in, model, config)
        return {
            "shares": subset_shares(params),
            "a": params["a"],
            "W": params["W"],
            "own_offset_attention": _own_offset_attention(params, model, seq_len),
            "test_loss": tl["prob_ce"],
            "test_loss_official": tl["official"],
        }

    if config["data"] == "fixed":
        n = config["num_train"]
        data = engine.CommonSamples(lambda key, hp: prep(task.sample(key, n)))
    elif config["data"] == "fresh":
        b = config["batch_size"]
        data = engine.FreshSamples(lambda key, hp: prep(task.sample(key, b)))
    else:
        raise ValueError(f"data must be 'fixed' or 'fresh' (got {config['data']!r})")
    res = engine.sweep(
        loss, lambda key, hp: init, stages, data, seeds=_seeds(config), metrics=record,
        record_every=config["record_every"], out_dir=out / "run", resume=config["resume"],
        progress=progress, config=config,
    )
    metrics = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    return task, model, res, metrics, np.asarray(res.record_steps), test


def chen_result(config, task, model, res, m, steps, test) -> dict:
    """metrics.json body shared by every training experiment."""
    labels = list(model.subset_labels())
    subsets = [list(s) for s in model.subsets()]
    final_shares = m["shares"][:, -1]  # [N, n_S]
    winners = np.argmax(final_shares, axis=1)
    params0 = jax.tree.map(lambda x: np.asarray(x)[0, 0], res.params)
    head_offs = _head_offsets(model, params0)
    sel = subsets[int(winners[0])]
    sel_offsets = sorted(head_offs[h - 1] for h in sel if h > 0)
    a_final = m["a"][:, -1]
    base = _baselines(task, test)
    gih = _gih_loss(test, sel_offsets, float(a_final[0]), task.vocab_size) if sel_offsets else None
    return {
        "seeds": list(res.seeds),
        "subsets": labels,
        "subset_heads": subsets,
        "selected_subset": labels[int(winners[0])],
        "selected_subset_per_seed": [labels[int(w)] for w in winners],
        "selected_heads": sel,
        "selected_offsets": sel_offsets,
        "head_offsets_final": head_offs,
        "final_shares": {lab: _per_seed(final_shares[:, i]) for i, lab in enumerate(labels)},
        "subset_shares": {
            "steps": steps.tolist(),
            "mean": m["shares"].mean(0).tolist(),
        },
        "a": {"steps": steps.tolist(), "mean": m["a"].mean(0).tolist(), "final": _per_seed(a_final)},
        "own_offset_attention_final": m["own_offset_attention"][:, -1].mean(0).tolist(),
        "final_loss": {
            "prob_ce": _per_seed(m["test_loss"][:, -1]),
            "official": _per_seed(m["test_loss_official"][:, -1]),
        },
        "initial_loss": {"prob_ce": float(m["test_loss"][0, 0]), "official": float(m["test_loss_official"][0, 0])},
        "final_train_loss": _per_seed(np.asarray(res.loss)[0, :, -1]),
        "gih_selected_at_final_a": gih,
        "baselines": base,
        "W_init": np.asarray(m["W"][0, 0]).tolist(),
        "W_final": np.asarray(m["W"][0, -1]).tolist(),
        "stage_starts": list(res.stage_starts),
        "train_wall_seconds": res.wall_seconds,
    }


def _ref_names(task) -> tuple[str, ...]:
    if task.query == "uniform" or task.parent_offsets == (1,):
        return ("bayes", "count_1", "unigram", "oracle")
    name = "".join(str(o) for o in task.parent_offsets)
    return ("bayes", f"count_{name}", "unigram", "oracle")


def plot_training(out: Path, name: str, title: str, config, task, model, result: dict, m, steps) -> None:
    """Subset shares, a(t), test loss (both conventions) with baseline lines; W heatmaps."""
    labels = result["subsets"]
    shares = np.asarray(m["shares"]).mean(0)  # [R, n_S]
    vlines = result["stage_starts"][1:]
    base = result["baselines"]
    refs = {n: base[n]["loss"] for n in _ref_names(task) if n in base}
    refs_off = {n: base[f"{n}/official"]["loss"] for n in _ref_names(task) if f"{n}/official" in base}
    gih = result["gih_selected_at_final_a"]
    if gih is not None:
        refs["GIH(S*, final a)"] = gih["prob_ce"]
        refs_off["GIH(S*, final a)"] = gih["official"]
    x = np.maximum(steps, 0)
    plot_lines(
        out / f"{name}_dynamics.png",
        [
            {"lines": {lab: (x, shares[:, i]) for i, lab in enumerate(labels)}, "ylabel": "share c_S² / Σc²",
             "vlines": vlines, "ylim": (-0.02, 1.02), "title": "selector: subset shares (label = heads, '110' = {1,2})"},
            {"lines": {"a": (x, np.asarray(m["a"]).mean(0))}, "ylabel": "classifier scale a", "vlines": vlines, "title": "a(t)"},
            {"lines": {"model (true CE)": (x, np.asarray(m["test_loss"]).mean(0))}, "refs": refs, "vlines": vlines,
             "ylabel": "test loss, true CE (nats)", "title": "loss vs Bayes / count / GIH / unigram"},
            {"lines": {"model (official metric)": (x, np.asarray(m["test_loss_official"]).mean(0))}, "refs": refs_off,
             "vlines": vlines, "ylabel": "test loss, official double-softmax CE", "title": "same, official metric"},
        ],
        title=title,
    )
    k_offs = ([0] if model.use_self_offset else []) + list(range(1, model.max_offset + 1))
    w0, w1 = np.asarray(result["W_init"]), np.asarray(result["W_final"])
    att = np.asarray(copier_attention({"W": jnp.asarray(w1, jnp.float32)}, model, task.seq_len))[-1]
    plot_heatmaps(
        out / f"{name}_W.png",
        [
            {"matrix": w0, "title": "RPE logits W at init (row = offset 1.., column = head)", "xlabel": "head", "ylabel": "offset − 1"},
            {"matrix": w1, "title": "W after training (seed 0)", "xlabel": "head", "ylabel": "offset − 1"},
            {"matrix": att, "title": f"query-slot attention after training (rows: offsets {k_offs[0]}..{k_offs[-1]})",
             "xlabel": "head", "ylabel": "offset index", "vmax": 1.0},
        ],
        title=title,
    )


def _summary(metrics: dict) -> list:
    fl, base = metrics["final_loss"], metrics["baselines"]
    rows = [
        ("selected subset (heads; official label)", f"{metrics['selected_subset']} → offsets {metrics['selected_offsets']}"),
        ("final share of the selected subset", _fmt(metrics["final_shares"][metrics["selected_subset"]])),
        ("final a", _fmt(metrics["a"]["final"])),
        ("test loss, true CE: init → final", f"{metrics['initial_loss']['prob_ce']:.3f} → {_fmt(fl['prob_ce'])}"),
        ("test loss, official metric: init → final", f"{metrics['initial_loss']['official']:.3f} → {_fmt(fl['official'])}"),
    ]
    for n in ("bayes", "count_12", "count_1", "unigram"):
        if n in base:
            rows.append((f"baseline {n}: true CE / official", f"{base[n]['loss']:.3f} / {base[n + '/official']['loss']:.3f}"))
    if metrics.get("gih_selected_at_final_a"):
        g = metrics["gih_selected_at_final_a"]
        rows.append(("GIH(S*, final a): true CE / official", f"{g['prob_ce']:.3f} / {g['official']:.3f}"))
    return rows


def _run_training(name: str, title: str):
    def run(config: dict, out: Path, progress: bool = True) -> dict:
        task, model, res, m, steps, test = train_chen(config, out, progress)
        result = chen_result(config, task, model, res, m, steps, test)
        plot_training(out, name, title, config, task, model, result, m, steps)
        return result

    return run


# ------------------------------------------------------------- theory beside training
def _training_data(config, task, seed: int):
    """The exact dataset the engine drew for ``seed`` in fixed-data mode (the token batch,
    before window statistics): the engine's own ``run_data`` of the same sampler."""
    n = config["num_train"]
    return engine.run_data(engine.CommonSamples(lambda key, hp: task.sample(key, n)), seed)


def theory_overlay(config, out: Path, name: str, task, model, result: dict, m, steps) -> dict:
    """Ĩ_χ² / I_χ² ranking (spec §6.2), the replicator prediction of stage I from the
    first-order G_S of the seed-0 training set (§6.3), and the exact gradient flow of the
    stage-I loss (engine ODE mode, diffrax) on the first ``flow_size`` training sequences,
    against the simulated GD shares (t = learning rate × step)."""
    from icl_jax.theory.chen import chen_selection_report, first_order_g, replicator_shares

    report = chen_selection_report(task.vocab_size, task.parent_offsets, model.num_heads, model.max_degree,
                                   float(task.alpha), draws=config["theory_draws"], seed=config["seed"])
    labels = [s["label"] for s in report["subsets"]]
    sel_label = next(s["label"] for s in report["subsets"] if s["offsets"] == report["selected"])
    plot_bars(
        out / f"{name}_selection.png",
        [{"labels": labels, "values": [s["modified_chi2"] for s in report["subsets"]],
          "errors": [s["modified_chi2_se"] for s in report["subsets"]], "highlight": {sel_label},
          "ylabel": "Ĩ_χ²(S) (modified, weight μ(z)²)", "title": f"Ĩ ranking: S* = offsets {report['selected']}"},
         {"labels": labels, "values": [s["chi2"] for s in report["subsets"]],
          "errors": [s["chi2_se"] for s in report["subsets"]], "highlight": set(),
          "ylabel": "I_χ²(S) (standard)", "title": "standard χ² MI (ties once all parents are in S)"}],
        title=f"Chen §6.2 selection criterion, {config['theory_draws']} prior draws, ± 2 s.e.",
    )
    stage_c = config["stage_groups"][0]
    if stage_c != "C":
        return {"selection": report}
    lr, n_c = float(config["stage_lrs"][0]), int(config["stage_steps"][0])
    seed0 = result["seeds"][0]
    data = _training_data(config, task, seed0)
    params0 = model.init()
    g = np.asarray(first_order_g(params0, data, model, eps=config["loss_eps"]))
    in_c = steps <= n_c
    t_sim = steps[in_c] * lr
    predicted = np.asarray(replicator_shares(g, t_sim, config["a_init"], params0["C"]))
    flow_data = model.window_stats(jax.tree.map(lambda x: x[: config["flow_size"]], data))
    kw = _loss_kw(config)
    flow = engine.gradient_flow(
        lambda p, b: model.loss(p, b, **kw), params0, flow_data,
        [engine.Stage(n_c, groups=("C",), learning_rate=lr)], num_saves=41,
        metrics=lambda p, t: subset_shares(p),
    )
    sim = np.asarray(m["shares"])[0][in_c]
    grew = lambda traj, i: traj[-1, i] > 0.05 or np.max(traj[1:, i]) > traj[0, i] + 0.01  # noqa: E731
    show = [i for i, lab in enumerate(labels) if lab == sel_label or grew(sim, i) or grew(predicted, i)]
    plot_lines(
        out / f"{name}_replicator.png",
        [{"lines": {labels[i]: (t_sim, sim[:, i]) for i in show},
          "dashed": {labels[i]: (t_sim, predicted[:, i]) for i in show}, "dashed_tag": "replicator",
          "xlabel": "flow time t = lr × step", "ylabel": "share c_S² / Σc²", "ylim": (-0.02, 1.02),
          "title": "stage I: GD (solid) vs replicator prediction from first-order G_S (dashed)"},
         {"lines": {labels[i]: (flow.ts, np.asarray(flow.metrics)[:, i]) for i in show},
          "dashed": {labels[i]: (t_sim, sim[:, i]) for i in show}, "dashed_tag": "GD",
          "xlabel": "flow time t", "ylabel": "share", "ylim": (-0.02, 1.02),
          "title": f"exact gradient flow (solid; diffrax, {config['flow_size']} seqs) vs GD (dashed)"}],
        title="Chen stage I: selector shares, simulation vs theory (seed 0)",
    )
    t_half = lambda traj, t: float(t[np.argmax(traj >= 0.5)]) if np.any(traj >= 0.5) else None  # noqa: E731
    k = labels.index(sel_label)
    return {
        "selection": report,
        "first_order_G": dict(zip(labels, g.tolist())),
        "argmax_G": labels[int(np.argmax(g))],
        "time_to_half_share": {
            "gd": t_half(sim[:, k], t_sim),
            "replicator": t_half(predicted[:, k], t_sim),
            "flow": t_half(np.asarray(flow.metrics)[:, k], np.asarray(flow.ts)),
        },
        "flow_final_shares": dict(zip(labels, np.asarray(flow.metrics)[-1].tolist())),
        "flow_solver_steps": list(flow.num_steps),
    }


def _run_staged(name: str, title: str):
    def run(config: dict, out: Path, progress: bool = True) -> dict:
        task, model, res, m, steps, test = train_chen(config, out, progress)
        result = chen_result(config, task, model, res, m, steps, test)
        plot_training(out, name, title, config, task, model, result, m, steps)
        return {**result, "theory": theory_overlay(config, out, name, task, model, result, m, steps)}

    return run


def _staged_summary(metrics: dict) -> list:
    rows = _summary(metrics)
    th = metrics["theory"]
    sel = th["selection"]
    rows.append(("theory: S* = argmax Ĩ_χ² (offsets)", f"{sel['selected']}"))
    if "argmax_G" in th:
        rows.append(("first-order G_S argmax (seed-0 data)", th["argmax_G"]))
        tt = th["time_to_half_share"]
        f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append(("stage I time to share 0.5: GD / replicator / exact flow", f"{f(tt['gd'])} / {f(tt['replicator'])} / {f(tt['flow'])}"))
    return rows


# ----------------------------------------------------------------------------- registry
def _register(name, description, title, defaults, quick, run=None, summary=_summary):
    register(Experiment(name=name, description=description, defaults={**COMMON, **defaults}, quick=quick,
                        run=run or _run_training(name, title), summary=summary))


_QUICK = {"num_train": 2000, "test_size": 2000, "seeds": 2, "record_every": 5}

_STAGED = {"stage_groups": ["C", "W", "a"], "stage_steps": [2000, 5000, 5000], "stage_lrs": [1.0, 1e5, 1.0],
           "theory_draws": 4096, "flow_size": 9000}
_STAGED_QUICK = {**_QUICK, "stage_steps": [60, 200, 600], "theory_draws": 2048, "flow_size": 2000, "record_every": 2}
_register(
    "chen-three-stage-d2",
    "Chen three-stage C → W → a (D = 2): the selector picks {1,2}, heads sharpen, a grows; Ĩ, replicator, exact flow",
    "Chen three-stage C → W → a, D = 2",
    {**_STAGED, "max_degree": 2},
    _STAGED_QUICK,
    run=_run_staged("chen-three-stage-d2", "Chen three-stage C → W → a, D = 2"),
    summary=_staged_summary,
)
_register(
    "chen-three-stage-d3",
    "Chen three-stage C → W → a (D = 3): '111' rises then decays while '110' wins; Ĩ, replicator, exact flow",
    "Chen three-stage C → W → a, D = 3",
    {**_STAGED, "max_degree": 3},
    _STAGED_QUICK,
    run=_run_staged("chen-three-stage-d3", "Chen three-stage C → W → a, D = 3"),
    summary=_staged_summary,
)
_register(
    "chen-cw-a",
    "Chen two-stage CW → a (D = 2): C and W jointly, then a",
    "Chen two-stage CW → a, D = 2",
    {"stage_groups": ["CW", "a"], "stage_steps": [500000, 5000], "stage_lrs": [1.0, 1.0], "record_every": 500},
    {**_QUICK, "stage_steps": [1200, 900]},
)
_register(
    "chen-cwa",
    "Chen joint CWa (jobs/3-gram.sh): every group at once, lr 1",
    "Chen joint CWa, D = 2",
    {"stage_groups": ["CWa"], "stage_steps": [50000], "stage_lrs": [1.0], "record_every": 50},
    {**_QUICK, "stage_steps": [2000]},
)
_register(
    "chen-full-model",
    "Chen Appendix B: full model (Q/K/OV, LayerNorm, self offset), all parameters jointly",
    "Chen Appendix-B full model, joint SGD",
    {"full_model": True, "w_plus": 1.0, "w_minus": 0.01, "stage_groups": ["all"], "stage_steps": [10000],
     "stage_lrs": [1e-3], "record_every": 20},
    # position-wise forward (content-dependent layer 1): the quick run is smaller
    {**_QUICK, "num_train": 1000, "test_size": 1000, "seeds": 1, "record_every": 10, "stage_steps": [400], "stage_lrs": [1e-2]},
)
_register(
    "chen-bigram",
    "Chen bigram job (jobs/2-gram.sh): Markov data, H = 1, D = 1, joint CWa",
    "Chen bigram job: H = 1, D = 1, joint CWa",
    {"task": "bigram", "num_heads": 1, "max_degree": 1, "parents": [1], "stage_groups": ["CWa"],
     "stage_steps": [50000], "stage_lrs": [1.0], "record_every": 50},
    {**_QUICK, "stage_steps": [1500]},
)


# ------------------------------------------------------------------- generalisation (new)
GEN_DEFAULTS = {
    "stage_groups": ["CW", "a"],
    "stage_steps": [500000, 5000],
    "stage_lrs": [1.0, 1.0],
    "record_every": 500,
    "eval_lengths": [10, 20, 50, 100, 200, 400],
    "eval_alphas": [0.05, 0.1, 0.3, 1.0, 3.0],
    "eval_size": 10000,
}
EVAL_STREAM = 10_000_079


def _evaluate_shift(config, model, params_N, offsets, a_final, **changes) -> dict:
    """Every seed's trained model and the references on a fresh test set of the task with
    ``changes`` (seq_len or alpha), both loss conventions."""
    task = chen_task(config, **changes)
    tag = zlib.crc32(repr(sorted(changes.items())).encode()) % (2**31)  # stable across processes
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config["seed"]), EVAL_STREAM), tag)
    test = task.sample(key, config["eval_size"])
    test_in = model.window_stats(test, compress=True) if not (model.full or model.use_self_offset) else test
    losses = jax.vmap(lambda p: _test_losses(p, test_in, model, config))(params_N)
    base = _baselines(task, test)
    out = {
        "model": {k: _per_seed(v) for k, v in losses.items()},
        "bayes": {"prob_ce": base["bayes"]["loss"], "official": base["bayes/official"]["loss"]},
        "unigram": {"prob_ce": base["unigram"]["loss"], "official": base["unigram/official"]["loss"]},
    }
    name = "".join(str(o) for o in offsets)
    if f"count_{name}" in base:
        out["count_selected"] = {"prob_ce": base[f"count_{name}"]["loss"], "official": base[f"count_{name}/official"]["loss"]}
    if offsets:
        out["gih_selected_at_final_a"] = _gih_loss(test, offsets, a_final, task.vocab_size)
    return out


def run_generalization(config: dict, out: Path, progress: bool = True) -> dict:
    """New (spec §7 item 7: no numbers exist): train with the CW → a recipe, then evaluate
    on other sequence lengths L (the banded copier has no L-sized parameter) and other
    Dirichlet concentrations α, against Bayes, the count estimator on the selected set,
    GIH at the trained a, and the unigram estimator."""
    task, model, res, m, steps, test = train_chen(config, out, progress)
    result = chen_result(config, task, model, res, m, steps, test)
    params_N = jax.tree.map(lambda x: x[0], res.params)
    offsets, a_final = tuple(result["selected_offsets"]), result["a"]["final"]["per_seed"][0]
    lengths = [int(v) for v in config["eval_lengths"]]
    alphas = [float(v) for v in config["eval_alphas"]]
    by_len = {L: _evaluate_shift(config, model, params_N, offsets, a_final, seq_len=L) for L in lengths}
    by_alpha = {al: _evaluate_shift(config, model, params_N, offsets, a_final, alpha=al) for al in alphas}

    def panel(table, xs, conv, xlabel, train_x):
        lines = {"model": (xs, [table[x]["model"][conv]["mean"] for x in xs])}
        for ref in ("bayes", "count_selected", "gih_selected_at_final_a", "unigram"):
            if ref in table[xs[0]]:
                lines[ref] = (xs, [table[x][ref][conv] for x in xs])
        return {"lines": lines, "xlabel": xlabel, "logx": True, "markers": True, "vlines": [train_x],
                "ylabel": f"test loss ({'true CE' if conv == 'prob_ce' else 'official metric'})",
                "title": f"trained at {xlabel.split()[0]} = {train_x} (vertical line)"}

    plot_lines(
        out / "chen_generalization.png",
        [panel(by_len, lengths, "prob_ce", "L (sequence length)", config["seq_len"]),
         panel(by_alpha, alphas, "prob_ce", "α (Dirichlet concentration)", config["alpha"]),
         panel(by_len, lengths, "official", "L (sequence length)", config["seq_len"]),
         panel(by_alpha, alphas, "official", "α (Dirichlet concentration)", config["alpha"])],
        title="Chen: length and prior generalisation of the CW → a model (new; no official numbers)",
    )
    plot_training(out, "chen_generalization_train", "Chen CW → a (generalisation model)", config, task, model, result, m, steps)
    return {
        **result,
        "by_length": {str(k): v for k, v in by_len.items()},
        "by_alpha": {f"{k:g}": v for k, v in by_alpha.items()},
    }


def _gen_summary(metrics: dict) -> list:
    rows = _summary(metrics)
    for key, name in (("by_length", "L"), ("by_alpha", "α")):
        for x, v in metrics[key].items():
            rows.append((f"{name} = {x}: model / Bayes / count(S*) true CE",
                         f"{v['model']['prob_ce']['mean']:.3f} / {v['bayes']['prob_ce']:.3f} / "
                         f"{v.get('count_selected', {}).get('prob_ce', float('nan')):.3f}"))
    return rows


_register(
    "chen-generalization",
    "New: the CW → a model evaluated at other lengths L and priors α (vs Bayes, count, GIH)",
    "",
    GEN_DEFAULTS,
    {**_QUICK, "stage_steps": [1200, 900], "record_every": 20, "eval_lengths": [10, 25, 50, 100, 200, 400],
     "eval_alphas": [0.05, 0.1, 0.3, 1.0, 3.0], "eval_size": 2000},
    run=run_generalization,
    summary=_gen_summary,
)
