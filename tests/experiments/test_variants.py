"""The reproduction's variants (icl_jax/experiments/variants.py): each is a valid config that
differs from its preset in exactly the keys it names, `reproduce --variants` plans and runs
them into their own folders, and a custom run's figure titles name what it changed."""

import json

import pytest

from icl_jax.cli import _reproduce_plan, main
from icl_jax.experiments import get_experiment, list_experiments
from icl_jax.experiments.registry import RunContext
from icl_jax.experiments.variants import VARIANTS, Variant, get_variant


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@pytest.mark.parametrize("preset", ["official", "quick"])
def test_a_variant_is_its_preset_with_exactly_its_keys_changed(variant, preset):
    base = variant.exp.preset(preset)
    config = variant.config(preset)
    variant.exp.check(config)  # task and model build
    keys = variant.keys(preset)
    assert set(config.differences(base)) == set(keys)
    assert {k: getattr(config, k) for k in keys} == dict(keys)


def test_variant_names_are_unique_and_never_an_experiment_name():
    names = [v.name for v in VARIANTS]
    assert len(set(names)) == len(names)
    assert not set(names) & {e.name for e in list_experiments()}
    assert get_variant(names[0]) is VARIANTS[0]
    with pytest.raises(ValueError, match="unknown variant 'nope'; defined: chen-"):
        get_variant("nope")


def test_the_official_code_behaviours_of_the_issue_each_have_a_variant():
    """Chen's double-softmax loss and the multi-parent roots; the tree-Bayes wrap-around is a
    baseline every tree run reports, not a run."""
    changed = {(v.experiment, k, val) for v in VARIANTS for k, val in v.overrides.items()}
    assert ("chen-cwa", "loss", "official") in changed
    assert ("nichani-fig5-multiparent", "roots", "official") in changed
    assert all(v.overrides.get("seeds", 3) >= 3 for v in VARIANTS)


def test_reproduce_variants_plans_every_variant_and_writes_nothing(tmp_path):
    plan = _reproduce_plan(tmp_path / "v", "official", "new", variants=True)
    assert sorted(name for name, *_ in plan) == sorted(v.name for v in VARIANTS)
    for name, exp, config, folder, mode in plan:
        assert exp.name == get_variant(name).experiment and folder == tmp_path / "v" / name and mode == "new"
        assert config == get_variant(name).config("official")
    assert not (tmp_path / "v").exists()


def test_reproduce_variants_runs_a_variant_into_its_own_folder(tmp_path, monkeypatch):
    """A toy variant through the command line: its folder is named for the variant, config.json
    records the preset it varies, summary.md has the variant table."""
    import icl_jax.experiments.variants as variants

    toy = {"vocab_size": 3, "seq_len": 6, "steps": 60, "batch_size": 32, "test_size": 256, "record_every": 30,
           "learning_rate": 3.0}
    v = Variant("toy-chain-seeds3", "nichani-fig2-chain", {**toy, "seeds": 3}, "three seeds")
    monkeypatch.setattr(variants, "VARIANTS", (v,))
    out = tmp_path / "variants"
    assert main(["reproduce", "--quick", "--variants", "--lanes", "1", "--out", str(out)]) == 0
    record = json.loads((out / v.name / "config.json").read_text())
    assert record["experiment"] == "nichani-fig2-chain" and record["preset"] == "quick"
    assert record["config"]["seeds"] == 3
    metrics = json.loads((out / v.name / "metrics.json").read_text())
    assert len(metrics["final_test_loss"]["per_seed"]) == 3
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# icl-jax reproduce --quick --variants")
    assert "| toy-chain-seeds3 | nichani-fig2-chain | " in summary and "| three seeds |" in summary
    assert "1 variant in 1 lane(s)" in summary


def test_a_run_title_names_the_keys_it_changed_from_its_preset():
    exp = get_experiment("chen-cwa")
    changed = exp.official.replace(loss="official", seeds=3, figure_format="pdf")
    # seeds is a title field (shown once); figure_format does not change the computation
    assert RunContext("chen-cwa", None, "official", changed).settings.endswith("seeds 3 · loss=official")
    quick = exp.quick.replace(loss="official")
    assert RunContext("chen-cwa", None, "quick", quick).settings == exp.quick.settings("quick") + " · loss=official"
    assert RunContext("chen-cwa", None, "official", exp.official).settings == exp.official.settings("official")
    custom = RunContext("chen-cwa", None, "custom", exp.official.replace(loss="official")).settings
    assert custom.startswith("custom preset") and custom.endswith(" · loss=official")
