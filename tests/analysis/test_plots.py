"""Readable figures (issue 12): files written, formats validated, integer heatmap ticks, grid
layouts, labels on every panel, legends and titles inside the figure."""

import matplotlib

matplotlib.use("Agg")  # the tests pick the backend; the library never does

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from icl_jax.analysis import plots  # noqa: E402
from icl_jax.analysis.gradient_plots import gradient_comparison_figure, plot_gradient_comparison  # noqa: E402

RNG = np.random.default_rng(0)


def _panels_axes(fig):
    """The data axes of a figure: visible, not colour bars."""
    return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]


def _lines_panels(n, entries=2):
    x = np.arange(10)
    return [
        {"lines": {f"curve {k}": (x, x * (k + 1.0)) for k in range(entries)}, "xlabel": "step", "ylabel": f"y{i}", "title": f"panel {i}"}
        for i in range(n)
    ]


def _heat_panels():
    att = np.tril(RNG.random((7, 7)))
    blocks = [("token", 0, 3), ("position", 3, 10)]
    return [
        {"matrix": att, "title": "attention", "vmax": 1.0},
        {"matrix": RNG.normal(size=(10, 10)), "title": "A1", "row_blocks": blocks, "col_blocks": blocks, "symmetric": True},
        {"matrix": RNG.random((4, 3)), "title": "W", "xlabel": "head", "ylabel": "offset - 1"},
    ]


def _all_plots(tmp_path, formats=()):
    """Every plot_* function once; returns the PNG paths."""
    x = np.arange(0, 100, 10)
    out = {}
    out["heat"] = tmp_path / "heat.png"
    plots.plot_heatmaps(out["heat"], _heat_panels(), "heatmaps", formats=formats)
    out["runs"] = tmp_path / "runs.png"
    plots.plot_runs(out["runs"], x, [{"values": RNG.random((3, 10)), "ylabel": "loss", "refs": {"bayes": 0.5}}], title="runs", formats=formats)
    out["lines"] = tmp_path / "lines.png"
    plots.plot_lines(out["lines"], _lines_panels(2), title="lines", formats=formats)
    out["bars"] = tmp_path / "bars.png"
    plots.plot_bars(out["bars"], [{"labels": ["100", "010", "110"], "values": [1.0, 2.0, 3.0], "errors": [0.1, 0.1, 0.2], "highlight": {"110"}, "ylabel": "I"}], title="bars", formats=formats)
    out["marg"] = tmp_path / "marg.png"
    plots.plot_marginals(out["marg"], np.full(5, 0.2), RNG.dirichlet(np.ones(5), size=4), "marginals", formats=formats)
    out["base"] = tmp_path / "base.png"
    losses = {"bayes": {"loss": 1.0, "se": 0.01}, "unigram": {"loss": 1.5, "se": 0.02}, "bayes/official": {"loss": 1.1, "se": 0.01}}
    plots.plot_baseline_losses(out["base"], {"task a": losses, "task b": losses}, {"task a": 0.9, "task b": None}, formats=formats)
    out["err"] = tmp_path / "err.png"
    plots.plot_errorbars(out["err"], np.arange(1, 8), RNG.random(7), 0.1 * RNG.random(7), xlabel="position i", ylabel="attention",
                         title="by position", label="mean ± s.d.", ylim=(0, 1.05), ref=1.0, formats=formats)
    out["grad"] = tmp_path / "grad.png"
    g = RNG.normal(size=(6, 6))
    plot_gradient_comparison(out["grad"], g, g + 0.01, [-1, 0, 1, 2, 3], "gradient", population_TxT=g * 0.9, formats=formats)
    return out


def test_every_plot_writes_png_and_pdf(tmp_path):
    out = _all_plots(tmp_path, formats=("pdf",))
    for name, path in out.items():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pdf = path.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-", name
    assert plt.get_fignums() == [], "plot functions must close their figures"


def test_png_only_by_default_at_150_dpi(tmp_path):
    path = tmp_path / "lines.png"
    plots.plot_lines(path, _lines_panels(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.png"]
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        dpi = im.info.get("dpi")
    assert (w, h) == (int(5.0 * 150), int(3.8 * 150))
    assert dpi is None or round(dpi[0]) == 150


@pytest.mark.parametrize("formats", [("png",), ("pdf", "jpeg"), ("svgz",)])
def test_bad_format_raises_and_writes_nothing(tmp_path, formats):
    with pytest.raises(ValueError, match="formats"):
        plots.plot_lines(tmp_path / "x.png", _lines_panels(1), formats=formats)
    with pytest.raises(ValueError, match="formats"):
        plot_gradient_comparison(tmp_path / "g.png", np.eye(3), np.eye(3), [-1, 0], "t", formats=formats)
    assert list(tmp_path.iterdir()) == []
    fig = plots.lines_figure(_lines_panels(1))
    with pytest.raises(ValueError, match="formats"):
        plots.save_figure(fig, tmp_path / "y.png", formats)
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == []


def test_save_figure_writes_svg_and_eps(tmp_path):
    written = plots.save_figure(plots.lines_figure(_lines_panels(1)), tmp_path / "f.png", ("svg", "eps"))
    assert [p.name for p in written] == ["f.png", "f.svg", "f.eps"]
    assert all(p.stat().st_size > 0 for p in written)
    assert plt.get_fignums() == []


def test_heatmap_ticks_are_integers_and_defaults_label_attention():
    fig = plots.heatmaps_figure([{"matrix": np.tril(RNG.random((6, 6)))}, {"matrix": RNG.random((3, 5))}, {"matrix": RNG.random((4, 3))}], "t")
    fig.canvas.draw()
    axes = _panels_axes(fig)
    assert len(axes) == 3
    for ax in axes:
        assert ax.get_xlabel() == "key position j" and ax.get_ylabel() == "query position i"
        for ticks, (lo, hi) in ((ax.get_xticks(), ax.get_xlim()), (ax.get_yticks(), sorted(ax.get_ylim()))):
            shown = [t for t in ticks if lo <= t <= hi]
            assert len(shown) >= 2
            assert all(float(t).is_integer() for t in shown), ticks
        for lab in ax.get_xticklabels() + ax.get_yticklabels():
            text = lab.get_text().replace("−", "-")
            if text:
                assert "." not in text, text
                assert lab.get_fontsize() >= 8
    plt.close(fig)


def test_heatmap_labels_every_panel_and_allow_override():
    panels = _heat_panels() + [{"matrix": np.eye(3), "xlabel": "", "ylabel": "custom"}]
    fig = plots.heatmaps_figure(panels, "t")
    axes = _panels_axes(fig)
    assert len(axes) == 4
    for ax in axes[:3]:
        assert ax.get_xlabel() and ax.get_ylabel()
    assert (axes[1].get_xlabel(), axes[1].get_ylabel()) == ("column block", "row block")
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["token", "position"]
    assert (axes[2].get_xlabel(), axes[2].get_ylabel()) == ("head", "offset - 1")
    assert (axes[3].get_xlabel(), axes[3].get_ylabel()) == ("", "custom")
    plt.close(fig)


def _rows_cols(fig):
    axes = _panels_axes(fig)
    ss = [ax.get_subplotspec() for ax in axes]
    return len({s.rowspan.start for s in ss}), len({s.colspan.start for s in ss})


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)), (7, (3, 3))])
def test_grid_shape(n, shape):
    assert plots.grid_shape(n) == shape


def test_four_panel_lines_is_2x2_and_ncols_overrides():
    fig = plots.lines_figure(_lines_panels(4), "four")
    assert _rows_cols(fig) == (2, 2)
    w, h = fig.get_size_inches()
    assert w < 2.5 * h, "a 2x2 grid, not a long strip"
    plt.close(fig)
    fig = plots.lines_figure(_lines_panels(4), "four", ncols=4)
    assert _rows_cols(fig) == (1, 4)
    plt.close(fig)
    fig = plots.heatmaps_figure([{"matrix": np.eye(3)}] * 4, "four")
    assert _rows_cols(fig) == (2, 2)
    plt.close(fig)
    fig = gradient_comparison_figure(np.eye(4), np.eye(4), [-1, 0, 1], "g", population_TxT=np.eye(4))
    assert _rows_cols(fig) == (2, 2)
    plt.close(fig)


def _inside(inner, outer, tol=1.0):
    return inner.x0 >= outer.x0 - tol and inner.y0 >= outer.y0 - tol and inner.x1 <= outer.x1 + tol and inner.y1 <= outer.y1 + tol


def test_two_line_suptitle_clears_panels():
    title = "Chen: selector shares and loss\nquick preset · 1000 steps · lr 10 · batch 256 · 4 seeds"
    fig = plots.lines_figure(_lines_panels(4), title)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(r)
    assert fig._suptitle.get_fontsize() >= 10.5
    assert sup.y1 <= fig.bbox.y1 + 1
    for ax in _panels_axes(fig):
        assert ax.get_tightbbox(r).y1 <= sup.y0 + 1, "suptitle overlaps a panel"
        assert ax.title.get_fontsize() >= 9
    plt.close(fig)


def test_long_legend_goes_outside_and_stays_in_figure():
    fig = plots.lines_figure(_lines_panels(2, entries=7) + _lines_panels(1, entries=2), "legends")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    axes = _panels_axes(fig)
    big, small = axes[0].get_legend(), axes[2].get_legend()
    assert big is not None and small is not None
    assert len(big.get_texts()) == 7
    # outside: the 7-entry legend lies right of its axes; the 2-entry one inside its axes
    assert big.get_window_extent(r).x0 >= axes[0].get_window_extent(r).x1
    assert _inside(small.get_window_extent(r), axes[2].get_window_extent(r))
    for ax in axes:
        leg = ax.get_legend()
        assert _inside(leg.get_window_extent(r), fig.bbox), "legend cut off at the figure edge"
        assert all(t.get_fontsize() >= 8 for t in leg.get_texts())
    # the outside legend does not run into the neighbouring panel
    assert not big.get_window_extent(r).overlaps(axes[1].get_window_extent(r))
    plt.close(fig)


def test_runs_integer_x_and_labels():
    x = np.arange(0, 7)
    fig = plots.runs_figure(x, [{"values": RNG.random((2, 7)), "ylabel": "loss", "integer_x": True}], title="runs")
    fig.canvas.draw()
    ax = _panels_axes(fig)[0]
    lo, hi = ax.get_xlim()
    assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
    plt.close(fig)


def test_marginals_token_axis_integer():
    fig = plots.marginals_figure(np.full(3, 1 / 3), RNG.dirichlet(np.ones(3), size=2), "m")
    fig.canvas.draw()
    ax = _panels_axes(fig)[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown and all(float(t).is_integer() for t in shown)
    plt.close(fig)


def test_all_figures_label_every_axis(tmp_path, monkeypatch):
    figs = []
    real = plots.save_figure

    def keep(fig, path, formats=()):
        fig.canvas.draw()
        figs.append((path.name, fig))
        return [path]

    monkeypatch.setattr(plots, "save_figure", keep)
    import icl_jax.analysis.gradient_plots as gp

    monkeypatch.setattr(gp, "save_figure", keep)
    _all_plots(tmp_path)
    assert len(figs) == 8
    for name, fig in figs:
        for ax in _panels_axes(fig):
            assert ax.get_xlabel() and ax.get_ylabel(), name
            for lab in ax.get_xticklabels() + ax.get_yticklabels():
                assert lab.get_fontsize() >= 8, name
        plt.close(fig)
    assert real is not keep


def test_stage_log_axis_gives_every_stage_unit_width_and_log_steps_inside():
    """CW → a: 500,000 then 5,000 steps. Stage k spans [k, k + 1]; inside it, step s after the
    stage start sits at log(1 + s) / log(1 + n); ticks name the stage starts and powers of ten."""
    steps = np.array([0, 10, 499_999, 500_000, 500_010, 505_000])
    x, (positions, labels), boundaries = plots.stage_log_axis(steps, [0, 500_000], 505_000)
    np.testing.assert_allclose(x[[0, 3, 5]], [0.0, 1.0, 2.0])
    np.testing.assert_allclose(x[1], np.log(11) / np.log(500_001))
    np.testing.assert_allclose(x[4], 1 + np.log(11) / np.log(5_001))
    assert np.all(np.diff(x) > 0) and boundaries == [1.0]
    assert labels[0] == "0" and labels[-1] == "505k" and "500k" in labels and "+10²" in labels
    assert positions == sorted(positions) and len(positions) == len(labels)
    fig = plots.lines_figure([{"lines": {"a": (x, steps)}, "xticks": (positions, labels), "vlines": boundaries}])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == labels
    plt.close(fig)
    with pytest.raises(ValueError, match="stage_starts must start at 0"):
        plots.stage_log_axis(steps, [0, 600_000], 505_000)
