"""What every Chen experiment shares: the flat config (``COMMON``) and the task, model and
plain-SGD stage list built from it, the held-out test set and its losses in both conventions,
the baselines and GIH(S, a) at the trained a, one engine sweep over the config's seeds
(``train_chen``), the metrics.json body (``chen_result``), the training figures
(``plot_training``), the summary rows, and ``_register``.

The recipes: ``docs/chen-theory.md#official-recipes``; the model and its window statistics:
``docs/models.md#chen-induction-model`` and ``docs/models.md#window-statistics``; the two loss
conventions: ``docs/models.md#the-epsilon-floor`` and
``docs/models.md#official-double-softmax-metric`` (``docs/quirks.md#chen-quirk-1``); the
window: ``docs/quirks.md#chen-quirk-4``; fixed vs fresh data: ``docs/quirks.md#chen-quirk-6``;
the generalised induction head: ``docs/chen-theory.md#generalised-induction-head``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_heatmaps, plot_lines
from icl_jax.experiments.common import _loss_stat, _per_seed, _seeds, _test_set
from icl_jax.experiments.registry import Experiment, register
from icl_jax.models.induction import InductionModel
from icl_jax.models.induction_layers import copier_attention, subset_shares
from icl_jax.losses import DEFAULT_EPS, cross_entropy_probs, floored_probs, official_double_softmax_ce
from icl_jax.tasks.baselines import HARD_ESTIMATOR_EPS, baseline_losses, gih_predictive, ngram_match
from icl_jax.tasks.sampling import Batch
from icl_jax.tasks.tasks import NGramTask, chen_bigram_task

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
    "loss_eps": DEFAULT_EPS,
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
    """Plain-SGD stages from ``stage_groups`` / ``stage_steps`` / ``stage_lrs``
    (docs/chen-theory.md#official-recipes)."""
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
    return {name: _loss_stat(v) for name, v in baseline_losses(task, test, labels="hard", official_metric=True).items()}


def _gih_loss(test: Batch, offsets, a: float, d: int) -> dict:
    """GIH(S, a) at the trained a on the test set, both conventions (ε as the baselines)."""
    p = gih_predictive(test.tokens_BxT, ngram_match(offsets, test.tokens_BxT), d, a)
    p = floored_probs(p, HARD_ESTIMATOR_EPS)
    y = jax.nn.one_hot(test.label_B, d)
    return {"prob_ce": float(jnp.mean(cross_entropy_probs(p, y))), "official": float(jnp.mean(official_double_softmax_ce(p, y)))}


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


def _register(name, description, title, defaults, quick, run=None, summary=_summary):
    register(Experiment(name=name, description=description, defaults={**COMMON, **defaults}, quick=quick,
                        run=run or _run_training(name, title), summary=summary))


_QUICK = {"num_train": 2000, "test_size": 2000, "seeds": 2, "record_every": 5}
