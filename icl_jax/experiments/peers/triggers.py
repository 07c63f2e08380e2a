"""``bietti-triggers``: Bietti et al. 2023, "Birth of a Transformer: A Memory Viewpoint" — on
the trigger task (a global bigram plus K trigger tokens whose successors are drawn per sequence)
a two-layer transformer learns the global bigram first, then an induction head forms: a
previous-token head in layer 1 and a head in layer 2 that attends to the token after the
trigger's earlier occurrence (docs/peer-tasks.md#trigger-tokens).

Recorded over training on one held-out set, by the kind of position
(:meth:`~icl_jax.tasks.triggers.TriggerTask.position_kinds`): the loss and accuracy at the
induction positions (a trigger seen before: the paper's accuracy on the second and later
occurrences), the loss at the global-bigram positions, layer 1's previous-token attention (at
every position, and where z_{t−1} is a trigger) and layer 2's induction attention
(:func:`~icl_jax.analysis.progress.lag_match_attention` with lag 1 at the induction positions).
The references are exact: the Bayes loss at the bigram positions (the entropy of π_b(·|z_t)),
0 at the induction positions, and log(N − K) there for a model that does not copy in context
(the output law, uniform over the non-triggers).

The recipe is the project's reading of the paper: 2 layers, 1 head each, absolute positions,
MLPs, no layer norm; token and position embeddings and the unembedding are random and frozen
(``frozen="embeddings"``; ``"none"`` trains them too); Adam, batch 64, loss at every position.
The global bigram is a random Dirichlet(0.3) bigram (the paper uses character statistics of a
corpus; nothing is downloaded here).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_runs
from icl_jax.analysis.progress import lag_match_attention, per_position_nll, previous_token_score
from icl_jax.experiments.common import _check_record_every, _mean_sd, _per_seed, _seeds, _test_sequences
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.triggers import TriggerTask

__all__ = ["TriggerConfig", "ACCURACY_THRESHOLD", "BIGRAM_GAP_CLOSED"]

#: the induction head has "emerged" at the first record with induction accuracy >= this
ACCURACY_THRESHOLD = 0.5
#: the global bigram is "learned" at the first record that closes this share of the bigram-position loss gap
BIGRAM_GAP_CLOSED = 0.9
#: groups the engine trains (the Transformer's top-level parameter keys are its stage groups)
_FROZEN = {"embeddings": ("wte", "wpe", "W"), "none": ()}


@dataclasses.dataclass(frozen=True)
class TriggerConfig(ExperimentConfig):
    """The trigger task and the two-layer transformer (docs/peer-tasks.md#trigger-tokens)."""

    title_fields = {"vocab_size": "N", "num_triggers": "K", "seq_len": "T", "width": "d", "steps": "steps",
                    "seeds": "seeds"}

    seeds: int = option(3, "independent runs (one vmapped call)", min=1)
    vocab_size: int = option(65, "N, the vocabulary (the paper's 65 characters)", min=3)
    num_triggers: int = option(5, "K trigger tokens (the K most probable under π_u)", min=1)
    seq_len: int = option(256, "T, tokens per sequence (loss at every position; a trigger must recur)", min=3)
    bigram_alpha: float = option(0.3, "Dirichlet concentration of the global bigram's rows", gt=0)
    bigram_seed: int = option(0, "seed of the fixed global bigram π_b", min=0)
    width: int = option(128, "model width d", min=1)
    frozen: Literal["embeddings", "none"] = option(
        "embeddings", "random frozen token/position embeddings and unembedding (the paper), or train everything")
    steps: int = option(3000, "Adam steps", min=1)
    batch_size: int = option(64, "fresh sequences per step", min=1)
    learning_rate: float = option(1e-3, "Adam learning rate (constant)", gt=0)
    test_size: int = option(256, "held-out sequences (one set for every run)", min=2)
    record_every: int = option(50, "steps between recorded metrics", min=1)

    def check(self) -> None:
        _check_record_every(self)
        if self.num_triggers > self.vocab_size - 1:
            raise ValueError(f"num_triggers ({self.num_triggers}) must be <= vocab_size − 1 ({self.vocab_size - 1})")


OFFICIAL = TriggerConfig()
QUICK = OFFICIAL.replace(vocab_size=32, num_triggers=3, seq_len=64, width=64, steps=1000, learning_rate=3e-3,
                         seeds=2)


def _task(config: TriggerConfig) -> TriggerTask:
    return TriggerTask(config.vocab_size, config.seq_len, config.num_triggers, bigram_alpha=config.bigram_alpha,
                       bigram_seed=config.bigram_seed)


def _model(config: TriggerConfig) -> Transformer:
    return Transformer(config.vocab_size, config.seq_len, heads=(1, 1), width=config.width, positions="absolute",
                       mlp=True, layernorm=False)


def _build(config: TriggerConfig) -> Setup:
    return Setup(_task(config), _model(config))


def trained_groups(config: TriggerConfig, model: Transformer) -> tuple[str, ...] | None:
    """The parameter groups an engine stage trains (None: all)."""
    frozen = _FROZEN[config.frozen]
    if not frozen:
        return None
    groups = jax.eval_shape(model.init, jax.random.key(0))  # the top-level keys, nothing computed
    return tuple(g for g in groups if g not in frozen)


def _mean_at(values, mask):
    """The mean of ``values`` over the entries where ``mask`` holds (0 if it holds nowhere)."""
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def reference_losses(task: TriggerTask, test) -> dict:
    """Exact references on the held-out set: its position kinds and the Bayes losses by kind."""
    kinds = task.position_kinds(test.tokens_BxT)
    if not bool(jnp.any(kinds["induction"])):
        raise ValueError("the held-out set has no induction position (a trigger seen twice): raise seq_len or "
                         "test_size, or num_triggers")
    bayes_nll = per_position_nll(task.bayes(test.tokens_BxT), test.labels_BxT, eps=1e-30)
    mean_at = lambda v, m: float(_mean_at(v, m))  # noqa: E731
    n_out = int(np.sum(task.output_law > 0))
    return {"kinds": kinds, "bayes_bigram_loss": mean_at(bayes_nll, kinds["bigram"]),
            "bayes_induction_loss": mean_at(bayes_nll, kinds["induction"]),
            "no_copy_induction_loss": float(np.log(n_out)) if task.outputs == "uniform" else None,
            "induction_positions": int(jnp.sum(kinds["induction"])), "bigram_positions": int(jnp.sum(kinds["bigram"]))}


def trigger_recorder(model: Transformer, test, kinds: dict, probe: int = 64):
    """``record(params, *, interventions=None)``: loss and accuracy by position kind on the whole
    held-out set, and the two heads' scores on its first ``probe`` sequences, for the model with
    ``interventions`` (the intact one by default). Wrap it as the engine's ``metrics(params,
    step)``: a third positional parameter would receive the sweep's hyperparameters."""
    ind, big = kinds["induction"], kinds["bigram"]
    mean_at = _mean_at
    tokens_p, ind_p = test.tokens_BxT[:probe], ind[:probe]
    # the positions t >= 1 whose previous token is a trigger: the outputs, which an induction
    # head's layer 1 must tag with "follows q_k"
    after_p = (kinds["induction"] | kinds["first_trigger"])[:probe, :-1]

    def record(params, *, interventions=None):
        logits = model.apply_all(params, test.tokens_BxT, interventions=interventions)
        nll = per_position_nll(jax.nn.softmax(logits, axis=-1), test.labels_BxT, eps=1e-30)
        hit = (jnp.argmax(logits, axis=-1) == test.labels_BxT).astype(jnp.float32)
        attn = model.attention(params, tokens_p, interventions=interventions)
        return {"induction_loss": mean_at(nll, ind), "induction_accuracy": mean_at(hit, ind),
                "bigram_loss": mean_at(nll, big),
                "previous_token": previous_token_score(attn[0])[0],
                "previous_token_after_trigger": mean_at(jnp.diagonal(attn[0][:, 0], offset=-1, axis1=-2, axis2=-1),
                                                        after_p),
                # per sequence, then over the probe sequences that have an induction position
                "induction_attention": jnp.sum(lag_match_attention(attn[1], tokens_p, 1, ind_p)[:, 0])
                / jnp.maximum(jnp.sum(jnp.any(ind_p, axis=-1)), 1)}

    return record


def emergence(steps, m: dict, refs: dict) -> dict:
    """Per seed, the first recorded step at which the bigram part is learned
    (:data:`BIGRAM_GAP_CLOSED` of its loss gap to Bayes closed) and at which the induction head
    has emerged (accuracy >= :data:`ACCURACY_THRESHOLD`); −1 if never."""
    steps = np.asarray(steps)
    gap = m["bigram_loss"] - refs["bayes_bigram_loss"]
    bigram = gap <= (1 - BIGRAM_GAP_CLOSED) * gap[:, :1]
    induction = m["induction_accuracy"] >= ACCURACY_THRESHOLD
    first = lambda hit: [int(steps[np.argmax(r)]) if r.any() else -1 for r in hit]  # noqa: E731
    return {"bigram_learned": first(bigram), "induction_emerged": first(induction)}


def _panels(steps, m: dict, refs: dict) -> list:
    ind_refs = {"Bayes (copy)": refs["bayes_induction_loss"]}
    if refs["no_copy_induction_loss"] is not None:
        ind_refs["no copy: log(N − K)"] = refs["no_copy_induction_loss"]
    return [
        {"values": m["bigram_loss"], "ylabel": "loss at bigram positions (nats)", "label": "seeds",
         "refs": {"Bayes: H(π_b(·|z))": refs["bayes_bigram_loss"]}, "title": "global bigram"},
        {"values": m["induction_loss"], "ylabel": "loss at induction positions (nats)", "label": "seeds",
         "refs": ind_refs, "title": "second and later trigger occurrences"},
        {"values": m["induction_accuracy"], "ylabel": "accuracy at induction positions", "label": "seeds",
         "ylim": (-0.02, 1.02), "title": "in-context copying"},
        {"values": m["previous_token"], "ylabel": "layer-1 attention on t − 1", "label": "seeds",
         "ylim": (-0.02, 1.02), "title": "previous-token head (layer 1)"},
        {"values": m["previous_token_after_trigger"], "ylabel": "layer-1 attention on t − 1 where z_{t−1} is a trigger",
         "label": "seeds", "ylim": (-0.02, 1.02), "title": "previous-token head at the outputs"},
        {"values": m["induction_attention"], "ylabel": "layer-2 attention on successors of z_t", "label": "seeds",
         "ylim": (-0.02, 1.02), "title": "induction head (layer 2), at induction positions"},
    ]


def run_triggers(config: TriggerConfig, ctx: RunContext) -> dict:
    task, model = _task(config), _model(config)
    test = _test_sequences(task, config)
    refs = reference_losses(task, test)
    record = trigger_recorder(model, test, refs.pop("kinds"))
    stage = engine.Stage(config.steps, groups=trained_groups(config, model), optimizer="adam",
                         learning_rate=config.learning_rate)
    res = engine.sweep(model.sequence_loss, lambda key, hp: model.init(key), [stage],
                       engine.FreshSamples(lambda key, hp: task.sample_sequences(key, config.batch_size)),
                       seeds=_seeds(config), metrics=lambda params, step: record(params),
                       record_every=config.record_every, **ctx.sweep_kwargs())
    m = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
    steps = np.asarray(res.record_steps)
    plot_runs(ctx.figure("induction"), steps, _panels(steps, m, refs),
              title=ctx.title(f"Bietti et al.: trigger tokens on a global bigram (N={config.vocab_size}, "
                              f"K={config.num_triggers}, T={config.seq_len}), birth of an induction head"),
              formats=ctx.formats)
    return {"seeds": _seeds(config), **refs, "triggers": task.triggers.tolist(),
            **{f"final_{name}": _per_seed(v[:, -1]) for name, v in m.items()},
            "first_step": emergence(steps, m, refs),
            "trajectory": {"steps": steps.tolist(), **{name: v.mean(0).tolist() for name, v in m.items()}},
            "train_wall_seconds": res.wall_seconds}


def _summary(m: dict) -> list:
    f = functools.partial(_mean_sd, digits=3)
    n = len(m["seeds"])
    no_copy = m["no_copy_induction_loss"]
    return [
        ("Bayes loss at bigram positions / no-copy loss at induction positions",
         f"{m['bayes_bigram_loss']:.3f} / {no_copy:.3f}" if no_copy is not None else f"{m['bayes_bigram_loss']:.3f}"),
        ("final loss at bigram / induction positions", f"{f(m['final_bigram_loss'])} / {f(m['final_induction_loss'])} ({n} seeds)"),
        ("final accuracy at induction positions", f(m["final_induction_accuracy"])),
        ("final layer-1 previous-token attention: all positions / after a trigger",
         f"{f(m['final_previous_token'])} / {f(m['final_previous_token_after_trigger'])}"),
        ("final layer-2 induction attention (at induction positions)", f(m["final_induction_attention"])),
        (f"first step: bigram {BIGRAM_GAP_CLOSED:.0%} learned; induction accuracy >= {ACCURACY_THRESHOLD} (per seed)",
         f"{m['first_step']['bigram_learned']}; {m['first_step']['induction_emerged']}"),
    ]


register(
    Experiment(
        name="bietti-triggers",
        description="Bietti et al.: trigger tokens on a global bigram; the bigram is learned, then an induction head forms",
        official=OFFICIAL,
        quick=QUICK,
        run=run_triggers,
        build=_build,
        summary=_summary,
    )
)
