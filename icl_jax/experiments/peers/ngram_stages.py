"""``edelman-icl-mc``: Edelman et al. 2024, "The Evolution of Statistical Induction Heads" — a
two-layer attention-only transformer on in-context Markov chains passes through the strategies
uniform → in-context unigram → in-context bigram (docs/peer-tasks.md#in-context-n-gram-strategies).

Recorded over training, on one held-out set: the per-position test loss, the KL from each
strategy to the model (:func:`~icl_jax.analysis.progress.kl_to_strategies`) and layer 1's
previous-token score. The recipe is the spec's reading of the paper's figures (2 layers, 1 head
each, attention only, relative positions, width 16, AdamW 5e-4 with betas (0.9, 0.95) and weight
decay 0.1, batch 64; binary tokens, T = 100, Dirichlet(1) rows, stationary start).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_lines
from icl_jax.analysis.progress import kl_to_strategies, per_position_nll, previous_token_score
from icl_jax.experiments.common import _check_record_every, _mean_sd, _per_seed, _seeds, _test_sequences
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.strategies import ngram_strategy, uniform_strategy
from icl_jax.tasks.tasks import NGramTask

__all__ = ["NGramStagesConfig"]

STRATEGIES = ("uniform", "unigram", "bigram")


@dataclasses.dataclass(frozen=True)
class NGramStagesConfig(ExperimentConfig):
    """In-context Markov chains and the strategy stages (docs/peer-tasks.md#in-context-n-gram-strategies)."""

    title_fields = {"vocab_size": "k", "seq_len": "T", "kernel": "kernel", "steps": "steps", "seeds": "seeds"}

    seeds: int = option(3, "independent runs (one vmapped call)", min=1)
    vocab_size: int = option(2, "k, the number of states", min=2)
    seq_len: int = option(100, "T, tokens per sequence (loss at every position)", min=3)
    kernel: Literal["dirichlet", "doubly_stochastic"] = option(
        "dirichlet", "per-sequence kernel: Dirichlet(1) rows, or doubly stochastic (no unigram information)")
    width: int = option(16, "model width d", min=1)
    steps: int = option(4000, "AdamW steps", min=1)
    batch_size: int = option(64, "fresh sequences per step", min=1)
    learning_rate: float = option(5e-4, "AdamW learning rate (constant)", gt=0)
    weight_decay: float = option(0.1, "AdamW decoupled weight decay", min=0)
    test_size: int = option(512, "held-out sequences (one set for every run)", min=2)
    record_every: int = option(100, "steps between recorded metrics", min=1)

    def check(self) -> None:
        _check_record_every(self)


OFFICIAL = NGramStagesConfig()
QUICK = OFFICIAL.replace(steps=1600, record_every=50, seeds=2)


def _task(config: NGramStagesConfig) -> NGramTask:
    return NGramTask(config.vocab_size, config.seq_len, (1,), init="stationary", alpha=1.0, kernel=config.kernel)


def _model(config: NGramStagesConfig) -> Transformer:
    return Transformer(config.vocab_size, config.seq_len, heads=(1, 1), width=config.width, positions="relative",
                       mlp=False, layernorm=False)


def _build(config: NGramStagesConfig) -> Setup:
    return Setup(_task(config), _model(config))


def _strategies(tokens_BxT, k: int) -> dict:
    return {"uniform": uniform_strategy(tokens_BxT, k), "unigram": ngram_strategy(tokens_BxT, k, 1),
            "bigram": ngram_strategy(tokens_BxT, k, 2)}


def run_ngram_stages(config: NGramStagesConfig, ctx: RunContext) -> dict:
    task, model = _task(config), _model(config)
    k = config.vocab_size
    test = _test_sequences(task, config)
    strategies = _strategies(test.tokens_BxT, k)
    strategy_loss = {n: float(jnp.mean(per_position_nll(p, test.labels_BxT))) for n, p in strategies.items()}
    bayes_like = float(jnp.mean(per_position_nll(test.label_probs_BxTxS, test.labels_BxT)))

    def record(params, step):
        probs = jax.nn.softmax(model.apply_all(params, test.tokens_BxT), axis=-1)
        kl = kl_to_strategies(probs, strategies)
        return {"test_loss": jnp.mean(per_position_nll(probs, test.labels_BxT)),
                **{f"kl_{n}": kl[n] for n in STRATEGIES},
                "previous_token": previous_token_score(model.attention(params, test.tokens_BxT[:128])[0])[0]}

    stage = engine.Stage(config.steps, optimizer="adamw", learning_rate=config.learning_rate,
                         weight_decay=config.weight_decay, b1=0.9, b2=0.95)
    res = engine.sweep(model.sequence_loss, lambda key, hp: model.init(key), [stage],
                       engine.FreshSamples(lambda key, hp: task.sample_sequences(key, config.batch_size)),
                       seeds=_seeds(config), metrics=record, record_every=config.record_every, **ctx.sweep_kwargs())
    m = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    steps = np.asarray(res.record_steps)
    closest = np.argmin(np.stack([m[f"kl_{n}"] for n in STRATEGIES]), axis=0)  # [seed, record]

    def first_closest(name):  # first record at which the strategy is the model's nearest, per seed
        i = STRATEGIES.index(name)
        return [int(steps[np.argmax(row == i)]) if np.any(row == i) else -1 for row in closest]

    plot_lines(
        ctx.figure("stages"),
        [{"lines": {f"seed {s}": (steps, m["test_loss"][j]) for j, s in enumerate(_seeds(config))},
          "refs": {f"{n} strategy": strategy_loss[n] for n in STRATEGIES}, "ylabel": "test loss per position (nats)",
          "title": "test loss and the strategies' losses"},
         {"lines": {f"KL({n} ‖ model)": (steps, m[f"kl_{n}"].mean(0)) for n in STRATEGIES}, "logy": True,
          "ylabel": f"KL, mean over positions and {config.seeds} seeds", "title": "distance to each strategy"},
         {"lines": {f"seed {s}": (steps, m["previous_token"][j]) for j, s in enumerate(_seeds(config))},
          "ylim": (-0.02, 1.02), "ylabel": "layer-1 attention on the previous token",
          "title": "previous-token head"}],
        title=ctx.title(f"Edelman et al.: in-context Markov chains (k={k}, T={config.seq_len}), strategy stages"),
        formats=ctx.formats,
    )
    return {
        "seeds": _seeds(config),
        "strategy_loss": strategy_loss,
        "oracle_loss": bayes_like,
        "final_test_loss": _per_seed(m["test_loss"][:, -1]),
        "final_kl": {n: _per_seed(m[f"kl_{n}"][:, -1]) for n in STRATEGIES},
        "first_step_closest": {n: first_closest(n) for n in STRATEGIES},
        "final_previous_token": _per_seed(m["previous_token"][:, -1]),
        "trajectory": {"steps": steps.tolist(), "test_loss": m["test_loss"].mean(0).tolist(),
                       **{f"kl_{n}": m[f"kl_{n}"].mean(0).tolist() for n in STRATEGIES}},
        "train_wall_seconds": res.wall_seconds,
    }


def _summary(m: dict) -> list:
    f = _mean_sd
    sl = m["strategy_loss"]
    return [
        ("strategy losses: uniform / unigram / bigram", f"{sl['uniform']:.4f} / {sl['unigram']:.4f} / {sl['bigram']:.4f}"),
        ("final test loss", f"{f(m['final_test_loss'])} ({len(m['seeds'])} seeds)"),
        ("final KL to uniform / unigram / bigram", " / ".join(f"{m['final_kl'][n]['mean']:.4f}" for n in STRATEGIES)),
        ("first step each strategy is the nearest (per seed): unigram; bigram",
         f"{m['first_step_closest']['unigram']}; {m['first_step_closest']['bigram']}"),
        ("final layer-1 previous-token attention", f(m["final_previous_token"])),
    ]


register(
    Experiment(
        name="edelman-icl-mc",
        description="Edelman et al.: attention-only transformer on in-context Markov chains, uniform → unigram → bigram",
        official=OFFICIAL,
        quick=QUICK,
        run=run_ngram_stages,
        build=_build,
        summary=_summary,
    )
)
