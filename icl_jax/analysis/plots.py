"""Matplotlib figures written to files (the backend is the caller's: the CLI selects the
non-interactive Agg backend, a notebook keeps its own)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_marginals", "plot_baseline_losses", "plot_heatmaps", "plot_runs", "plot_lines", "plot_bars"]


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


def _block_lines(ax, blocks, axis):
    for _, start, _ in blocks[1:]:
        (ax.axvline if axis == "x" else ax.axhline)(start - 0.5, color="k", lw=0.4, alpha=0.6)


def plot_heatmaps(path: Path, panels: list[dict], title: str = "", ncols: int | None = None) -> None:
    """A row (or grid) of heatmaps.

    Each panel is a dict with ``matrix`` and optional ``title``, ``cmap``, ``row_blocks`` /
    ``col_blocks`` (``[(name, start, stop), ...]``: lines at block boundaries, names as ticks),
    ``symmetric`` (colour scale centred at 0), ``xlabel``, ``ylabel``, ``vmax``.
    """
    n = len(panels)
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        m = np.asarray(panel["matrix"], np.float64)
        kw = {"cmap": panel.get("cmap", "viridis"), "aspect": "auto", "interpolation": "nearest"}
        if panel.get("symmetric"):
            vmax = panel.get("vmax") or float(np.nanmax(np.abs(m))) or 1.0
            kw.update(cmap=panel.get("cmap", "RdBu_r"), vmin=-vmax, vmax=vmax)
        elif panel.get("vmax") is not None:
            kw.update(vmin=panel.get("vmin", 0.0), vmax=panel["vmax"])
        im = ax.imshow(m, **kw)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        for blocks, axis, setter in ((panel.get("col_blocks"), "x", ax.set_xticks), (panel.get("row_blocks"), "y", ax.set_yticks)):
            if blocks:
                _block_lines(ax, blocks, axis)
                setter([(a + b - 1) / 2 for _, a, b in blocks], [name for name, _, _ in blocks], fontsize=5, rotation=90 if axis == "x" else 0)
        ax.set_title(panel.get("title", ""), fontsize=8)
        ax.set_xlabel(panel.get("xlabel", ""), fontsize=8)
        ax.set_ylabel(panel.get("ylabel", ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_runs(
    path: Path,
    x: np.ndarray,
    panels: list[dict],
    xlabel: str = "step",
    title: str = "",
) -> None:
    """Per-run curves with their mean ± one standard deviation band, side by side.

    Each panel: ``values`` [runs, len(x)], ``ylabel``, optional ``refs`` {label: y} drawn as
    dashed horizontal lines, ``logy``, ``ylim``, ``label`` (legend name of the runs).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), squeeze=False)
    colours = ["tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:gray"]
    for ax, panel in zip(axes[0], panels):
        v = np.atleast_2d(np.asarray(panel["values"], np.float64))
        for row in v:
            ax.plot(x, row, color="tab:blue", alpha=0.25, lw=0.7)
        mean, sd = v.mean(0), v.std(0)
        ax.plot(x, mean, color="tab:blue", lw=1.8, label=f"{panel.get('label', 'runs')}: mean of {v.shape[0]}")
        if v.shape[0] > 1:
            ax.fill_between(x, mean - sd, mean + sd, color="tab:blue", alpha=0.2, label="± 1 s.d.")
        for c, (name, y) in zip(colours, (panel.get("refs") or {}).items()):
            ax.axhline(y, color=c, ls="--", lw=1, label=f"{name} ({y:.3f})")
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lines(path: Path, panels: list[dict], title: str = "") -> None:
    """Panels of labelled curves, side by side.

    Each panel: ``lines`` {label: (x, y)} (solid), optional ``dashed`` {label: (x, y)}
    (e.g. a theory prediction drawn over the simulation, in the matching colour when the
    label is shared), ``refs`` {label: y} dashed horizontal lines, ``vlines`` (x positions,
    e.g. stage boundaries), ``xlabel``, ``ylabel``, ``logx``, ``logy``, ``ylim``,
    ``title``, ``markers`` (bool).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        colours = {}
        marker = "o" if panel.get("markers") else None
        for i, (label, (x, y)) in enumerate(panel.get("lines", {}).items()):
            (line,) = ax.plot(np.asarray(x), np.asarray(y), lw=1.6, marker=marker, ms=3, label=label)
            colours[label] = line.get_color()
        for label, (x, y) in panel.get("dashed", {}).items():
            tag = panel.get("dashed_tag", "theory")
            ax.plot(np.asarray(x), np.asarray(y), ls="--", lw=1.2, color=colours.get(label), label=f"{label} ({tag})" if label in colours else label)
        ref_colours = ["tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:gray", "k"]
        for c, (name, y) in zip(ref_colours, (panel.get("refs") or {}).items()):
            ax.axhline(y, color=c, ls=":", lw=1.1, label=f"{name} ({y:.3f})")
        for x in panel.get("vlines", ()):
            ax.axvline(x, color="k", lw=0.6, alpha=0.5)
        if panel.get("logx"):
            ax.set_xscale("log")
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        ax.set_xlabel(panel.get("xlabel", "step"))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""), fontsize=8)
        ax.legend(fontsize=6, ncol=2 if len(colours) > 6 else 1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(path: Path, panels: list[dict], title: str = "") -> None:
    """Panels of bars with ± 2 s.e. error bars; ``highlight`` labels drawn in red.

    Each panel: ``labels``, ``values``, optional ``errors`` (one s.e. each), ``ylabel``,
    ``title``, ``highlight`` (set of labels)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        labels = list(panel["labels"])
        vals = np.asarray(panel["values"], np.float64)
        errs = 2 * np.asarray(panel.get("errors", np.zeros_like(vals)), np.float64)
        hi = set(panel.get("highlight", ()))
        colours = ["tab:red" if lab in hi else "tab:gray" for lab in labels]
        x = np.arange(len(labels))
        ax.bar(x, vals, yerr=errs, color=colours, ecolor="k", capsize=2)
        ax.set_xticks(x, labels, fontsize=7, rotation=45)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
