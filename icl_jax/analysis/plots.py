"""Matplotlib figures written to files (the backend is the caller's: the CLI selects the
non-interactive Agg backend, a notebook keeps its own).

Every ``plot_*`` function builds its figure with a matching ``*_figure`` function (which
returns the :class:`~matplotlib.figure.Figure`, for notebooks and tests) and writes it with
:func:`save_figure`: a PNG at 150 dpi, plus vector copies (``formats=("pdf",)``, ...).

Layout rules, shared by all figures (sized for a paper column or a slide):

- panels of about 5.0 × 3.8 inches, wrapped into a grid: ``ncols`` columns (default at most
  2 for four panels, so they form a 2 × 2 grid, and at most 3 otherwise);
- ``layout="constrained"``, so a multi-line figure title (e.g. a second settings line such as
  "quick preset · 1000 steps · lr 10 · batch 256 · 4 seeds"), colour bars and legends placed
  outside the axes never overlap the panels;
- figure title 11 pt, panel titles 10 pt, axis labels 9 pt, tick and legend labels 8 pt; long
  titles and axis labels are wrapped;
- a legend with at most 4 entries sits inside its panel; a longer one is placed outside, to
  the right of the panel, and the figure is widened to make room for it;
- every panel has axis labels; heatmap and integer axes get integer ticks
  (:class:`~matplotlib.ticker.MaxNLocator` ``(integer=True)``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "VECTOR_FORMATS",
    "stage_log_axis",
    "save_figure",
    "plot_marginals",
    "plot_baseline_losses",
    "plot_heatmaps",
    "plot_runs",
    "plot_lines",
    "plot_bars",
    "plot_errorbars",
    "marginals_figure",
    "baseline_losses_figure",
    "heatmaps_figure",
    "runs_figure",
    "lines_figure",
    "bars_figure",
    "errorbars_figure",
    "grid_shape",
]

#: extra file formats :func:`save_figure` writes next to the PNG
VECTOR_FORMATS = ("pdf", "svg", "eps")

DPI = 150
PANEL_W, PANEL_H = 5.0, 3.8  # inches
SUPTITLE_PT, TITLE_PT, LABEL_PT, TICK_PT, LEGEND_PT = 11, 10, 9, 8, 8
MAX_LEGEND_INSIDE = 4  # more entries than this: the legend goes outside the axes
_REF_COLOURS = ["tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:gray", "k"]


# ---------------------------------------------------------------------------- saving


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Normalised extra formats (lower case, no dot); ValueError for an unknown one."""
    if isinstance(formats, str):
        formats = (formats,)
    out = []
    for fmt in formats:
        f = str(fmt).lower().lstrip(".")
        if f not in VECTOR_FORMATS:
            raise ValueError(f"formats: {fmt!r} is not a supported extra format; valid formats are {set(VECTOR_FORMATS)}")
        if f not in out:
            out.append(f)
    return tuple(out)


def save_figure(fig: Figure, path: Path | str, formats: Sequence[str] = ()) -> list[Path]:
    """Write ``fig`` to ``path`` (PNG at 150 dpi; the format follows the suffix), plus
    ``path.with_suffix("." + fmt)`` for each ``fmt`` in ``formats`` (any of ``"pdf"``,
    ``"svg"``, ``"eps"``), then close the figure.

    Returns the paths written. Raises ValueError (naming ``formats``) for an unknown format,
    before anything is written; the figure is closed either way.
    """
    try:
        extra = _check_formats(formats)
        path = Path(path)
        fig.savefig(path, dpi=DPI)
        written = [path]
        for fmt in extra:
            other = path.with_suffix("." + fmt)
            if other != path:
                fig.savefig(other, dpi=DPI)
                written.append(other)
        return written
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------- layout helpers


def grid_shape(n: int, ncols: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of a grid of ``n`` panels: ``ncols`` columns when given, else at most
    2 columns for 4 panels (a 2 × 2 grid) and at most 3 otherwise."""
    n = max(int(n), 1)
    if ncols is None:
        ncols = 2 if n == 4 else min(n, 3)
    ncols = max(1, min(int(ncols), n))
    return -(-n // ncols), ncols


def _grid(n: int, ncols: int | None, panel_w: float = PANEL_W, panel_h: float = PANEL_H):
    nrows, ncols = grid_shape(n, ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _wrap(text: str | None, width: int) -> str:
    """``text`` with each of its lines wrapped at ``width`` characters (words are kept whole)."""
    if not text:
        return ""
    return "\n".join(textwrap.fill(line, width, break_long_words=False) if line.strip() else line for line in str(text).split("\n"))


def _style(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None, title_width: int = 60) -> None:
    """Panel title, axis labels (wrapped to the panel) and tick label sizes."""
    if title is not None:
        ax.set_title(_wrap(title, title_width), fontsize=TITLE_PT)
    if xlabel is not None:
        ax.set_xlabel(_wrap(xlabel, 70), fontsize=LABEL_PT)
    if ylabel is not None:
        ax.set_ylabel(_wrap(ylabel, 48), fontsize=LABEL_PT)
    ax.tick_params(labelsize=TICK_PT)


def _legend(ax) -> float:
    """Legend at a readable size: inside the axes for ≤ 4 entries, else outside on the right.

    Returns the width (inches) the outside legend needs beside the panel (0 when inside)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return 0.0
    if len(handles) <= MAX_LEGEND_INSIDE:
        ax.legend(fontsize=LEGEND_PT, framealpha=0.85)
        return 0.0
    ncol = 1 if len(handles) <= 14 else 2
    ax.legend(fontsize=LEGEND_PT, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, ncol=ncol, frameon=False)
    chars = max(len(lab) for lab in labels)
    return ncol * (0.75 + chars * LEGEND_PT * 0.55 / 72)  # handle + padding + text


def _finish(fig: Figure, axes, title: str, legend_w: dict[int, float] | None = None) -> Figure:
    """Widen the figure for outside legends (per grid column) and set the wrapped suptitle."""
    if legend_w:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + sum(legend_w.values()), h)
    if title:
        width_in = fig.get_size_inches()[0]
        fig.suptitle(_wrap(title, max(40, int(width_in * 72 / (SUPTITLE_PT * 0.55)) - 4)), fontsize=SUPTITLE_PT)
    return fig


def _note_legend(legend_w: dict[int, float], col: int, width: float) -> None:
    if width > 0:
        legend_w[col] = max(legend_w.get(col, 0.0), width)


def _integer_axis(ax, axis: str = "x") -> None:
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------------------- data figures


def marginals_figure(true_S: np.ndarray, empirical_PxS: np.ndarray, title: str) -> Figure:
    """μ_π next to the empirical token marginal of every context position."""
    true_S = np.asarray(true_S, np.float64)
    s = true_S.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, PANEL_H), layout="constrained")
    x = np.arange(s)
    for row in np.asarray(empirical_PxS, np.float64):
        ax.plot(x, row, color="tab:blue", alpha=0.25, marker=".", lw=0.8)
    ax.plot([], [], color="tab:blue", alpha=0.5, marker=".", label="empirical, one line per position")
    ax.bar(x, true_S, width=0.6, color="none", edgecolor="k", label="μ_π (GTH solve)")
    _integer_axis(ax, "x")
    _style(ax, title, "token", "probability", title_width=80)
    _legend(ax)
    return fig


def plot_marginals(
    path: Path, true_S: np.ndarray, empirical_PxS: np.ndarray, title: str, *, formats: Sequence[str] = ()
) -> None:
    """μ_π next to the empirical token marginal of every context position."""
    _check_formats(formats)
    save_figure(marginals_figure(true_S, empirical_PxS, title), path, formats)


def baseline_losses_figure(
    panels: dict[str, dict[str, dict[str, float]]], reference: dict[str, float], title: str = "", *, ncols: int | None = None
) -> Figure:
    """One panel per task: loss ± 2 s.e. of every baseline; dashed closed-form oracle."""
    most = max([len(losses) for losses in panels.values()] or [1])
    fig, axes = _grid(len(panels), ncols, panel_h=max(PANEL_H, 1.2 + 0.22 * most))
    for ax, (name, losses) in zip(axes.flat, panels.items()):
        names = [n for n in losses if "/" not in n and np.isfinite(losses[n]["loss"])]
        names.sort(key=lambda n: losses[n]["loss"])
        vals = np.array([losses[n]["loss"] for n in names])
        errs = np.array([2 * losses[n]["se"] for n in names])
        y = np.arange(len(names))
        ax.barh(y, vals, xerr=errs, color="tab:gray", ecolor="k", capsize=2)
        ax.set_yticks(y, names)
        if reference.get(name) is not None:
            ax.axvline(reference[name], color="tab:red", ls="--", lw=1, label="closed-form oracle")
            ax.legend(fontsize=LEGEND_PT, loc="lower right", framealpha=0.85)
        _style(ax, name, "cross-entropy (nats), ± 2 s.e.", "baseline")
    return _finish(fig, axes, title)


def plot_baseline_losses(
    path: Path,
    panels: dict[str, dict[str, dict[str, float]]],
    reference: dict[str, float],
    title: str = "",
    *,
    ncols: int | None = None,
    formats: Sequence[str] = (),
) -> None:
    """One panel per task: loss ± 2 s.e. of every baseline; dashed closed-form oracle."""
    _check_formats(formats)
    save_figure(baseline_losses_figure(panels, reference, title, ncols=ncols), path, formats)


# ---------------------------------------------------------------------------- heatmaps


def _block_lines(ax, blocks, axis):
    for _, start, _ in blocks[1:]:
        (ax.axvline if axis == "x" else ax.axhline)(start - 0.5, color="k", lw=0.4, alpha=0.6)


def _heatmap_labels(panel: dict) -> tuple[str, str]:
    """(xlabel, ylabel): the panel's own; with neither given and no blocks, an attention
    matrix's "key position j" / "query position i"; else "column/row block" or "… index"."""
    rb, cb = panel.get("row_blocks"), panel.get("col_blocks")
    xl, yl = panel.get("xlabel"), panel.get("ylabel")
    if xl is None and yl is None and not rb and not cb:
        return "key position j", "query position i"
    if xl is None:
        xl = "column block" if cb else "column index"
    if yl is None:
        yl = "row block" if rb else "row index"
    return xl, yl


def heatmaps_figure(panels: list[dict], title: str = "", ncols: int | None = None) -> Figure:
    """A grid of heatmaps (see :func:`plot_heatmaps`)."""
    fig, axes = _grid(len(panels), ncols)
    for ax, panel in zip(axes.flat, panels):
        m = np.asarray(panel["matrix"], np.float64)
        if m.ndim == 1:
            m = m[None, :]
        kw = {"cmap": panel.get("cmap", "viridis"), "aspect": "auto", "interpolation": "nearest"}
        if panel.get("symmetric"):
            vmax = panel.get("vmax") or float(np.nanmax(np.abs(m))) or 1.0
            kw.update(cmap=panel.get("cmap", "RdBu_r"), vmin=-vmax, vmax=vmax)
        elif panel.get("vmax") is not None:
            kw.update(vmin=panel.get("vmin", 0.0), vmax=panel["vmax"])
        im = ax.imshow(m, **kw)
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cbar.ax.tick_params(labelsize=TICK_PT)
        for blocks, axis in ((panel.get("col_blocks"), "x"), (panel.get("row_blocks"), "y")):
            if blocks:
                _block_lines(ax, blocks, axis)
                ticks = [(a + b - 1) / 2 for _, a, b in blocks]
                names = [name for name, _, _ in blocks]
                if axis == "x":
                    ax.set_xticks(ticks, names, rotation=90)
                else:
                    ax.set_yticks(ticks, names)
            else:
                _integer_axis(ax, axis)
        xl, yl = _heatmap_labels(panel)
        _style(ax, panel.get("title", ""), xl, yl, title_width=52)
    return _finish(fig, axes, title)


def plot_heatmaps(
    path: Path, panels: list[dict], title: str = "", ncols: int | None = None, *, formats: Sequence[str] = ()
) -> None:
    """A grid of heatmaps (``ncols`` columns; default: 2 × 2 for four panels, else ≤ 3 columns).

    Each panel is a dict with ``matrix`` and optional ``title``, ``cmap``, ``row_blocks`` /
    ``col_blocks`` (``[(name, start, stop), ...]``: lines at block boundaries, names as ticks),
    ``symmetric`` (colour scale centred at 0), ``xlabel``, ``ylabel``, ``vmin``, ``vmax``.
    Without labels or blocks a panel is labelled as an attention matrix ("key position j",
    "query position i"); ``xlabel=""`` suppresses a label. Axes without blocks get integer ticks.
    """
    _check_formats(formats)
    save_figure(heatmaps_figure(panels, title, ncols), path, formats)


# ---------------------------------------------------------------------------- curves


def runs_figure(
    x: np.ndarray, panels: list[dict], xlabel: str = "step", title: str = "", *, ncols: int | None = None
) -> Figure:
    """Per-run curves with their mean ± one s.d. band (see :func:`plot_runs`)."""
    fig, axes = _grid(len(panels), ncols)
    x = np.asarray(x)
    legend_w: dict[int, float] = {}
    for k, (ax, panel) in enumerate(zip(axes.flat, panels)):
        v = np.atleast_2d(np.asarray(panel["values"], np.float64))
        for row in v:
            ax.plot(x, row, color="tab:blue", alpha=0.25, lw=0.7)
        mean, sd = v.mean(0), v.std(0)
        ax.plot(x, mean, color="tab:blue", lw=1.8, label=f"{panel.get('label', 'runs')}: mean of {v.shape[0]}")
        if v.shape[0] > 1:
            ax.fill_between(x, mean - sd, mean + sd, color="tab:blue", alpha=0.2, label="± 1 s.d.")
        for c, (name, y) in zip(_REF_COLOURS, (panel.get("refs") or {}).items()):
            ax.axhline(y, color=c, ls="--", lw=1, label=f"{name} ({y:.3f})")
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        if panel.get("integer_x"):
            _integer_axis(ax, "x")
        _style(ax, panel.get("title"), panel.get("xlabel", xlabel) or "step", panel.get("ylabel") or "value")
        _note_legend(legend_w, k % axes.shape[1], _legend(ax))
    return _finish(fig, axes, title, legend_w)


def plot_runs(
    path: Path,
    x: np.ndarray,
    panels: list[dict],
    xlabel: str = "step",
    title: str = "",
    *,
    ncols: int | None = None,
    formats: Sequence[str] = (),
) -> None:
    """Per-run curves with their mean ± one standard deviation band, in a grid of panels.

    Each panel: ``values`` [runs, len(x)], ``ylabel``, optional ``refs`` {label: y} drawn as
    dashed horizontal lines, ``logy``, ``ylim``, ``label`` (legend name of the runs),
    ``title``, ``xlabel`` (overrides the shared one), ``integer_x`` (integer x ticks).
    """
    _check_formats(formats)
    save_figure(runs_figure(x, panels, xlabel, title, ncols=ncols), path, formats)


_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _short_step(step: int) -> str:
    """A step count for a tick label: 500000 → '500k', 12,500 → '12.5k', 2000000 → '2M'."""
    for unit, div in (("M", 10**6), ("k", 10**3)):
        if step >= div:
            return f"{step / div:g}{unit}"
    return str(step)


def stage_log_axis(steps, stage_starts, total_steps: int):
    """An x axis for a staged run whose stages differ in length by orders of magnitude (Chen's
    CW → a: 500,000 then 5,000 steps): every stage gets unit width and, inside it, a log scale
    of the steps since the stage started, so both what happens in a stage's first ten steps and
    a logarithmic growth over its last 10^5 are visible.

    Step ``s`` steps into stage k (of n steps) is at ``k + log(1 + s) / log(1 + n)``.

    Returns ``(x, (tick positions, tick labels), boundaries)``: stage starts are labelled with
    their absolute step ('500k'), the powers of ten inside a stage as '+10²'; ``boundaries``
    are the x of the stage starts after the first (for vertical lines).
    """
    steps = np.asarray(steps, np.float64)
    starts = np.asarray(stage_starts, np.float64)
    ends = np.append(starts[1:], float(total_steps))
    if starts.size == 0 or np.any(ends <= starts) or starts[0] != 0:
        raise ValueError(f"stage_starts must start at 0 and increase below total_steps (got {list(stage_starts)}, "
                         f"total_steps={total_steps})")
    k = np.clip(np.searchsorted(starts, steps, side="right") - 1, 0, starts.size - 1)
    x = k + np.log1p(np.maximum(steps - starts[k], 0.0)) / np.log1p(ends[k] - starts[k])
    positions, labels = [], []
    for j, (a, b) in enumerate(zip(starts, ends)):
        positions.append(float(j))
        labels.append(_short_step(int(a)))
        power = 10
        # the powers of ten inside the stage, leaving room before the next stage's label
        while np.log1p(power) / np.log1p(b - a) < 0.85:
            positions.append(j + np.log1p(power) / np.log1p(b - a))
            labels.append("+10" + str(int(np.log10(power))).translate(_SUPERSCRIPTS) if power > 10 else "+10")
            power *= 10
    positions.append(float(starts.size))
    labels.append(_short_step(int(total_steps)))
    return x, (positions, labels), [float(j) for j in range(1, starts.size)]


def lines_figure(panels: list[dict], title: str = "", *, ncols: int | None = None) -> Figure:
    """Panels of labelled curves (see :func:`plot_lines`)."""
    fig, axes = _grid(len(panels), ncols)
    legend_w: dict[int, float] = {}
    for k, (ax, panel) in enumerate(zip(axes.flat, panels)):
        colours = {}
        marker = "o" if panel.get("markers") else None
        for label, (x, y) in panel.get("lines", {}).items():
            (line,) = ax.plot(np.asarray(x), np.asarray(y), lw=1.6, marker=marker, ms=3, label=label)
            colours[label] = line.get_color()
        for label, (x, y) in panel.get("dashed", {}).items():
            tag = panel.get("dashed_tag", "theory")
            ax.plot(np.asarray(x), np.asarray(y), ls="--", lw=1.2, color=colours.get(label), label=f"{label} ({tag})" if label in colours else label)
        for c, (name, y) in zip(_REF_COLOURS, (panel.get("refs") or {}).items()):
            ax.axhline(y, color=c, ls=":", lw=1.1, label=f"{name} ({y:.3f})")
        for x in panel.get("vlines", ()):
            ax.axvline(x, color="k", lw=0.6, alpha=0.5)
        if panel.get("logx"):
            ax.set_xscale("log")
        if panel.get("symlogx"):  # log scale that keeps x = 0: linear below the given threshold
            ax.set_xscale("symlog", linthresh=float(panel["symlogx"]))
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        if panel.get("integer_x"):
            _integer_axis(ax, "x")
        if panel.get("xticks") is not None:
            positions, labels = panel["xticks"]
            ax.set_xticks(positions, labels)
        _style(ax, panel.get("title", ""), panel.get("xlabel", "step"), panel.get("ylabel") or "value")
        _note_legend(legend_w, k % axes.shape[1], _legend(ax))
    return _finish(fig, axes, title, legend_w)


def plot_lines(path: Path, panels: list[dict], title: str = "", *, ncols: int | None = None, formats: Sequence[str] = ()) -> None:
    """Panels of labelled curves, in a grid (default: 2 × 2 for four panels, else ≤ 3 columns).

    Each panel: ``lines`` {label: (x, y)} (solid), optional ``dashed`` {label: (x, y)}
    (e.g. a theory prediction drawn over the simulation, in the matching colour when the
    label is shared), ``refs`` {label: y} dashed horizontal lines, ``vlines`` (x positions,
    e.g. stage boundaries), ``xlabel``, ``ylabel``, ``logx``, ``logy``, ``symlogx``
    (a linear threshold: log x that keeps x = 0), ``ylim``, ``title``, ``markers`` (bool), ``integer_x`` (integer x ticks), ``xticks`` (positions,
    labels), e.g. from :func:`stage_log_axis`.
    """
    _check_formats(formats)
    save_figure(lines_figure(panels, title, ncols=ncols), path, formats)


def bars_figure(panels: list[dict], title: str = "", *, ncols: int | None = None) -> Figure:
    """Panels of bars with ± 2 s.e. error bars (see :func:`plot_bars`)."""
    fig, axes = _grid(len(panels), ncols)
    for ax, panel in zip(axes.flat, panels):
        labels = [str(lab) for lab in panel["labels"]]
        vals = np.asarray(panel["values"], np.float64)
        errs = 2 * np.asarray(panel.get("errors", np.zeros_like(vals)), np.float64)
        hi = {str(lab) for lab in panel.get("highlight", ())}
        colours = ["tab:red" if lab in hi else "tab:gray" for lab in labels]
        x = np.arange(len(labels))
        ax.bar(x, vals, yerr=errs, color=colours, ecolor="k", capsize=2)
        ax.set_xticks(x, labels, rotation=45, ha="right", rotation_mode="anchor")
        _style(ax, panel.get("title", ""), panel.get("xlabel", "category"), panel.get("ylabel") or "value")
    return _finish(fig, axes, title)


def plot_bars(path: Path, panels: list[dict], title: str = "", *, ncols: int | None = None, formats: Sequence[str] = ()) -> None:
    """Panels of bars with ± 2 s.e. error bars; ``highlight`` labels drawn in red.

    Each panel: ``labels``, ``values``, optional ``errors`` (one s.e. each), ``ylabel``,
    ``xlabel`` (default "category"), ``title``, ``highlight`` (set of labels)."""
    _check_formats(formats)
    save_figure(bars_figure(panels, title, ncols=ncols), path, formats)


def errorbars_figure(
    x,
    mean,
    sd,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    label: str,
    ylim: tuple[float, float] | None = None,
    ref: float | None = None,
    ref_label: str | None = None,
) -> Figure:
    """One panel: ``mean`` ± ``sd`` against integer ``x`` (see :func:`plot_errorbars`)."""
    fig, ax = plt.subplots(figsize=(6.4, PANEL_H), layout="constrained")
    ax.errorbar(np.asarray(x), np.asarray(mean, np.float64), yerr=np.asarray(sd, np.float64), fmt="o-", capsize=3, label=label)
    if ref is not None:
        ax.axhline(ref, color="k", ls="--", lw=1, label=ref_label)
    if ylim is not None:
        ax.set_ylim(*ylim)
    _integer_axis(ax, "x")
    _style(ax, title, xlabel, ylabel, title_width=80)
    _legend(ax)
    return fig


def plot_errorbars(
    path: Path,
    x,
    mean,
    sd,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    label: str,
    ylim: tuple[float, float] | None = None,
    ref: float | None = None,
    ref_label: str | None = None,
    formats: Sequence[str] = (),
) -> None:
    """One panel of ``mean`` ± ``sd`` (error bars, markers joined) against integer ``x``
    (e.g. a per-position statistic), with an optional dashed horizontal reference line at
    ``ref`` (e.g. ``ref=1.0``; in the legend when ``ref_label`` is given)."""
    _check_formats(formats)
    fig = errorbars_figure(x, mean, sd, xlabel=xlabel, ylabel=ylabel, title=title, label=label, ylim=ylim, ref=ref, ref_label=ref_label)
    save_figure(fig, path, formats)
