"""Typed experiment configs (icl_jax/experiments/config.py): validation at construction,
``--set`` parsing by field type, the resume fingerprint, and the description behind
``--show-config``. A toy config keeps these independent of any experiment."""

import dataclasses
import json
from typing import Literal

import pytest

from icl_jax.experiments import check_out, get_experiment
from icl_jax.experiments.config import ExperimentConfig, option


@dataclasses.dataclass(frozen=True)
class Toy(ExperimentConfig):
    steps: int = option(100, "training steps", min=1)
    lr: float = option(0.5, "learning rate", gt=0)
    optimizer: Literal["sgd", "adam"] = option("sgd", "optimiser")
    parents: tuple[int, ...] = option((1, 2), "parent offsets", min=1)
    lrs: tuple[float, ...] = option((1.0, 2.0), "stage learning rates", gt=0)
    flag: bool = option(False, "a switch")
    record_every: int = option(10, "record interval", min=1)

    def check(self):
        if self.record_every > self.steps:
            raise ValueError(f"record_every ({self.record_every}) must be <= steps ({self.steps})")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "steps: must be >= 1"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"steps": True}, "steps: expected an integer"),
        ({"lr": 0.0}, "lr: must be > 0"),
        ({"lr": float("nan")}, "lr: must be finite"),
        ({"optimizer": "rmsprop"}, "optimizer: must be one of 'sgd', 'adam'"),
        ({"parents": (1, 0)}, r"parents: must be >= 1 \(got 0\)"),
        ({"parents": "1,2"}, "parents: expected a list of int"),
        ({"flag": "yes"}, "flag: expected true or false"),
        ({"seeds": 0}, "seeds: must be >= 1"),
        ({"figure_format": "jpg"}, "figure_format: must be one of"),
        ({"record_every": 1000}, r"record_every \(1000\) must be <= steps"),
        ({"nope": 1}, "unknown config key.*nope.*valid keys"),
    ],
)
def test_invalid_values_are_errors_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        Toy().replace(**changes)


def test_values_are_normalised():
    cfg = Toy(steps=70.0, lr=1, parents=[3, 4], lrs=[1, 2])
    assert cfg.steps == 70 and isinstance(cfg.steps, int)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.parents == (3, 4) and cfg.lrs == (1.0, 2.0)
    hash(cfg)  # frozen and hashable: lists became tuples


def test_set_strings_are_parsed_by_field_type():
    cfg = Toy().with_strings(["steps=2**10", "lr=1e-3", "optimizer=adam", "parents=1,5", "lrs=[1, 100000.0]",
                              "flag=true", "seeds=3"])
    assert cfg == Toy(steps=1024, lr=1e-3, optimizer="adam", parents=(1, 5), lrs=(1.0, 1e5), flag=True, seeds=3)
    assert Toy().with_strings(["steps=1e3"]).steps == 1000
    for item, message in [("steps=1.5", "cannot parse as int"), ("flag=maybe", "cannot parse as bool"),
                          ("lr=fast", "cannot parse as float"), ("parents=1,x", "cannot parse as int"),
                          ("nope=1", "unknown key"), ("steps", "key=value")]:
        with pytest.raises(ValueError, match=message):
            Toy().with_strings([item])


def test_round_trip_through_json_dict():
    cfg = Toy(steps=50, parents=(2,), figure_format="pdf")
    assert Toy.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        Toy.from_dict({**cfg.to_dict(), "resume": True})


def test_fingerprint_ignores_what_does_not_change_the_computation():
    a, b = Toy(), Toy(figure_format="svg")
    assert a.fingerprint() == b.fingerprint()
    assert "figure_format" not in a.fingerprint()
    assert Toy(steps=99).fingerprint() != a.fingerprint()
    assert a.differences(Toy(steps=99, flag=True)) == ["steps", "flag"]


def test_describe_lists_every_field_with_type_and_meaning():
    rows = {r["key"]: r for r in Toy.describe()}
    assert list(rows) == Toy.keys()
    assert rows["steps"]["type"] == "int >= 1" and rows["steps"]["help"] == "training steps"
    assert rows["optimizer"]["type"] == "one of sgd|adam"
    assert rows["lrs"]["type"] == "list of float > 0"


def test_settings_line_names_the_preset_and_title_fields():
    cfg = Toy(seeds=3)
    assert cfg.settings("quick") == "quick preset · seeds 3"


def test_an_option_added_after_runs_were_written_resumes_them_and_refuses_a_changed_value(tmp_path):
    """``option(added=True)`` (record_maps of the Nichani Fig. 2 runs): out of the fingerprint at
    its default, so a run written before the option existed still resumes; any changed value,
    in either direction, is refused by name before anything is written."""

    exp = get_experiment("nichani-fig2-chain")
    quick = exp.quick
    assert "record_maps" not in quick.fingerprint()
    assert quick.replace(record_maps=True).fingerprint()["record_maps"] is True
    old = {k: v for k, v in quick.to_dict().items() if k != "record_maps"}  # a run from before the option
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"experiment": exp.name, "preset": "quick", "config": old}))
    assert check_out(exp, quick, tmp_path / "old", "resume") is True
    stored = (tmp_path / "old" / "config.json").read_text()
    with pytest.raises(ValueError, match="record_maps: stored False, now True"):
        check_out(exp, quick.replace(record_maps=True), tmp_path / "old", "resume")
    (tmp_path / "new").mkdir()
    maps = quick.replace(record_maps=True).to_dict()
    (tmp_path / "new" / "config.json").write_text(json.dumps({"experiment": exp.name, "preset": "quick", "config": maps}))
    with pytest.raises(ValueError, match="record_maps: stored True, now False"):
        check_out(exp, quick, tmp_path / "new", "resume")
    assert (tmp_path / "old" / "config.json").read_text() == stored  # nothing was written
