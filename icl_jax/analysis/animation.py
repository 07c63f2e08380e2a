"""Attention (or any matrix) over training as a GIF (matplotlib + Pillow;
docs/experiments.md#animations).

:func:`animate_maps` draws one heatmap panel per map, one frame per recorded step;
:func:`matrix_metrics` picks the matrix-valued recorded metrics of a run (e.g. the selector
heads' attention on each offset, ``W``, of the Chen runs), which ``icl-jax animate DIR`` turns
into ``DIR/<experiment>_<metric>.gif``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["animate_maps", "frame_indices", "matrix_metrics"]


def frame_indices(num_records: int, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` record indices, log-spaced (the first and the last always kept):
    the early records, where training changes fastest, get most frames."""
    if not isinstance(max_frames, (int, np.integer)) or max_frames < 2:
        raise ValueError(f"max_frames must be an integer >= 2 (got {max_frames!r})")
    if num_records <= max_frames:
        return np.arange(num_records)
    idx = np.unique(np.round(np.geomspace(1, num_records, max_frames - 1)).astype(int) - 1)
    return np.unique(np.concatenate([[0], idx, [num_records - 1]]))


def matrix_metrics(trajectories: dict, seed_index: int = 0, grid_index: int = 0) -> dict:
    """``{name: [records, rows, cols]}``: every recorded metric whose value at one record is a
    matrix (``[G, N, records, rows, cols]`` in the run's trajectories), for one run; a metric
    with one more axis (per head: ``[..., heads, rows, cols]``) gives one entry per head."""
    out = {}
    for name, value in (trajectories.get("metrics") or {}).items():
        v = np.asarray(value)
        if v.ndim == 5:
            out[name] = v[grid_index, seed_index]
        elif v.ndim == 6:
            for h in range(v.shape[3]):
                out[f"{name}_head{h}"] = v[grid_index, seed_index, :, h]
    return out


def animate_maps(path: str | Path, steps: Sequence[int], panels: list[dict], title: str = "", *, fps: int = 6) -> Path:
    """Write a GIF with one frame per recorded step.

    Args:
      path: the ``.gif`` to write (never overwritten silently: an existing file raises).
      steps: the recorded steps, one per frame (shown in each frame's title).
      panels: one dict per heatmap: ``frames`` ``[F, rows, cols]``, optional ``title``,
        ``xlabel``, ``ylabel``, ``vmin`` / ``vmax`` (default: the range over all frames, so the
        colour scale is fixed through the animation), ``integer_ticks`` (default True).
      fps: frames per second (>= 1).
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    path = Path(path)
    if path.suffix != ".gif":
        raise ValueError(f"path must end in .gif (got {path})")
    if path.exists():
        raise ValueError(f"{path} exists; remove it first (results are never overwritten silently)")
    if not isinstance(fps, (int, np.integer)) or fps < 1:
        raise ValueError(f"fps must be an integer >= 1 (got {fps!r})")
    steps = list(steps)
    frames = [np.asarray(p["frames"], np.float64) for p in panels]
    if not panels or any(f.ndim != 3 or f.shape[0] != len(steps) for f in frames):
        raise ValueError(f"panels: each needs frames [F, rows, cols] with F = len(steps) = {len(steps)} "
                         f"(got {[f.shape for f in frames]})")
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 4.2 * len(panels)), 4.6), squeeze=False)
    images = []
    for ax, panel, f in zip(axes[0], panels, frames):
        vmin = panel.get("vmin", float(np.nanmin(f)))
        vmax = panel.get("vmax", float(np.nanmax(f)))
        im = ax.imshow(f[0], vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0, cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(panel.get("title", ""), fontsize=10)
        ax.set_xlabel(panel.get("xlabel", "column"))
        ax.set_ylabel(panel.get("ylabel", "row"))
        if panel.get("integer_ticks", True):
            ax.set_xticks(range(f.shape[2]))
            ax.set_yticks(range(f.shape[1]))
            if f.shape[2] > 12:
                ax.set_xticks(range(0, f.shape[2], max(1, f.shape[2] // 8)))
            if f.shape[1] > 12:
                ax.set_yticks(range(0, f.shape[1], max(1, f.shape[1] // 8)))
        images.append(im)
    heading = fig.suptitle("")

    def draw(k):
        for im, f in zip(images, frames):
            im.set_data(f[k])
        heading.set_text(f"{title}\nstep {steps[k]:,}" if title else f"step {steps[k]:,}")
        return images

    fig.tight_layout(rect=(0, 0, 1, 0.86))  # room for the two-line heading
    anim = FuncAnimation(fig, draw, frames=len(steps), blit=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=int(fps)))
    plt.close(fig)
    return path
