"""The command line: JSON shapes, clear errors, experiments writing their outputs."""

import json

import pytest

from icl_jax.cli import main


# The baselines tests check the JSON's shape, not its numbers: 512 samples keep every task's
# Dirichlet draws small (512 x rows x S <= 65536), so the programs compile quickly.
def test_baselines_json_tree(capsys):
    assert main(["baselines", "--task", "tree", "--graph", "chain", "--vocab-size", "10", "--seq-len", "20",
                 "--alpha", "0.1", "--samples", "512", "--seed", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["vocab_size"] == 10 and out["config"]["seq_len"] == 20 and out["config"]["samples"] == 512
    for name in ("bayes", "bayes_official", "unigram", "oracle", "count", "uniform"):
        assert set(out["baselines"][name]) >= {"loss", "se"}
    assert out["oracle_closed_form"] == pytest.approx(0.8465, abs=1e-4)


@pytest.mark.parametrize(
    "args",
    [["--task", "dag", "--roots", "official"], ["--task", "dag", "--parent-lists", "r;r;0,1;1,2", "--vocab-size", "3"],
     ["--task", "ngram", "--parents", "1,2", "--init", "stationary"]],
)
def test_baselines_json_other_tasks(capsys, args):
    assert main(["baselines", *args, "--samples", "512", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "bayes" in out["baselines"] and "oracle" in out["baselines"]
    if "ngram" in args:
        assert "official_metric" in out["baselines"]["bayes"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["baselines", "--alpha", "0"], "alpha must be a finite scalar > 0"),
        (["baselines", "--vocab-size", "1"], "vocab_size must be an integer >= 2"),
        (["baselines", "--task", "ngram", "--parents", "1,200"], "seq_len must be >= max(parent_offsets) + 1"),
        (["baselines", "--samples", "1"], "--samples must be >= 2"),
        (["run", "no-such-experiment", "--out", "x"], "unknown experiment"),
        (["run", "data-baselines", "--set", "nope=1", "--out", "x"], "unknown key"),
        (["reproduce"], "exactly one of --quick"),
        (["reproduce", "--quick", "--lanes", "0", "--out", "x"], "lanes must be an integer in [1, "),
        (["reproduce", "--quick", "--lanes", "two", "--out", "x"], "--lanes must be 'auto' or an integer"),
        (["baselines", "--dag=-1,x"], "--dag: expected comma-separated parents"),
        (["baselines", "--dag=-1,0,1", "--seq-len", "9"], "--seq-len 9 conflicts with --dag"),
        (["baselines", "--task", "dag", "--parent-lists", "r;r;0,1", "--seq-len", "9"], "conflicts with --parent-lists"),
        (["baselines", "--task", "dag", "--parent-lists", "r;0;r"], "must have at least one parent"),
    ],
)
def test_cli_errors_are_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_list_and_run_data_experiment(tmp_path, capsys):
    main(["list"])
    assert "data-baselines" in capsys.readouterr().out
    out = tmp_path / "run"
    # samples=2048 as before (the marginal check's standard error is unchanged); vocabularies
    # 5 (tree) and 3 (DAG) keep the Dirichlet draws per task small (2048 x rows x S <= 65536).
    assert main(["run", "data-baselines", "--quick", "--set", "samples=2048", "--set", "vocab_size=5",
                 "--set", "dag_vocab_size=3", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["experiment"] == "data-baselines" and config["preset"] == "quick"
    assert config["config"]["samples"] == 2048
    assert config["config"]["vocab_size"] == 5 and config["config"]["dag_vocab_size"] == 3
    assert metrics["marginal_max_abs_error"] < 0.1
    printed = capsys.readouterr().out
    assert "data-baselines: done in" in printed and "max abs(marginal − μ_π)" in printed  # headline rows
    assert (out / "data-baselines_marginals.png").stat().st_size > 0
    assert (out / "data-baselines_baselines.png").stat().st_size > 0


def test_reproduce_refuses_existing_runs_before_running_any(tmp_path, capsys):
    """Every experiment's folder is checked before the first run: an existing run anywhere in
    --out stops `reproduce` at once, and nothing is written."""
    (tmp_path / "nichani-staged").mkdir()
    (tmp_path / "nichani-staged" / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--quick", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nichani-staged"]


def test_reproduce_refuses_cpu_lanes_on_an_accelerator_host(monkeypatch, tmp_path, capsys):
    """Lanes split CPU cores: on a host whose JAX backend is an accelerator, --lanes > 1 is an
    error before anything runs (each child would start the accelerator and claim its memory)."""
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--quick", "--lanes", "2", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "lanes split CPU cores" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
