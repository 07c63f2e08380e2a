"""``data-baselines``: the sampler against its stationary law, and every baseline's loss.

Two checks a reader can see: (1) for one fixed π the empirical token marginal of every
context position of a chain sequence matches μ_π from the GTH solve (docs/tasks.md#tree-task);
(2) the Monte-Carlo loss of every reference predictor on the tree, DAG and n-gram tasks,
with standard errors and the closed-form oracle ψ(Sα+1) − ψ(α+1)
(docs/nichani-theory.md#closed-forms-for-tests)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.analysis.plots import plot_baseline_losses, plot_marginals
from icl_jax.experiments.registry import Experiment, register
from icl_jax.tasks.baselines import estimate_baseline_losses
from icl_jax.tasks.priors import sample_dirichlet, stationary_distribution
from icl_jax.tasks.tasks import NGramTask, dag_task, tree_task

DEFAULTS = {
    "seed": 0,
    "samples": 65536,
    "vocab_size": 10,
    "seq_len": 20,
    "alpha": 0.1,
    "dag_vocab_size": 5,
    "dag_seq_len": 32,
    "ngram_vocab_size": 3,
    "ngram_seq_len": 100,
    "ngram_parents": [1, 2],
}


def _marginals(config, key):
    task = tree_task("chain", vocab_size=config["vocab_size"], seq_len=config["seq_len"], alpha=config["alpha"])
    s, n = task.vocab_size, config["samples"]
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


def run(config: dict, out: Path, progress: bool = True) -> dict:
    key = jax.random.key(config["seed"])
    tree, mu, freq, metrics = _marginals(config, jax.random.fold_in(key, 0))
    plot_marginals(
        out / "data_marginals.png",
        mu,
        freq,
        f"chain task, one fixed π (S={tree.vocab_size}, α={tree.alpha}): every position ~ μ_π "
        f"(max |error| {metrics['marginal_max_abs_error']:.4f}, n={config['samples']})",
    )
    tasks = {
        f"tree chain S={config['vocab_size']} T={config['seq_len']}": tree,
        f"dag fig5 S={config['dag_vocab_size']} T={config['dag_seq_len']}": dag_task(
            vocab_size=config["dag_vocab_size"], seq_len=config["dag_seq_len"], alpha=config["alpha"]
        ),
        f"n-gram d={config['ngram_vocab_size']} L={config['ngram_seq_len']} parents {tuple(config['ngram_parents'])}": NGramTask(
            config["ngram_vocab_size"], config["ngram_seq_len"], tuple(config["ngram_parents"]), alpha=config["alpha"]
        ),
    }
    panels, reference = {}, {}
    for i, (title, task) in enumerate(tasks.items()):
        panels[title] = estimate_baseline_losses(task, jax.random.fold_in(key, 10 + i), config["samples"], progress=progress)
        reference[title] = task.oracle_closed_form()
    plot_baseline_losses(out / "data_baselines.png", panels, reference)
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
        defaults=DEFAULTS,
        quick={"samples": 16384},
        run=run,
        summary=summary,
    )
)
