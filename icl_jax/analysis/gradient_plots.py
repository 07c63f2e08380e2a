"""Figures for the layer-1 gradient at initialisation (Nichani et al.; docs/nichani-theory.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from icl_jax.analysis.plots import _check_formats, _finish, _grid, _integer_axis, _legend, _style, save_figure

__all__ = ["plot_gradient_comparison", "gradient_comparison_figure"]


def _masked_neg(grad_TxT) -> np.ma.MaskedArray:
    """−∂L/∂A1 with the entries above the diagonal (and non-finite ones) masked."""
    g = -np.asarray(grad_TxT, np.float64)
    t = g.shape[0]
    upper = ~np.tril(np.ones((t, t), bool))
    return np.ma.masked_array(g, mask=upper | ~np.isfinite(g))


def gradient_comparison_figure(
    autodiff_TxT, analytic_TxT, parents, title: str, population_TxT=None, *, ncols: int | None = None
) -> Figure:
    """The figure of :func:`plot_gradient_comparison` (returned, not saved)."""
    ad = np.asarray(autodiff_TxT, np.float64)
    t = ad.shape[0]
    parents = np.asarray(parents, int)
    panels = [("autodiff", ad), ("first order (analytic)", np.asarray(analytic_TxT, np.float64))]
    if population_TxT is not None:
        panels.append(("population (χ² form)", np.asarray(population_TxT, np.float64)))
    fig, axes = _grid(len(panels) + 1, ncols)
    flat = list(axes.flat)
    vmax = float(np.nanmax(np.abs(_masked_neg(ad)))) or 1.0
    rows = np.array([i for i, p in enumerate(parents) if p >= 0], int)
    for ax, (name, grad) in zip(flat, panels):
        im = ax.imshow(_masked_neg(grad), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        if rows.size:
            ax.scatter(parents[rows], rows, s=18, facecolors="none", edgecolors="k", linewidths=0.8, label="parent")
        _integer_axis(ax, "x")
        _integer_axis(ax, "y")
        _style(ax, f"−∂L/∂A1: {name}", "key position k", "query position i")
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cbar.ax.tick_params(labelsize=8)
    _legend(flat[0])
    ax = flat[len(panels)]
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
    if rows.size:
        ax.scatter([], [], s=30, marker="x", color="tab:red", label="parent entries")
    ax.plot(lim, lim, color="k", lw=0.8, ls="--")
    _style(ax, "entries (lower triangle)", "autodiff −∂L/∂A1_ik", "prediction −∂L/∂A1_ik")
    _legend(ax)
    return _finish(fig, axes, title)


def plot_gradient_comparison(
    path: Path | str,
    autodiff_TxT,
    analytic_TxT,
    parents,
    title: str,
    population_TxT=None,
    *,
    ncols: int | None = None,
    formats: Sequence[str] = (),
) -> None:
    """Heatmaps of −∂L/∂A1 (autodiff, analytic, optionally population), then a scatter of
    analytic (and population) entries against autodiff, in a grid (2 × 2 with the population).

    Args:
      path: output image path (PNG at 150 dpi; the format follows the suffix).
      autodiff_TxT, analytic_TxT, population_TxT: ``[T, T]`` gradients ∂L/∂A1 (the
        gradient itself; the figure shows its negative, the direction of the first GD step).
      parents: dag array over the T−1 context positions (−1 = root); parent cells are
        outlined in the heatmaps and drawn as red crosses in the scatter.
      title: figure title (may have several lines).
      ncols: grid columns (default: see :func:`icl_jax.analysis.plots.grid_shape`).
      formats: extra vector copies next to ``path`` (any of "pdf", "svg", "eps").
    """
    _check_formats(formats)
    fig = gradient_comparison_figure(autodiff_TxT, analytic_TxT, parents, title, population_TxT, ncols=ncols)
    save_figure(fig, path, formats)
