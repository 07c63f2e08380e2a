"""``icl-jax theory nichani-gradient``: JSON keys and shapes, text table, figure, errors."""

import json

import pytest

from icl_jax.cli import main

ARGS = ["theory", "nichani-gradient", "--graph", "manual", "--vocab-size", "3", "--alpha", "0.5",
        "--beta0", "1e-3", "--samples", "4096", "--draws", "256", "--seed", "1"]


def test_nichani_gradient_json_text_and_plot(capsys, tmp_path):
    plot = tmp_path / "grad.png"
    assert main([*ARGS, "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    t = 6
    assert out["parents"] == [-1, 0, 0, 1, 2] and out["config"]["seq_len"] == t
    assert out["config"]["graph"] == "manual" and out["config"]["vocab_size"] == 3
    for name in ("autodiff", "first_order", "population", "population_g", "population_g_se"):
        assert len(out[name]) == t and all(len(row) == t for row in out[name]), name
    assert out["population"][t - 1] == [None] * t  # no population limit for the query row
    assert all(out["autodiff"][i][k] == 0.0 for i in range(t) for k in range(i + 1, t))
    assert "gradient" in out["convention"]
    assert out["rel_error_first_order"] < 1e-3 and out["corr_first_order"] > 0.999
    assert 0.0 <= out["rel_error_population"] and -1.0 <= out["corr_population"] <= 1.0
    for name in ("autodiff", "first_order", "population"):
        assert 0.0 <= out[f"argmax_recovery_{name}"] <= 1.0
    assert out["argmax_recovery_population"] == 1.0 and out["dpi_parent_is_argmax_population"] is True
    # E[tr π − 1] = 0 under the exchangeable prior (the project's own Dirichlet sampler)
    assert abs(out["trace_minus_one"]["mean"]) < 4 * out["trace_minus_one"]["se"]
    edges = [v for v in out["edge_chi2_per_node"] if v is not None]
    assert len(edges) == 4 and edges == pytest.approx([out["edge_chi2"]["mean"]] * 4, rel=1e-9)
    assert plot.stat().st_size > 10_000 and out["plot"] == str(plot)

    assert main(ARGS) == 0  # human table (same shapes: nothing recompiles)
    text = capsys.readouterr().out
    assert "first_order" in text and "population" in text and "E[I_chi2(edge)]" in text


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--alpha", "0"], "alpha must be a finite scalar > 0"),
        (["--vocab-size", "1"], "vocab_size must be an integer >= 2"),
        (["--beta0", "0"], "beta0 must be a finite number > 0"),
        (["--eps", "-1"], "eps must be a finite number >= 0"),
        (["--draws", "1"], "draws must be an integer >= 2"),
        (["--seq-len", "7"], "seq_len must be 6 for the manual graph"),
    ],
)
def test_nichani_gradient_errors(capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main([*ARGS, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("icl-jax: error: ") and message in err and err.count("\n") == 1


def test_theory_needs_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["theory"])
    assert exc.value.code == 2
