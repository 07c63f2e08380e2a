"""Figures for the layer-1 gradient at initialisation (Nichani et al.; docs/nichani-theory.md)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_gradient_comparison"]


def _masked_neg(grad_TxT) -> np.ma.MaskedArray:
    """−∂L/∂A1 with the entries above the diagonal (and non-finite ones) masked."""
    g = -np.asarray(grad_TxT, np.float64)
    t = g.shape[0]
    upper = ~np.tril(np.ones((t, t), bool))
    return np.ma.masked_array(g, mask=upper | ~np.isfinite(g))


def plot_gradient_comparison(
    path: Path | str,
    autodiff_TxT,
    analytic_TxT,
    parents,
    title: str,
    population_TxT=None,
) -> None:
    """Heatmaps of −∂L/∂A1 (autodiff, analytic, optionally population) side by side, then
    a scatter of analytic (and population) entries against autodiff.

    Args:
      path: output image path (format from the suffix).
      autodiff_TxT, analytic_TxT, population_TxT: ``[T, T]`` gradients ∂L/∂A1 (the
        gradient itself; the figure shows its negative, the direction of the first GD step).
      parents: dag array over the T−1 context positions (−1 = root); parent cells are
        outlined in the heatmaps and drawn as red crosses in the scatter.
      title: figure title.
    """
    ad = np.asarray(autodiff_TxT, np.float64)
    t = ad.shape[0]
    parents = np.asarray(parents, int)
    panels = [("autodiff", ad), ("first order (analytic)", np.asarray(analytic_TxT, np.float64))]
    if population_TxT is not None:
        panels.append(("population (χ² form)", np.asarray(population_TxT, np.float64)))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 4.0))
    vmax = float(np.nanmax(np.abs(_masked_neg(ad)))) or 1.0
    rows = np.array([i for i, p in enumerate(parents) if p >= 0], int)
    for ax, (name, grad) in zip(axes, panels):
        im = ax.imshow(_masked_neg(grad), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        if rows.size:
            ax.scatter(parents[rows], rows, s=18, facecolors="none", edgecolors="k", linewidths=0.8, label="parent")
        ax.set_title(f"−∂L/∂A1: {name}", fontsize=9)
        ax.set_xlabel("key k")
        ax.set_ylabel("position i")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[0].legend(fontsize=7, loc="upper right")
    ax = axes[-1]
    tri = np.tril_indices(t)
    x = -ad[tri]
    lim = [float(np.nanmin(x)), float(np.nanmax(x))]
    for name, grad, colour in [(panels[1][0], panels[1][1], "tab:blue")] + (
        [(panels[2][0], panels[2][1], "tab:orange")] if population_TxT is not None else []
    ):
        y = -grad[tri]
        ok = np.isfinite(y)
        ax.scatter(x[ok], y[ok], s=8, alpha=0.6, color=colour, label=name)
        if rows.size:
            ax.scatter(-ad[rows, parents[rows]], -grad[rows, parents[rows]], s=30, marker="x", color="tab:red")
    ax.scatter([], [], s=30, marker="x", color="tab:red", label="parent entries")
    ax.plot(lim, lim, color="k", lw=0.8, ls="--")
    ax.set_xlabel("autodiff −∂L/∂A1_ik")
    ax.set_ylabel("prediction")
    ax.set_title("entries (lower triangle)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
