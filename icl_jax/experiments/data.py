"""``data-baselines``: the sampler against its stationary law, and every baseline's loss.

Two checks a reader can see: (1) for one fixed π the empirical token marginal of every
context position of a chain sequence matches μ_π from the GTH solve (docs/tasks.md#tree-task);
(2) the Monte-Carlo loss of every reference predictor on the tree, DAG and n-gram tasks,
with standard errors and the closed-form oracle ψ(Sα+1) − ψ(α+1)
(docs/nichani-theory.md#closed-forms-for-tests)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.analysis.plots import plot_baseline_losses, plot_marginals
from icl_jax.experiments.config import ExperimentConfig, option
from icl_jax.experiments.registry import Experiment, RunContext, Setup, register
from icl_jax.tasks.baselines import estimate_baseline_losses
from icl_jax.tasks.priors import sample_dirichlet, stationary_distribution
from icl_jax.tasks.tasks import NGramTask, dag_task, tree_task


@dataclasses.dataclass(frozen=True)
class DataConfig(ExperimentConfig):
    """The sampler check and the baseline table (no training)."""

    title_fields = {"samples": "samples"}

    samples: int = option(65536, "sequences per Monte-Carlo estimate", min=2)
    vocab_size: int = option(10, "S of the chain (tree) task", min=2)
    seq_len: int = option(20, "T of the chain task, query included", min=2)
    alpha: float = option(0.1, "Dirichlet concentration α of every task", gt=0)
    dag_vocab_size: int = option(5, "S of the Fig. 5 DAG task", min=2)
    dag_seq_len: int = option(32, "T of the Fig. 5 DAG task", min=2)
    ngram_vocab_size: int = option(3, "d of the n-gram task", min=2)
    ngram_seq_len: int = option(100, "L of the n-gram task", min=2)
    ngram_parents: tuple[int, ...] = option((1, 2), "parent offsets of the n-gram task", min=1)


OFFICIAL = DataConfig()
QUICK = OFFICIAL.replace(samples=16384)


def _tasks(config: DataConfig) -> dict:
    return {
        f"tree chain S={config.vocab_size} T={config.seq_len}": tree_task(
            "chain", vocab_size=config.vocab_size, seq_len=config.seq_len, alpha=config.alpha),
        f"dag fig5 S={config.dag_vocab_size} T={config.dag_seq_len}": dag_task(
            vocab_size=config.dag_vocab_size, seq_len=config.dag_seq_len, alpha=config.alpha),
        f"n-gram d={config.ngram_vocab_size} L={config.ngram_seq_len} parents {config.ngram_parents}": NGramTask(
            config.ngram_vocab_size, config.ngram_seq_len, config.ngram_parents, alpha=config.alpha),
    }


def build(config: DataConfig) -> Setup:
    """Every task is built (and so validated) before anything runs; the chain task is the
    one whose marginals are checked."""
    return Setup(tuple(_tasks(config).values()), None)


def _marginals(config: DataConfig, key):
    task = tree_task("chain", vocab_size=config.vocab_size, seq_len=config.seq_len, alpha=config.alpha)
    s, n = task.vocab_size, config.samples
    pi = sample_dirichlet(jax.random.fold_in(key, 0), task.alpha, (1, s), s)
    mu = np.asarray(stationary_distribution(pi))[0]
    batch = jax.jit(task.sample_with_kernels)(jax.random.fold_in(key, 1), {"pi": jnp.broadcast_to(pi, (n, s, s))})
    context = np.asarray(batch.tokens_BxT[:, :-1])
    freq = np.stack([np.bincount(context[:, i], minlength=s) / n for i in range(context.shape[1])])
    # per position: Pearson chi-square of the n i.i.d. tokens against μ_π, tokens with an
    # expected count below 5 pooled into one cell (so the χ² approximation holds);
    # Bonferroni over positions, since the smallest of P p-values is reported
    from scipy.stats import chi2

    big = n * mu >= 5
    probs = np.append(mu[big], mu[~big].sum())
    pvals = []
    for row in freq:
        obs = np.append(row[big], row[~big].sum())
        keep = probs > 0
        stat = n * np.sum((obs[keep] - probs[keep]) ** 2 / probs[keep])
        pvals.append(chi2.sf(stat, df=keep.sum() - 1))
    return task, mu, freq, {
        "marginal_max_abs_error": float(np.max(np.abs(freq - mu))),
        "marginal_chi2_pvalue_bonferroni": float(min(1.0, min(pvals) * len(pvals))),
        "marginal_positions": int(context.shape[1]),
    }


def run(config: DataConfig, ctx: RunContext) -> dict:
    key = jax.random.key(config.seed)
    tree, mu, freq, metrics = _marginals(config, jax.random.fold_in(key, 0))
    plot_marginals(
        ctx.figure("marginals"),
        mu,
        freq,
        ctx.title(f"chain task, one fixed π (S={tree.vocab_size}, α={tree.alpha:g}): every position ~ μ_π "
                  f"(max |error| {metrics['marginal_max_abs_error']:.4f})"),
        formats=ctx.formats,
    )
    panels, reference = {}, {}
    for i, (title, task) in enumerate(_tasks(config).items()):
        panels[title] = estimate_baseline_losses(task, jax.random.fold_in(key, 10 + i), config.samples,
                                                 progress=ctx.progress)
        reference[title] = task.oracle_closed_form()
    plot_baseline_losses(ctx.figure("baselines"), panels, reference,
                         title=ctx.title("Monte-Carlo loss of every reference predictor (± 2 s.e.)"), formats=ctx.formats)
    metrics["baselines"] = panels
    metrics["oracle_closed_form"] = reference
    return metrics


def summary(metrics: dict) -> list:
    rows = [
        ("max abs(marginal − μ_π) over positions and tokens", f"{metrics['marginal_max_abs_error']:.4f}"),
        ("χ² p-value of marginals vs μ_π (worst position, Bonferroni)", f"{metrics['marginal_chi2_pvalue_bonferroni']:.3g}"),
    ]
    for title, losses in metrics["baselines"].items():
        for name in ("bayes", "oracle"):
            rows.append((f"{title}: {name}", f"{losses[name]['loss']:.4f} ± {losses[name]['se']:.4f}"))
        ref = metrics["oracle_closed_form"][title]
        if ref is not None:
            rows.append((f"{title}: oracle closed form", f"{ref:.4f}"))
    return rows


register(
    Experiment(
        name="data-baselines",
        description="sampler marginals vs the stationary law; every baseline's loss on the three tasks",
        official=OFFICIAL,
        quick=QUICK,
        run=run,
        build=build,
        summary=summary,
    )
)
