"""What every Chen experiment shares: the typed config (:class:`ChenConfig`) and the task,
model and plain-SGD stage list built from it, the held-out test set and its losses in both
conventions, the baselines and GIH(S, a) at the trained a, one engine sweep over the
config's seeds (``train_chen`` → :class:`ChenTrained`), the metrics.json body
(``chen_result``), the training figures (``plot_training``), the summary rows, and
``_register``.

The recipes: ``docs/chen-theory.md#official-recipes``; the model and its window statistics:
``docs/models.md#chen-induction-model`` and ``docs/models.md#window-statistics``; the two loss
conventions: ``docs/models.md#the-epsilon-floor`` and
``docs/models.md#official-double-softmax-metric`` (``docs/quirks.md#chen-quirk-1``); the
window: ``docs/quirks.md#chen-quirk-4``; fixed vs fresh data: ``docs/quirks.md#chen-quirk-6``;
the generalised induction head: ``docs/chen-theory.md#generalised-induction-head``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_heatmaps, plot_lines, stage_log_axis
from icl_jax.experiments.common import _loss_stat, _per_seed, _seeds, _test_set
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.losses import DEFAULT_EPS, cross_entropy_probs, floored_probs, official_double_softmax_ce
from icl_jax.models.induction import InductionModel
from icl_jax.models.induction_stats import MAX_TABLE_ENTRIES, compress_window_stats_to, compressed_width, table_entries
from icl_jax.models.induction_layers import copier_attention, subset_shares
from icl_jax.tasks.baselines import HARD_ESTIMATOR_EPS, baseline_losses, gih_predictive, ngram_match
from icl_jax.tasks.sampling import Batch
from icl_jax.tasks.tasks import NGramTask, chen_bigram_task

_GROUPS = "CWa"  # the model's parameter groups (top-level keys of InductionModel params)


def _check_stages(groups, steps, lrs) -> None:
    """``stage_groups`` / ``stage_steps`` / ``stage_lrs``: one entry per stage, each group
    letters of 'CWa' (no repeats) or 'all' (docs/chen-theory.md#official-recipes)."""
    if not (len(groups) == len(steps) == len(lrs) >= 1):
        raise ValueError(
            "stage_groups, stage_steps and stage_lrs must have the same length >= 1 "
            f"(got {len(groups)}, {len(steps)}, {len(lrs)})"
        )
    for g in groups:
        if g == "all":
            continue
        if not g or any(ch not in _GROUPS for ch in g) or len(set(g)) != len(g):
            raise ValueError(f"stage_groups: {g!r} must be distinct letters of 'CWa' (e.g. 'CW') or 'all'")


@dataclasses.dataclass(frozen=True)
class ChenConfig(ExperimentConfig):
    """What every Chen experiment sets: the n-gram (or bigram) task, the copier / selector /
    classifier model and its official initialisation, the loss convention, the data mode and
    the plain-SGD stage recipe (docs/chen-theory.md#official-recipes). Defaults follow the
    paper where the official code deviates (docs/quirks.md#chen-quirk-1,
    docs/quirks.md#chen-quirk-4)."""

    title_fields = {"stage_groups": "stages", "stage_steps": "steps", "stage_lrs": "lr", "data": "data",
                    "num_train": "train seqs", "seeds": "seeds"}

    seed: int = option(2024, "first seed = the first run's dataset (the initialisation is deterministic); "
                             "the runs use seed, seed+1, …, seed+seeds−1", min=0)
    task: Literal["ngram", "bigram"] = option(
        "ngram", "ngram: parents at the offsets `parents`; bigram: the official Markov job (docs/quirks.md#chen-quirk-7)")
    vocab_size: int = option(3, "d, the vocabulary size", min=2)
    seq_len: int = option(100, "L, input tokens per sequence (the target is x_{L+1})", min=2)
    parents: tuple[int, ...] = option((1, 2), "parent offsets of the n-gram task ((1, 2): the paper's 3-gram)", min=1)
    alpha: float = option(0.1, "Dirichlet concentration α of every kernel row", gt=0)
    init: Literal["uniform", "stationary"] = option(
        "uniform", "first max(parents) tokens: uniform (official) or the window's stationary law")
    bigram_variant: Literal["official", "fixed"] = option(
        "official", "bigram task: official (x_L re-drawn uniformly) or fixed (x_L from the chain)")
    num_heads: int = option(3, "H, copier heads (head h starts on offset h)", min=1)
    max_degree: int = option(2, "D, the largest head subset the selector builds (<= num_heads)", min=0)
    window: Literal["paper", "official"] = option(
        "paper", "copier window: paper (every head sees offsets 1..M) or official (head h sees h..h+H−1)")
    window_size: int = option(0, "M of the paper window (0: M = num_heads)", min=0)
    include_raw: bool = option(
        False, "also build the official subsets with the raw-token component (docs/quirks.md#chen-quirk-8)")
    full_model: bool = option(False, "the Appendix-B full model (Q/K/OV, LayerNorm, self offset)")
    w_plus: float = option(3.0, "initial RPE logit of head h on its own offset h")
    w_minus: float = option(0.1, "initial RPE logit on the other offsets")
    c_init: float = option(0.01, "initial selector coefficient of every subset")
    a_init: float = option(0.01, "initial classifier scale a")
    proj_init: float = option(0.001, "initial scale of the full model's projections")
    loss: Literal["prob_ce", "official"] = option(
        "prob_ce", "training loss: prob_ce (true CE, ε-floored) or official (double softmax; docs/quirks.md#chen-quirk-1)")
    labels: Literal["hard", "soft"] = option("hard", "training targets: hard (sampled x_{L+1}, official) or soft (true π)")
    loss_eps: float = option(DEFAULT_EPS, "ε floor of the prob_ce loss", min=0)
    data: Literal["fixed", "fresh"] = option(
        "fixed", "fixed: full-batch GD on num_train sequences drawn once per seed (official); "
                 "fresh: batch_size new sequences every step (docs/quirks.md#chen-quirk-6)")
    num_train: int = option(9000, "training sequences per seed (data=fixed)", min=1)
    batch_size: int = option(9000, "sequences per step (data=fresh)", min=1)
    stage_groups: tuple[str, ...] = option(
        ("C", "W", "a"), "parameter groups trained in each stage: letters of 'CWa' or 'all' (official --train-cmd)")
    stage_steps: tuple[int, ...] = option((2000, 5000, 5000), "SGD steps of each stage", min=1)
    stage_lrs: tuple[float, ...] = option((1.0, 1e5, 1.0), "learning rate of each stage (plain SGD)", gt=0)
    test_size: int = option(10000, "held-out test sequences (one set shared by every seed)", min=2)
    record_every: int = option(10, "steps between recorded metrics", min=1)
    chunk_steps: int = option(0, "steps per compiled chunk = between checkpoints (0: the engine default)", min=0)
    allow_unreachable_parents: bool = option(
        False, "allow parent offsets no copier head can attend to (beyond the window; studied deliberately)",
        computation=False)

    # ------------------------------------------------------------------ derived
    @property
    def parent_offsets(self) -> tuple[int, ...]:
        """The task's parent offsets, sorted (the bigram task: (1,))."""
        return (1,) if self.task == "bigram" else tuple(sorted(self.parents))

    @property
    def max_reachable_offset(self) -> int:
        """The largest offset a copier head attends to: M = window_size or num_heads (paper
        window), 2·num_heads − 1 (official window; head h sees h..h+H−1)."""
        if self.window == "official":
            return 2 * self.num_heads - 1
        return self.window_size or self.num_heads

    def _window_text(self) -> str:
        if self.window == "official":
            return (f"with window='official' head h sees offsets h..h+H−1, so the copier reaches offsets "
                    f"1..{self.max_reachable_offset} (num_heads={self.num_heads})")
        return (f"with window='paper' every head sees offsets 1..M, M = window_size or num_heads = "
                f"{self.max_reachable_offset} (num_heads={self.num_heads}, window_size={self.window_size})")

    def check(self) -> None:
        _check_stages(self.stage_groups, self.stage_steps, self.stage_lrs)
        if self.max_degree > self.num_heads:
            raise ValueError(f"max_degree ({self.max_degree}) must be <= num_heads ({self.num_heads})")
        if not self.parents or len(set(self.parents)) != len(self.parents):
            raise ValueError(f"parents: must be distinct offsets >= 1 (got {self.parents})")
        if self.window == "official" and self.window_size not in (0, self.num_heads):
            raise ValueError(f"window_size: the official window has M = num_heads = {self.num_heads} "
                             f"(got window_size={self.window_size}; use 0)")
        if self.task == "bigram":
            if tuple(self.parents) != (1,):
                raise ValueError(
                    f"parents: the bigram task's only parent is offset 1 (got parents={self.parents}; set parents=1)")
            if self.init != "uniform":
                raise ValueError("init: the bigram task starts from a uniform token (set init=uniform)")
        k = max(self.parent_offsets)
        if self.seq_len < k + 1:
            raise ValueError(f"seq_len must be >= max(parents) + 1 = {k + 1} (got {self.seq_len})")
        if not self.full_model and self.seq_len < self.max_reachable_offset:
            raise ValueError(f"seq_len ({self.seq_len}) must be >= the copier window ({self.max_reachable_offset}): "
                             f"{self._window_text()}")
        unreachable = [o for o in self.parent_offsets if o > self.max_reachable_offset]
        if unreachable and not self.allow_unreachable_parents:
            raise ValueError(
                f"parents: offset(s) {unreachable} cannot be copied by any head: {self._window_text()}. "
                "Raise num_heads or window_size, or set allow_unreachable_parents=true to study this deliberately"
            )
        total = sum(self.stage_steps)
        if self.record_every > total:
            raise ValueError(f"record_every ({self.record_every}) must be <= the total of stage_steps ({total})")


# ------------------------------------------------------------------------------ builders
def chen_task(config: ChenConfig, *, seq_len: int | None = None, alpha: float | None = None) -> NGramTask:
    """The config's task (n-gram or the official bigram job), optionally at another
    ``seq_len`` / ``alpha`` (the generalisation tests)."""
    seq_len = config.seq_len if seq_len is None else seq_len
    alpha = config.alpha if alpha is None else alpha
    if config.task == "bigram":
        return chen_bigram_task(vocab_size=config.vocab_size, seq_len=seq_len, alpha=alpha, variant=config.bigram_variant)
    return NGramTask(config.vocab_size, seq_len, tuple(config.parents), config.init, "natural", alpha)


def chen_model(config: ChenConfig) -> InductionModel:
    return InductionModel(
        config.vocab_size,
        num_heads=config.num_heads,
        max_degree=config.max_degree,
        window=config.window,
        window_size=config.window_size or None,
        include_raw=config.include_raw,
        full=config.full_model,
        w_plus=config.w_plus,
        w_minus=config.w_minus,
        c_init=config.c_init,
        a_init=config.a_init,
        proj_init=config.proj_init,
    )


def uses_window_stats(model: InductionModel) -> bool:
    """Whether the model trains on window statistics (docs/models.md#window-statistics): the
    simplified and the full model alike, when the similarity table has at most
    MAX_TABLE_ENTRIES entries (counting the x_l digit of the full model / self offset);
    otherwise the position-wise forward is used (same loss, slower). Any sequence length
    (shorter than the window too)."""
    return table_entries(model) <= MAX_TABLE_ENTRIES


def _build(config: ChenConfig) -> Setup:
    """The task and model of ``config`` (checked before anything runs)."""
    return Setup(chen_task(config), chen_model(config))


def chen_stages(config: ChenConfig) -> list[engine.Stage]:
    """Plain-SGD stages from ``stage_groups`` / ``stage_steps`` / ``stage_lrs``
    (docs/chen-theory.md#official-recipes); the config has validated them (``_check_stages``)."""
    return [engine.Stage(n, groups=None if g == "all" else tuple(g), learning_rate=lr, optimizer="sgd", name=g)
            for g, n, lr in zip(config.stage_groups, config.stage_steps, config.stage_lrs)]


def _loss_kw(config: ChenConfig) -> dict:
    return {"loss": config.loss, "labels": config.labels, "eps": config.loss_eps}


def _test_losses(params, test: Batch, model, config: ChenConfig) -> dict:
    """Mean test loss in both conventions (hard labels, as the official validation)."""
    return {
        "prob_ce": model.loss(params, test, loss="prob_ce", eps=config.loss_eps),
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


def _offsets_axis(model: InductionModel) -> list[int]:
    """The offsets of the copier's attention rows (0 first when the self offset is on)."""
    return ([0] if model.use_self_offset else []) + list(range(1, model.max_offset + 1))


def _head_offsets(model: InductionModel, params_final) -> list[int]:
    """The offset each head attends to most at the query slot (RPE part)."""
    att = np.asarray(copier_attention(params_final, model, 1 + 2 * model.max_offset))[-1]  # [K', H]
    offs = _offsets_axis(model)
    return [int(offs[k]) for k in np.argmax(att, axis=0)]


def _own_offset_attention(params, model: InductionModel, seq_len: int) -> jax.Array:
    """Query-slot attention of head h on offset h (the offset it was initialised towards;
    NaN for a head beyond a paper window M < H, which has no own offset)."""
    att = copier_attention(params, model, seq_len)[-1]  # [K', H]
    shift = 1 if model.use_self_offset else 0
    h = np.arange(model.num_heads)
    own = att[np.minimum(h, model.max_offset - 1) + shift, h]
    return jnp.where(jnp.asarray(h < model.max_offset), own, jnp.nan)


# ------------------------------------------------------------------------------ training
class ChenTrained(NamedTuple):
    """What :func:`train_chen` returns."""

    task: NGramTask
    model: InductionModel
    result: engine.TrainResult
    metrics: dict  # recorded metrics with the grid axis dropped: leaves [seed, record, ...]
    steps: np.ndarray  # the recorded steps
    test: Batch  # the held-out test set (shared by every seed)


def train_chen(config: ChenConfig, ctx: RunContext) -> ChenTrained:
    """Train every seed of ``config`` in one engine sweep tied to ``ctx``'s run folder,
    recording the subset shares, a, W, own-offset attention and both test losses."""
    task, model = _build(config)
    stages = chen_stages(config)
    test = _test_set(task, config)
    kw = _loss_kw(config)
    init = model.init()
    seq_len = task.seq_len
    # window statistics: same loss, much faster per step (full model ~80×: benchmarks/chen.py)
    fast = uses_window_stats(model)
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

    if config.data == "fixed":
        n = config.num_train
        data = engine.CommonSamples(lambda key, hp: prep(task.sample(key, n)))
        if fast:
            # each seed's dataset merged to its distinct (code, token) entries inside the
            # program (~14 of L = 100 on average at α = 0.1; the step costs ~1/2 to 1/3): the
            # static width is the largest over the seeds, read from the same data on the host
            width = max(compressed_width(engine.run_data(data, s)) for s in _seeds(config))
            data = engine.CommonSamples(
                lambda key, hp: compress_window_stats_to(prep(task.sample(key, n)), width, model.vocab_size))
    else:
        b = config.batch_size
        data = engine.FreshSamples(lambda key, hp: prep(task.sample(key, b)))
    res = engine.sweep(
        loss, lambda key, hp: init, stages, data, seeds=_seeds(config), metrics=record,
        record_every=config.record_every, chunk_steps=config.chunk_steps or None, **ctx.sweep_kwargs(),
    )
    metrics = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    return ChenTrained(task, model, res, metrics, np.asarray(res.record_steps), test)


def chen_result(config: ChenConfig, trained: ChenTrained) -> dict:
    """metrics.json body shared by every training experiment."""
    task, model, res, m, steps, test = trained
    labels = list(model.subset_labels())
    subsets = [list(s) for s in model.subsets()]
    final_shares = m["shares"][:, -1]  # [N, n_S]
    winners = np.argmax(final_shares, axis=1)
    params0 = jax.tree.map(lambda x: np.asarray(x)[0, 0], res.params)
    head_offs = _head_offsets(model, params0)
    sel = subsets[int(winners[0])]
    # distinct positive offsets: two selected heads may copy the same offset, and the full
    # model's self offset 0 has no GIH counterpart
    sel_offsets = sorted({head_offs[h - 1] for h in sel if h > 0} - {0})
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
        "own_offset_attention_init": m["own_offset_attention"][:, 0].mean(0).tolist(),
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


def _tick_blocks(names) -> list[tuple[str, int, int]]:
    """One heatmap tick per row / column, labelled ``names``."""
    return [(str(n), i, i + 1) for i, n in enumerate(names)]


def plot_training(config: ChenConfig, ctx: RunContext, trained: ChenTrained, result: dict, title: str) -> None:
    """Subset shares, a(t), test loss (both conventions) with baseline lines (2 × 2,
    ``ctx.figure("dynamics")``); W at init and after training and the query-slot attention by
    head and offset (``ctx.figure("W")``)."""
    task, model, m, steps = trained.task, trained.model, trained.metrics, trained.steps
    labels = result["subsets"]
    shares = np.asarray(m["shares"]).mean(0)  # [R, n_S]
    # every stage gets equal width, log-scaled inside (CW → a is 500,000 + 5,000 steps)
    x, xticks, vlines = stage_log_axis(np.maximum(steps, 0), result["stage_starts"], sum(config.stage_steps))
    # sparse records (the official CW → a records every 500 steps) are drawn as markers, so the
    # straight segments that log scale gives between them are not read as dynamics
    axis = {"vlines": vlines, "xticks": xticks, "markers": config.record_every > 10,
            "xlabel": "step (each stage equal width, log scale inside it: +10² = 100 steps into the stage)"}
    base = result["baselines"]
    refs = {n: base[n]["loss"] for n in _ref_names(task) if n in base}
    refs_off = {n: base[f"{n}/official"]["loss"] for n in _ref_names(task) if f"{n}/official" in base}
    gih = result["gih_selected_at_final_a"]
    if gih is not None:
        refs["GIH(S*, final a)"] = gih["prob_ce"]
        refs_off["GIH(S*, final a)"] = gih["official"]
    seeds = f"mean of {len(result['seeds'])} seeds" if len(result["seeds"]) > 1 else "one seed"
    plot_lines(
        ctx.figure("dynamics"),
        [
            {"lines": {lab: (x, shares[:, i]) for i, lab in enumerate(labels)}, "ylabel": "share c_S² / Σc²",
             "ylim": (-0.02, 1.02), "title": "selector: subset shares (label = heads, '110' = {1,2})", **axis},
            {"lines": {"a": (x, np.asarray(m["a"]).mean(0))}, "ylabel": "classifier scale a",
             "title": "classifier scale a(t)", **axis},
            {"lines": {"model (true CE)": (x, np.asarray(m["test_loss"]).mean(0))}, "refs": refs,
             "ylabel": "test loss, true CE (nats)", "title": "test loss vs Bayes / count / GIH / unigram", **axis},
            {"lines": {"model (official metric)": (x, np.asarray(m["test_loss_official"]).mean(0))}, "refs": refs_off,
             "ylabel": "test loss, official double-softmax CE", "title": "same, official metric", **axis},
        ],
        title=ctx.title(f"{title}: training dynamics ({seeds}; vertical lines: stage starts)"),
        ncols=2,
        formats=ctx.formats,
    )
    k_offs = _offsets_axis(model)
    w0, w1 = np.asarray(result["W_init"]), np.asarray(result["W_final"])
    att = np.asarray(copier_attention({"W": jnp.asarray(w1, jnp.float32)}, model, task.seq_len))[-1]
    heads = _tick_blocks(range(1, model.num_heads + 1))
    w_rows = _tick_blocks(range(1, w0.shape[0] + 1))
    plot_heatmaps(
        ctx.figure("W"),
        [
            {"matrix": w0, "title": "RPE logits W at init", "xlabel": "head", "ylabel": "offset",
             "row_blocks": w_rows, "col_blocks": heads},
            {"matrix": w1, "title": "RPE logits W after training (seed 0)", "xlabel": "head", "ylabel": "offset",
             "row_blocks": w_rows, "col_blocks": heads},
            {"matrix": att, "title": "query-slot attention after training (seed 0)", "xlabel": "head",
             "ylabel": "offset", "vmax": 1.0, "row_blocks": _tick_blocks(k_offs), "col_blocks": heads},
        ],
        title=ctx.title(f"{title}: copier RPE logits and attention"),
        formats=ctx.formats,
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


def _run_training(title: str):
    def run(config: ChenConfig, ctx: RunContext) -> dict:
        trained = train_chen(config, ctx)
        result = chen_result(config, trained)
        plot_training(config, ctx, trained, result, title)
        return result

    return run


def _register(name: str, description: str, title: str, official: ChenConfig, quick: ChenConfig, run=None,
              summary=_summary, build=_build) -> Experiment:
    return register(Experiment(name=name, description=description, official=official, quick=quick,
                               run=run or _run_training(title), build=build, summary=summary,
                               map_axes={"W": ("head", "offset index")}))


#: the changes every quick preset makes (CPU minutes)
_QUICK: dict[str, Any] = {"num_train": 2000, "test_size": 2000, "seeds": 2, "record_every": 5}
