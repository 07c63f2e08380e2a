"""``makkuva-switching``: Makkuva et al. 2024, "Attention with Markov" — on a fixed binary
switching chain with p + q > 1, one attention layer often stays at the stationary unigram loss
h(π_1) while two layers reach the entropy rate (docs/peer-tasks.md#binary-switching-chain).

Each depth is one engine sweep over the seeds (one vmapped call); the two-layer model is the
run's model (``run/``), the one-layer comparison lives in ``run/layers1/``. The recipe is the
project's reading of the paper (the spec marks the model and optimiser as an unverified
recollection): width 8, one head per layer, learned positions, pre-LN, MLP, tied readout,
AdamW with a cosine schedule, loss at every position.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from icl_jax import engine
from icl_jax.analysis.plots import plot_runs
from icl_jax.analysis.progress import previous_token_score
from icl_jax.experiments.common import _check_record_every, _mean_sd, _per_seed, _seeds, _test_sequences
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.losses import chunked_mean_fn
from icl_jax.models.transformer import Transformer
from icl_jax.tasks.switching import SwitchingChainTask

__all__ = ["SwitchingConfig"]


@dataclasses.dataclass(frozen=True)
class SwitchingConfig(ExperimentConfig):
    """The switching chain and the two depths compared (docs/peer-tasks.md#binary-switching-chain)."""

    title_fields = {"p": "p", "q": "q", "seq_len": "T", "steps": "steps", "learning_rate": "lr", "seeds": "seeds"}

    seeds: int = option(3, "independent runs per depth (one vmapped call each)", min=1)
    p: float = option(0.8, "P(0 → 1)", gt=0, max=1)
    q: float = option(0.6, "P(1 → 0); the paper's phenomenon needs p + q > 1", gt=0, max=1)
    seq_len: int = option(256, "T, tokens per sequence (loss at every position)", min=2)
    width: int = option(8, "model width d", min=1)
    steps: int = option(8000, "AdamW steps", min=1)
    batch_size: int = option(32, "fresh sequences per step", min=1)
    learning_rate: float = option(2e-3, "peak learning rate (cosine decay to 0)", gt=0)
    weight_decay: float = option(1e-3, "AdamW decoupled weight decay", min=0)
    test_size: int = option(1024, "held-out sequences (one set for every run)", min=2)
    record_every: int = option(200, "steps between recorded metrics", min=1)

    def check(self) -> None:
        _check_record_every(self)


OFFICIAL = SwitchingConfig()
QUICK = OFFICIAL.replace(seq_len=64, steps=1500, record_every=100, test_size=512)
DEPTHS = (1, 2)


def _model(config: SwitchingConfig, layers: int) -> Transformer:
    return Transformer(2, config.seq_len, heads=(1,) * layers, width=config.width, positions="absolute",
                       mlp=True, layernorm=True, tied_readout=True)


def _build(config: SwitchingConfig) -> Setup:
    return Setup(SwitchingChainTask(config.seq_len, p=config.p, q=config.q), _model(config, 2))


def _recorder(model: Transformer, test):
    """``metrics(params, step)``: the per-position test loss (every test sequence) and layer 1's
    previous-token attention (on the first 256 test sequences)."""
    test_loss = chunked_mean_fn(lambda p, b: model.per_position_loss(p, b).mean(-1), test, 512)
    probe = test.tokens_BxT[:256]
    return lambda params, step: {"test_loss": test_loss(params),
                                 "previous_token": previous_token_score(model.attention(params, probe)[0])[0]}


def run_switching(config: SwitchingConfig, ctx: RunContext) -> dict:
    task = SwitchingChainTask(config.seq_len, p=config.p, q=config.q)
    test = _test_sequences(task, config)
    entropy_rate, unigram = float(task.entropy_rate()), float(task.unigram_loss())
    stage = engine.Stage(config.steps, optimizer="adamw", learning_rate=config.learning_rate, schedule="cosine",
                         weight_decay=config.weight_decay)
    out, curves = {}, {}
    for layers in DEPTHS:
        model = _model(config, layers)
        kwargs = ctx.sweep_kwargs()
        if layers != 2:  # the run's model is the two-layer one; the comparison in its own folder
            kwargs["out_dir"] = ctx.run_dir / f"layers{layers}"
        res = engine.sweep(model.sequence_loss, lambda key, hp, model=model: model.init(key), [stage],
                           engine.FreshSamples(lambda key, hp: task.sample_sequences(key, config.batch_size)),
                           seeds=_seeds(config), metrics=_recorder(model, test), record_every=config.record_every,
                           **kwargs)
        m = jax.tree.map(lambda x: np.asarray(x)[0], res.metrics)
        steps = np.asarray(res.record_steps)
        final = m["test_loss"][:, -1]
        curves[layers] = (steps, m["test_loss"])
        out[f"layers{layers}"] = {
            "final_test_loss": _per_seed(final),
            "gap_to_entropy_rate": _per_seed(final - entropy_rate),
            "at_unigram": int(np.sum(np.abs(final - unigram) < 0.01)),
            "at_kernel": int(np.sum(final - entropy_rate < 0.01)),
            "previous_token_attention": _per_seed(m["previous_token"][:, -1]),
            "trajectory": {"steps": steps.tolist(), "test_loss": m["test_loss"].mean(0).tolist()},
            "train_wall_seconds": res.wall_seconds,
        }
    refs = {"unigram h(π₁)": unigram, "entropy rate (kernel)": entropy_rate}
    top = max(float(np.max(c[1])) for c in curves.values())
    ylim = (entropy_rate - 0.02, min(top, unigram + 0.1) + 0.02)
    plot_runs(
        ctx.figure("loss"),
        curves[2][0],
        [{"values": curves[layers][1], "ylabel": "test loss per position (nats)", "refs": refs, "ylim": ylim,
          "label": "seeds", "title": f"{layers} attention layer{'s' if layers > 1 else ''}"} for layers in DEPTHS],
        title=ctx.title(f"Makkuva et al.: binary switching chain p={config.p}, q={config.q}, one vs two attention layers"),
        formats=ctx.formats,
    )
    return {"p": config.p, "q": config.q, "entropy_rate": entropy_rate, "unigram_loss": unigram,
            "seeds": _seeds(config), **out}


def _summary(m: dict) -> list:
    f = _mean_sd
    rows = [("entropy rate / unigram loss h(π₁)", f"{m['entropy_rate']:.4f} / {m['unigram_loss']:.4f}")]
    for layers in DEPTHS:
        r = m[f"layers{layers}"]
        n = len(m["seeds"])
        rows.append((f"{layers} layer(s): final test loss", f"{f(r['final_test_loss'])} ({n} seeds)"))
        rows.append((f"{layers} layer(s): seeds at the kernel / at the unigram (within 0.01)", f"{r['at_kernel']} / {r['at_unigram']}"))
    return rows


register(
    Experiment(
        name="makkuva-switching",
        description="Makkuva et al.: binary switching chain, one vs two attention layers (unigram trap for p + q > 1)",
        official=OFFICIAL,
        quick=QUICK,
        run=run_switching,
        build=_build,
        summary=_summary,
    )
)
