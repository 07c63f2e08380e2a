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


CHEN = ["theory", "chen-selection", "--vocab-size", "3", "--parents", "1,2", "--heads", "3", "--alpha", "0.1",
        "--draws", "256", "--seed", "1"]


def test_chen_selection_json_and_text(capsys):
    assert main([*CHEN, "--max-degree", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selected"] == [1, 2] and out["selected_label"] == "110"
    assert [s["offsets"] for s in out["subsets"]] == [[], [3], [2], [2, 3], [1], [1, 3], [1, 2]]
    assert [s["label"] for s in out["subsets"]] == ["000", "001", "010", "011", "100", "101", "110"]
    empty, best = out["subsets"][0], out["subsets"][-1]
    assert empty["modified_chi2"] == 0.0 and empty["chi2"] == 0.0
    for s in out["subsets"][1:]:
        assert 0 < s["modified_chi2_se"] < s["modified_chi2"] < s["chi2"] and 0 < s["chi2_se"]
        assert s["conditional_entropy"] > best["conditional_entropy"] - 1e-12
    assert out["gap"] > 3 * out["gap_se"] > 0 and out["config"]["draws"] == 256
    assert sum(s["win_fraction"] for s in out["subsets"]) == pytest.approx(1.0)

    assert main([*CHEN, "--max-degree", "3"]) == 0  # text; same kernels, D = 3 adds {1,2,3}
    text = capsys.readouterr().out
    assert "{1,2,3}" in text and "<- S*" in text and "= {1,2} (110)" in text
    assert "argmax of the standard chi2: {1,2}, {1,2,3}" in text  # the I_chi2 tie


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--vocab-size", "1"], "vocab_size must be an integer >= 2"),
        (["--alpha", "0"], "alpha must be a finite scalar > 0"),
        (["--alpha", "nan"], "alpha must be a finite scalar > 0"),
        (["--max-degree", "4"], "max_degree must be an integer in [0, num_heads=3]"),
        (["--heads", "0"], "num_heads must be an integer >= 1"),
        (["--parents", "0,1"], "parent_offsets must be distinct integers >= 1"),
        (["--draws", "1"], "draws must be an integer >= 2"),
        (["--vocab-size", "9", "--parents", "1,3"], "at most 256 are supported"),
    ],
)
def test_chen_selection_errors(capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main([*CHEN, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("icl-jax: error: ") and message in err and err.count("\n") == 1


def test_nichani_gradient_takes_an_explicit_dag(capsys):
    """``--dag`` as in ``baselines``: any tree, -1 or r for a root; T follows from the graph and a
    conflicting --seq-len is an error."""
    args = ["theory", "nichani-gradient", "--vocab-size", "3", "--alpha", "0.5", "--samples", "2048", "--draws", "64"]
    assert main([*args, "--dag=r,0,0,1,2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parents"] == [-1, 0, 0, 1, 2] and out["config"]["seq_len"] == 6 and out["config"]["graph"] == "dag"
    assert out["argmax_recovery_first_order"] == 1.0  # every non-root row points at its parent
    with pytest.raises(SystemExit) as exc:
        main([*args, "--dag=-1,0,1", "--seq-len", "9"])
    assert exc.value.code == 2 and "conflicts with --dag" in capsys.readouterr().err


def test_chen_selection_warns_about_parents_no_head_copies(capsys):
    assert main(["theory", "chen-selection", "--parents", "1,5", "--heads", "3", "--draws", "64", "--vocab-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "warning:" in text and "5" in text.split("warning:")[1]
