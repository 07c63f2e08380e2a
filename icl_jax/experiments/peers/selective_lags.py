"""``dangelo-selective-lags``: D'Angelo, Croce & Flammarion 2025, "Selective Induction Heads" —
on sequences whose lag ℓ ∈ {1, 2, 3} is drawn per sequence (x_t ~ P(·|x_{t−ℓ})), a trained
attention-only transformer infers ℓ in context and copies with that lag: a *selective*
induction head. Its loss approaches the Bayes mixture over lags
(docs/peer-tasks.md#interleaved-lags).

The data is :class:`~icl_jax.tasks.lags.LagMixtureTask`, the spec's reading of the paper (marked
there as an unverified recollection): Dirichlet(α) rows of P drawn per sequence, stationary start.
The paper's abstract speaks of varying the lag "while keeping the transition probabilities
fixed"; by default (``kernel="per_sequence"``) P is drawn per sequence as well, so the model must
also estimate P in context. ``kernel="fixed"`` tests the abstract's reading: one P, drawn from
``kernel_seed`` (:meth:`~icl_jax.tasks.lags.LagMixtureTask.fixed_kernel`; not the runs' seeds),
is shared by every training and test sequence, so the model can learn it in its weights and only
the lag is inferred in context.

Model: the project's reading of the paper's 3-layer construction (not checked against the
paper): layer 1 has one head per candidate lag, each reading x_{t−ℓ} into position t (the
transition x_{t−ℓ} → x_t of every lag); layer 2 aggregates those transitions over the prefix
(the evidence for each lag); layer 3 is the selective induction head, which attends to the keys
s whose lag-ℓ context x_{s−ℓ} equals the context x_{t+1−ℓ} of the token to predict, for the ℓ
the evidence favours, and copies x_s. Hence heads (3, 1, 1) (``heads``), attention only, relative
positions, no layer norm by default (``layernorm``; like ``edelman-icl-mc``), AdamW with betas
(0.9, 0.95) and weight decay 0.01 at a constant rate, next-token loss at every position, several
seeds in one engine sweep. Official: k = 3, T = 128, width 48, batch 64, rate 3e-3, 30,000
steps, 3 seeds (GPU-sized; the paper's own sizes are not in the spec). Quick (about two CPU
minutes): T = 64, width 24, batch 32, rate 1e-2, 5,000 steps, 2 seeds.

Recorded over training, on one held-out set whose kernels are drawn here from the test key (so
each sequence's lag is known; the lags are assigned in turn, so every lag has ⌊n/|lags|⌋ or more
test sequences):

- the per-position test loss, against four references (:func:`_references`; p_ℓ is the lag-ℓ
  predictive of :meth:`~icl_jax.tasks.lags.LagMixtureTask.lag_predictives`):

  - "Bayes mixture over lags": :meth:`~icl_jax.tasks.lags.LagMixtureTask.bayes`, Σ_ℓ
    P(ℓ | x_0..x_t) p_ℓ. Per-sequence P: the mixture of Dirichlet posterior predictives (exact
    for a uniform start, ignores the stationary start's information about P). Fixed P: the exact
    posterior predictive with P known.
  - "lag-known oracle": p_ℓ at each sequence's true lag. Per-sequence P:
    :func:`~icl_jax.tasks.strategies.lag_strategy` (β = α), the lag known but P estimated in
    context. Fixed P: P[x_{t+1−ℓ}] (the initial law before position ℓ − 1), the law the token
    was drawn from.
  - "non-selective: mean over lags": the equal-weight mean of the p_ℓ over the candidate lags
    (what a head that copies from every lag's matching keys, or reads every lag's parent,
    without choosing approaches); per-sequence: in-context lag bigrams, fixed: P's rows.
  - "lag-1 bigram": p_1, the in-context bigram (per-sequence P) or P[x_t] (fixed P);
- for every layer-1 head, :func:`~icl_jax.analysis.progress.lag_attention` at each candidate lag
  (which head reads which lag);
- the selection matrix: for the last layer (attention averaged over its heads),
  :func:`~icl_jax.analysis.progress.lag_match_attention` at each candidate lag ℓ', averaged over
  the test sequences of each true lag ℓ: ``[true ℓ, candidate ℓ']``. A selective head is
  diagonal-dominant; per sequence, "argmax over ℓ' == ℓ" is the lag-selection accuracy.

On the final parameters (each seed's; not recorded over training, so the recorded layout, and the
checkpoints of runs written before it existed, are unchanged), for either kernel:

- the parent-selection matrix: the last layer's attention (heads' mean) from row t to the lag-ℓ'
  parent x_{t+1−ℓ'} of the token it predicts, :func:`~icl_jax.analysis.progress.parent_attention`
  at each candidate ℓ' on the rows t >= max(lags) − 1 (the same for every candidate: early
  causal rows have few keys and would favour small lags), averaged over the test sequences of
  each true lag ℓ: ``[true ℓ, candidate ℓ']``, and its per-sequence argmax accuracy, overall
  and by true lag. With P known a model can
  select the lag by reading the parent and P's row from its weights, without matching keys. At
  ℓ' = 1 the parent is the query's own token, which the residual stream already holds, so a
  lag-1 choice need not show as attention.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_heatmaps, plot_lines
from icl_jax.analysis.progress import lag_attention, lag_match_attention, parent_attention, per_position_nll
from icl_jax.experiments.common import _check_record_every, _mean_sd, _per_seed, _seeds, _test_key
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.lags import MAX_KERNEL_SEED, LagMixtureTask

__all__ = ["SelectiveLagsConfig"]

#: the reference predictors' names (see :func:`_references`)
REFERENCES = ("Bayes mixture over lags", "lag-known oracle", "non-selective: mean over lags", "lag-1 bigram")


@dataclasses.dataclass(frozen=True)
class SelectiveLagsConfig(ExperimentConfig):
    """Interleaved lags and the selective induction head (docs/peer-tasks.md#interleaved-lags)."""

    title_fields = {"vocab_size": "k", "seq_len": "T", "heads": "heads", "steps": "steps", "seeds": "seeds"}

    seeds: int = option(3, "independent runs (one engine sweep)", min=1)
    vocab_size: int = option(3, "k, the number of states", min=2)
    seq_len: int = option(128, "T, tokens per sequence (loss at every position); > max(lags)", min=3)
    lags: tuple[int, ...] = option((1, 2, 3), "candidate lags ℓ (distinct), one drawn uniformly per sequence", min=1)
    alpha: float = option(1.0, "Dirichlet concentration of P's rows", gt=0)
    kernel: Literal["per_sequence", "fixed"] = option(
        "per_sequence", "P drawn per sequence (the spec's reading) or fixed: one P shared by every sequence "
        "(the abstract's 'transition probabilities fixed')", added=True)
    kernel_seed: int = option(0, "with kernel=fixed, the seed of P: Dirichlet(α) rows from jax.random.key(kernel_seed) "
                                 "(not the runs' seeds)", min=0, max=MAX_KERNEL_SEED, added=True)
    heads: tuple[int, ...] = option(
        (3, 1, 1), "attention heads per layer (layer 1: one per candidate lag; see the module docstring)", min=1)
    width: int = option(48, "model width d (a multiple of every layer's heads)", min=1)
    layernorm: bool = option(False, "pre-LN in every block and before the readout")
    steps: int = option(30000, "AdamW steps", min=1)
    batch_size: int = option(64, "fresh sequences per step", min=1)
    learning_rate: float = option(3e-3, "AdamW learning rate (constant)", gt=0)
    weight_decay: float = option(0.01, "AdamW decoupled weight decay", min=0)
    test_size: int = option(512, "held-out sequences (one set for every run); >= len(lags)", min=2)
    record_every: int = option(500, "steps between recorded metrics", min=1)

    def check(self) -> None:
        _check_record_every(self)
        if not self.lags:
            raise ValueError("lags must name at least one lag")
        if self.test_size < len(self.lags):
            raise ValueError(f"test_size ({self.test_size}) must be >= len(lags) = {len(self.lags)}: every lag needs "
                             "a test sequence")
        if self.seq_len <= max(self.lags):
            raise ValueError(f"seq_len ({self.seq_len}) must be > max(lags) = {max(self.lags)}")
        if self.kernel != "fixed" and self.kernel_seed != 0:
            raise ValueError(f"kernel_seed ({self.kernel_seed}) applies only with kernel=fixed "
                             f"(got kernel={self.kernel}); leave it at 0")


OFFICIAL = SelectiveLagsConfig()
QUICK = OFFICIAL.replace(seq_len=64, width=24, steps=5000, batch_size=32, learning_rate=1e-2, test_size=256,
                         record_every=250, seeds=2)


def _task(config: SelectiveLagsConfig) -> LagMixtureTask:
    return LagMixtureTask(config.vocab_size, config.seq_len, config.lags, init="stationary", alpha=config.alpha,
                          kernel=config.kernel, kernel_seed=config.kernel_seed)


def _model(config: SelectiveLagsConfig) -> Transformer:
    return Transformer(config.vocab_size, config.seq_len, heads=config.heads, width=config.width, positions="relative",
                       mlp=False, layernorm=config.layernorm)


def _build(config: SelectiveLagsConfig) -> Setup:
    return Setup(_task(config), _model(config))


@functools.partial(jax.jit, static_argnums=1)
def _draw_test(task: LagMixtureTask, size: int, key: jax.Array):
    k_kernels, k_tokens = jax.random.split(key)
    kernels = task.sample_kernels(k_kernels, size)
    kernels = {**kernels, "lag_index": jnp.arange(size, dtype=jnp.int32) % len(task.lags)}
    return task.sequences_with_kernels(k_tokens, kernels), kernels["lag_index"]


def _test_data(task: LagMixtureTask, config: SelectiveLagsConfig):
    """The held-out sequences and each one's lag index: kernels drawn from the test key, lags
    assigned in turn (a stratified draw from the uniform prior over lags). Compiled: drawn
    eagerly, the Dirichlet rows and the per-lag scans cost seconds of op-by-op dispatch."""
    return _draw_test(task, config.test_size, _test_key(config))


@jax.jit
def _references(task: LagMixtureTask, test, lag_index_B) -> tuple[dict, jax.Array]:
    """Per-position losses ``[T]`` (mean over the test sequences) of the reference predictors,
    from the lags' predictives p_ℓ (:meth:`~icl_jax.tasks.lags.LagMixtureTask.lag_predictives`:
    Dirichlet posterior predictives with β = α for per-sequence P, P's rows for a fixed P; module
    docstring): the Bayes mixture over lags Σ_ℓ P(ℓ | x_0..x_t) p_ℓ, the lag-known oracle p_ℓ at
    the true lag, the non-selective equal-weight mean of the p_ℓ (a head that copies from all
    lags' matching keys without choosing) and the lag-1 predictor p_1; and the fraction of
    sequences whose Bayes posterior over lags, given the whole sequence, peaks at the true lag."""
    tokens, lags = test.tokens_BxT, task.lags
    per_lag = task.lag_predictives(tokens)  # [B, T, L, k]
    known = jnp.take_along_axis(per_lag, lag_index_B[:, None, None, None], axis=2)[:, :, 0]
    lag1 = per_lag[:, :, lags.index(1)] if 1 in lags else task.lag_predictives(tokens, (1,))[:, :, 0]
    laws = dict(zip(REFERENCES, (task.bayes(tokens), known, jnp.mean(per_lag, axis=2), lag1)))
    losses = {name: jnp.mean(per_position_nll(p, test.labels_BxT), axis=0) for name, p in laws.items()}
    posterior = task.lag_posterior(tokens)[:, -1]  # P(ℓ | the whole test sequence)
    return losses, jnp.mean(jnp.argmax(posterior, axis=-1) == lag_index_B)


def _recorder(model: Transformer, test, lag_index_B, lags: tuple[int, ...]):
    """``metrics(params, step)``: the test loss (mean and per position), layer 1's attention at
    each candidate lag per head ``[H1, L]``, the last layer's selection matrix ``[true ℓ,
    candidate ℓ']`` (its heads' mean map; per head in ``selection_heads``) and the lag-selection
    accuracy (module docstring)."""
    tokens, labels = test.tokens_BxT, test.labels_BxT
    onehot_BxL = jax.nn.one_hot(lag_index_B, len(lags), dtype=jnp.float32)
    count_L = jnp.sum(onehot_BxL, axis=0)
    lags_L = jnp.asarray(lags, jnp.int32)  # mapped over (one program for every candidate lag)

    def record(params, step):
        probs = jax.nn.softmax(model.apply_all(params, tokens), axis=-1)
        loss_T = jnp.mean(per_position_nll(probs, labels), axis=0)
        maps = model.attention(params, tokens)
        first = jnp.mean(jax.vmap(lambda lag: lag_attention(maps[0], lag), out_axes=-1)(lags_L), axis=0)  # [H1, L]
        score_BxHxL = jax.vmap(lambda lag: lag_match_attention(maps[-1], tokens, lag), out_axes=-1)(lags_L)
        heads_HxLxL = jnp.einsum("bi,bhj->hij", onehot_BxL, score_BxHxL) / count_L[None, :, None]
        # the score is linear in the map: its mean over heads is the score of the heads' mean map
        score_BxL = jnp.mean(score_BxHxL, axis=1)
        accuracy = jnp.mean(jnp.argmax(score_BxL, axis=-1) == lag_index_B)
        return {"test_loss": jnp.mean(loss_T), "test_loss_T": loss_T, "layer1_lag_attention": first,
                "selection": jnp.mean(heads_HxLxL, axis=0), "selection_heads": heads_HxLxL, "lag_accuracy": accuracy}

    return record


def _parent_selection(model: Transformer, test, lag_index_B, lags: tuple[int, ...]):
    """``measure(params_SxP)`` for parameters with a leading seed axis: per seed, the last
    layer's parent-selection matrix ``[true ℓ, candidate ℓ']``, the mean over the test sequences
    of true lag ℓ of :func:`~icl_jax.analysis.progress.parent_attention` at ℓ' (the heads' mean
    map: the score is linear in the map), every candidate scored on the same rows t >= max(lags)
    − 1; its accuracy, the fraction of sequences whose argmax over ℓ' is their lag; and that
    accuracy among the sequences of each true lag ``[L]`` (module docstring). Compiled; one seed
    at a time."""
    tokens = test.tokens_BxT
    onehot_BxL = jax.nn.one_hot(lag_index_B, len(lags), dtype=jnp.float32)
    count_L = jnp.sum(onehot_BxL, axis=0)
    lags_L = jnp.asarray(lags, jnp.int32)
    first_row = max(lags) - 1  # common rows: early causal rows have few keys and favour small lags

    def one(params):
        last = jnp.mean(model.attention(params, tokens)[-1], axis=1, keepdims=True)  # heads' mean map
        score_BxL = jax.vmap(lambda lag: parent_attention(last, lag, first_row)[:, 0], out_axes=-1)(lags_L)
        matrix_LxL = jnp.einsum("bi,bj->ij", onehot_BxL, score_BxL) / count_L[:, None]
        correct_B = (jnp.argmax(score_BxL, axis=-1) == lag_index_B).astype(jnp.float32)
        return matrix_LxL, jnp.mean(correct_B), correct_B @ onehot_BxL / count_L

    return jax.jit(lambda params_SxP: jax.lax.map(one, params_SxP))


def run_selective_lags(config: SelectiveLagsConfig, ctx: RunContext) -> dict:
    task, model = _task(config), _model(config)
    lags = config.lags
    test, lag_index_B = _test_data(task, config)
    ref_T, bayes_accuracy = _references(task, test, lag_index_B)
    ref_T = {name: np.asarray(ref_T[name]) for name in REFERENCES}  # (a jitted dict comes back key-sorted)
    refs = {name: float(v.mean()) for name, v in ref_T.items()}
    bayes = refs["Bayes mixture over lags"]

    stage = engine.Stage(config.steps, optimizer="adamw", learning_rate=config.learning_rate,
                         weight_decay=config.weight_decay, b1=0.9, b2=0.95)
    res = engine.sweep(model.sequence_loss, lambda key, hp: model.init(key), [stage],
                       engine.FreshSamples(lambda key, hp: task.sample_sequences(key, config.batch_size)),
                       seeds=_seeds(config), metrics=_recorder(model, test, lag_index_B, lags),
                       record_every=config.record_every, **ctx.sweep_kwargs())
    m = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    parent, parent_accuracy, parent_by_lag = map(np.asarray, _parent_selection(model, test, lag_index_B, lags)(
        jax.tree.map(lambda x: x[0], res.params)))  # [seed, true, candidate], [seed], [seed, true]
    steps = np.asarray(res.record_steps)
    seeds = _seeds(config)
    final = m["test_loss"][:, -1]
    selection = m["selection"][:, -1]  # [seed, true, candidate]
    diagonal = np.trace(m["selection"], axis1=-2, axis2=-1) / len(lags)  # [seed, record]
    lag_names = [f"ℓ={lag}" for lag in lags]
    blocks = [(str(lag), i, i + 1) for i, lag in enumerate(lags)]

    plot_lines(
        ctx.figure("loss"),
        [{"lines": {f"seed {s}": (steps, m["test_loss"][j]) for j, s in enumerate(seeds)}, "refs": refs,
          "ylabel": "test loss per position (nats)", "title": "test loss and the reference predictors"},
         {"lines": {"model (mean over seeds)": (np.arange(config.seq_len), m["test_loss_T"][:, -1].mean(0)),
                    **{name: (np.arange(config.seq_len), v) for name, v in ref_T.items()}},
          "xlabel": "position t (predicting token t + 1)", "ylabel": "test loss (nats)", "integer_x": True,
          "title": "final loss along the context"},
         {"lines": {**{f"seed {s}": (steps, diagonal[j]) for j, s in enumerate(seeds)},
                    **{f"accuracy, seed {s}": (steps, m["lag_accuracy"][j]) for j, s in enumerate(seeds)}},
          "ylim": (-0.02, 1.02), "ylabel": "selection-matrix diagonal (mean) / lag accuracy",
          "title": "last layer: mass on the true lag's matching keys; argmax = true lag"}],
        title=ctx.title(f"D'Angelo et al.: selective induction, lags {list(lags)} (k={config.vocab_size}, "
                        f"T={config.seq_len}), loss"),
        formats=ctx.formats,
    )
    per_head = m["selection_heads"][:, -1].mean(0)  # [H_last, L, L]
    selection_panel = {"vmin": 0.0, "vmax": 1.0, "xlabel": "candidate lag ℓ'", "ylabel": "true lag ℓ of the sequence",
                       "col_blocks": blocks, "row_blocks": blocks}
    last_heads = [] if len(per_head) == 1 else [
        {**selection_panel, "matrix": per_head[h], "title": f"last layer, head {h}: attention on lag-ℓ' matching keys"}
        for h in range(len(per_head))]
    plot_heatmaps(
        ctx.figure("heads"),
        [{**selection_panel, "matrix": selection.mean(0),
          "title": f"last layer: attention on lag-ℓ' matching keys (mean of {config.seeds} seeds)"},
         *last_heads,
         {**selection_panel, "matrix": parent.mean(0),
          "title": f"last layer: attention on the lag-ℓ' parent x(t+1−ℓ') (mean of {config.seeds} seeds)"},
         *[{"matrix": m["layer1_lag_attention"][j, -1], "title": f"layer 1, seed {s}: attention from t to t − ℓ",
            "vmin": 0.0, "vmax": 1.0, "xlabel": "candidate lag ℓ", "ylabel": "layer-1 head", "col_blocks": blocks}
           for j, s in enumerate(seeds)]],
        title=ctx.title(f"D'Angelo et al.: selection matrix and layer-1 lag heads at step {int(steps[-1])}"),
        formats=ctx.formats,
    )
    return {
        "seeds": seeds,
        "lags": list(lags),
        **({"fixed_kernel": np.asarray(task.fixed_kernel()).tolist()} if config.kernel == "fixed" else {}),
        "reference_loss": refs,
        "bayes_lag_accuracy": float(bayes_accuracy),
        "test_lags_per_lag": np.bincount(np.asarray(lag_index_B), minlength=len(lags)).tolist(),
        "final_test_loss": _per_seed(final),
        "gap_to_bayes": _per_seed(final - bayes),
        "final_selection": {"rows": "true lag", "columns": "candidate lag", "labels": lag_names,
                            "mean": selection.mean(0).tolist(), "per_seed": selection.tolist()},
        "final_selection_heads": {"rows": "true lag", "columns": "candidate lag", "labels": lag_names,
                                  "mean": per_head.tolist()},
        "final_selection_diagonal": _per_seed(diagonal[:, -1]),
        "final_lag_accuracy": _per_seed(m["lag_accuracy"][:, -1]),
        "final_parent_selection": {"rows": "true lag", "columns": "candidate lag", "labels": lag_names,
                                   "mean": parent.mean(0).tolist(), "per_seed": parent.tolist()},
        "final_parent_accuracy": _per_seed(parent_accuracy),
        "final_parent_accuracy_by_lag": {"labels": lag_names, "per_seed": parent_by_lag.tolist()},
        "final_layer1_lag_attention": {"rows": "layer-1 head", "columns": "candidate lag",
                                       "per_seed": m["layer1_lag_attention"][:, -1].tolist()},
        "trajectory": {"steps": steps.tolist(), "test_loss": m["test_loss"].mean(0).tolist(),
                       "selection_diagonal": diagonal.mean(0).tolist(),
                       "lag_accuracy": m["lag_accuracy"].mean(0).tolist()},
        "train_wall_seconds": res.wall_seconds,
    }


def _diagonal_off(matrix) -> str:
    """"diagonal / off-diagonal" means of a square matrix, 3 decimals."""
    a = np.asarray(matrix)
    return f"{np.trace(a) / len(a):.3f} / {(a.sum() - np.trace(a)) / max(a.size - len(a), 1):.3f}"


def _summary(m: dict) -> list:
    f = _mean_sd
    r = m["reference_loss"]
    # runs written before the parent-selection measure existed have no such entry
    parent = [] if "final_parent_selection" not in m else [
        ("parent selection (attention on x_{t+1−ℓ'}) diagonal / off-diagonal (mean)",
         _diagonal_off(m["final_parent_selection"]["mean"])),
        ("parent-selection accuracy (model); by true lag, per seed",
         f"{f(m['final_parent_accuracy'])}; " + "; ".join(
             str([round(a, 2) for a in seed]) for seed in m["final_parent_accuracy_by_lag"]["per_seed"])),
    ]
    return [
        ("loss of the Bayes mixture / lag-known oracle / non-selective mean over lags / lag-1 bigram",
         f"{r['Bayes mixture over lags']:.4f} / {r['lag-known oracle']:.4f} / "
         f"{r['non-selective: mean over lags']:.4f} / {r['lag-1 bigram']:.4f}"),
        ("final test loss", f"{f(m['final_test_loss'])} ({len(m['seeds'])} seeds)"),
        ("gap to the Bayes mixture", f(m["gap_to_bayes"])),
        ("selection matrix diagonal / off-diagonal (mean)", _diagonal_off(m["final_selection"]["mean"])),
        ("lag-selection accuracy (model; Bayes posterior at the last token)",
         f"{f(m['final_lag_accuracy'])}; {m['bayes_lag_accuracy']:.3f}"),
        *parent,
        ("layer-1 heads: the lag each attends to most, per seed",
         "; ".join(str([m["lags"][i] for i in np.argmax(a, axis=-1)])
                   for a in np.asarray(m["final_layer1_lag_attention"]["per_seed"]))),
    ]


register(
    Experiment(
        name="dangelo-selective-lags",
        description="D'Angelo et al.: interleaved lags, a 3-layer attention-only transformer learns a selective "
                    "induction head",
        official=OFFICIAL,
        quick=QUICK,
        run=run_selective_lags,
        build=_build,
        summary=_summary,
        map_axes={"selection": ("candidate lag index", "true lag index"),
                  "selection_heads": ("candidate lag index", "true lag index"),
                  "layer1_lag_attention": ("candidate lag index", "layer-1 head")},
    )
)
