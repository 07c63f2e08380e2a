"""What every Nichani experiment shares: the test set and its chunked test loss, the
baselines, one engine sweep over the config's seeds (``_sweep``, ``_train_task``), the
graph-recovery numbers of a tree run (``_tree_result``), the loss panel, and the summary
formatters.

The recipes these serve are tabulated in ``docs/nichani-theory.md#official-recipes``; the
baselines and the Bayes / oracle conventions in ``docs/quirks.md#nichani-quirk-1`` (tree
Bayes, ``bayes_official``) and ``docs/nichani-theory.md#closed-forms-for-tests``; seeds and
run folders in ``docs/quirks.md#nichani-quirk-5`` and ``docs/quirks.md#nichani-quirk-8``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import numpy as np

from icl_jax import engine
from icl_jax.experiments.common import _check_record_every, _loss_stat, _per_seed, _seeds, _test_set
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import RunContext
from icl_jax.losses import chunked_mean_fn
from icl_jax.tasks.baselines import baseline_losses
from icl_jax.tasks.sampling import Batch


@dataclasses.dataclass(frozen=True)
class NichaniConfig(ExperimentConfig):
    """What every trained Nichani experiment sets: the task's S, T, α, and one optimiser
    stage (docs/nichani-theory.md#official-recipes)."""

    title_fields = {"steps": "steps", "learning_rate": "lr", "batch_size": "batch", "seeds": "seeds"}

    vocab_size: int = option(10, "S, the vocabulary size", min=2)
    seq_len: int = option(20, "T, the sequence length including the query", min=2)
    alpha: float = option(0.1, "Dirichlet concentration α of every kernel row", gt=0)
    steps: int = option(2**17, "training steps", min=1)
    batch_size: int = option(1024, "fresh sequences per step", min=1)
    optimizer: Literal["sgd", "adam", "adamw"] = option("sgd", "optimiser (optax)")
    learning_rate: float = option(1.0, "peak learning rate", gt=0)
    schedule: Literal["constant", "cosine"] = option("cosine", "learning-rate schedule over the steps")
    weight_decay: float = option(0.0, "decoupled weight decay (adamw)", min=0)
    test_size: int = option(2**16, "held-out test sequences (one set shared by every seed)", min=2)
    record_every: int = option(1024, "steps between recorded metrics", min=1)
    chunk_steps: int = option(0, "steps per compiled chunk = between checkpoints (0: the engine default, "
                                 "max(1024, steps/64))", min=0)

    def check(self) -> None:
        _check_record_every(self)


def _test_loss_fn(model, test: Batch, chunk: int = 8192, **loss_kw):
    """params → ``model``'s mean loss over **every** test sequence, in chunks (a 2^16 test set
    never materialises its [B, T, T] attention)."""
    return chunked_mean_fn(lambda params, b: model.per_example_loss(params, b, **loss_kw), test, chunk)


def _baselines(task, test: Batch) -> dict:
    return {name: _loss_stat(v) for name, v in baseline_losses(task, test).items()}


def _first_step(steps, ok_RxN):
    """First recorded step at which ``ok`` holds (per run; −1 if never)."""
    ok = np.asarray(ok_RxN)
    return [int(steps[np.argmax(r)]) if r.any() else -1 for r in ok]


def _stage(config: NichaniConfig, **kw) -> engine.Stage:
    return engine.Stage(
        config.steps,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        schedule=config.schedule,
        weight_decay=config.weight_decay,
        **kw,
    )


def _sweep(config, ctx: RunContext, loss, init, stages, sample, metrics, **kw):
    """One engine sweep over the config's seeds, tied to the run folder of ``ctx``."""
    return engine.sweep(
        loss,
        init,
        stages,
        engine.FreshSamples(sample),
        seeds=_seeds(config),
        metrics=metrics,
        record_every=config.record_every,
        chunk_steps=config.chunk_steps or None,
        **ctx.sweep_kwargs(),
        **kw,
    )


class _Trained(NamedTuple):
    result: engine.TrainResult
    metrics: dict  # recorded metrics with the grid axis dropped: leaves [seed, record, ...]
    steps: np.ndarray  # the recorded steps
    baselines: dict  # every baseline's loss on the test set
    record: Callable  # params -> the recorded metrics (test loss included)


def _train_task(config, ctx: RunContext, task, model, init, probe, stages=None, **loss_kw) -> _Trained:
    """Train ``model.loss(params, batch, **loss_kw)`` on fresh batches of ``task`` for all the
    config's seeds in one sweep, recording ``probe(params)`` and the loss on one fixed test
    set, on which every baseline is scored too."""
    test = _test_set(task, config)
    test_loss = _test_loss_fn(model, test, **loss_kw)
    batch_size = config.batch_size

    def loss(params, batch):
        return model.loss(params, batch, **loss_kw)

    def record(params):
        return {**probe(params), "test_loss": test_loss(params)}

    res = _sweep(
        config,
        ctx,
        loss,
        init,
        stages or [_stage(config)],
        lambda key, hp: task.sample(key, batch_size),
        lambda params, step: record(params),
    )
    metrics = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    return _Trained(res, metrics, np.asarray(res.record_steps), _baselines(task, test), record)


def _tree_result(trained: _Trained) -> dict:
    """The graph-recovery and loss numbers every tree-graph experiment reports."""
    m, base = trained.metrics, trained.baselines
    return {
        "seeds": list(trained.result.seeds),
        "parent_argmax_accuracy": _per_seed(m["parent_argmax_accuracy"][:, -1]),
        "mean_parent_attention": _per_seed(m["mean_parent_attention"][:, -1]),
        "final_test_loss": _per_seed(m["test_loss"][:, -1]),
        "bayes_loss": base["bayes"]["loss"],
        "bayes_official_loss": base["bayes_official"]["loss"],
        "oracle_loss": base["oracle"]["loss"],
        "unigram_loss": base["unigram"]["loss"],
        "baselines": base,
        "train_wall_seconds": trained.result.wall_seconds,
    }


def _loss_panel(test_loss_RxN, baselines, names=("bayes", "oracle", "unigram")):
    return {
        "values": test_loss_RxN,
        "ylabel": "test loss (nats)",
        "label": "seeds",
        "refs": {n: baselines[n]["loss"] for n in names if n in baselines},
    }


def _true_adjacency(parent_lists, t: int) -> np.ndarray:
    adj = np.zeros((t, t))
    for i, ps in enumerate(parent_lists[:t]):
        adj[i, list(ps)] = 1.0
    return adj


def _fmt(d: dict) -> str:
    """A per-seed summary from :func:`_per_seed` as 'mean ± sd (n=…)'."""
    return f"{d['mean']:.3f} ± {d['sd']:.3f} (n={len(d['per_seed'])})"


def _tree_summary(metrics: dict) -> list:
    return [
        ("parent argmax accuracy (final)", _fmt(metrics["parent_argmax_accuracy"])),
        ("mean attention on parent (final)", _fmt(metrics["mean_parent_attention"])),
        ("final test loss", _fmt(metrics["final_test_loss"])),
        ("Bayes / unigram / oracle loss", f"{metrics['bayes_loss']:.3f} / {metrics['unigram_loss']:.3f} / {metrics['oracle_loss']:.3f}"),
    ]
