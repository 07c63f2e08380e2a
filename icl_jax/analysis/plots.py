"""Headless matplotlib figures (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_marginals", "plot_baseline_losses"]


def plot_marginals(path: Path, true_S: np.ndarray, empirical_PxS: np.ndarray, title: str) -> None:
    """μ_π next to the empirical token marginal of every context position."""
    s = true_S.shape[0]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(s)
    for row in empirical_PxS:
        ax.plot(x, row, color="tab:blue", alpha=0.25, marker=".", lw=0.8)
    ax.plot([], [], color="tab:blue", alpha=0.5, marker=".", label="empirical, one line per position")
    ax.bar(x, true_S, width=0.6, color="none", edgecolor="k", label="μ_π (GTH solve)")
    ax.set_xticks(x)
    ax.set_xlabel("token")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_baseline_losses(path: Path, panels: dict[str, dict[str, dict[str, float]]], reference: dict[str, float]) -> None:
    """One panel per task: loss ± 2 s.e. of every baseline; dashed closed-form oracle."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (title, losses) in zip(axes[0], panels.items()):
        names = [n for n in losses if "/" not in n and np.isfinite(losses[n]["loss"])]
        names.sort(key=lambda n: losses[n]["loss"])
        vals = np.array([losses[n]["loss"] for n in names])
        errs = np.array([2 * losses[n]["se"] for n in names])
        y = np.arange(len(names))
        ax.barh(y, vals, xerr=errs, color="tab:gray", ecolor="k", capsize=2)
        ax.set_yticks(y, names, fontsize=7)
        if reference.get(title) is not None:
            ax.axvline(reference[title], color="tab:red", ls="--", lw=1, label="closed-form oracle")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel("cross-entropy (nats)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
