"""GIF animations of recorded maps (icl_jax.analysis.animation, ``icl-jax animate``)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icl_jax.analysis.animation import animate_maps, frame_indices, matrix_metrics
from icl_jax.cli import main

# The full-scale run folders are committed with their run/ (the quick ones ignore run/ in git).
FIGURES = Path(__file__).parents[2] / "figures" / "full"


def test_frame_indices_keep_the_ends_and_favour_early_records():
    np.testing.assert_array_equal(frame_indices(5, 10), np.arange(5))
    idx = frame_indices(1000, 40)
    assert idx[0] == 0 and idx[-1] == 999 and len(idx) <= 40 and np.all(np.diff(idx) > 0)
    with pytest.raises(ValueError, match="max_frames must be an integer >= 2"):
        frame_indices(10, 1)
    assert np.sum(idx < 100) > np.sum(idx >= 900)  # log-spaced: early training gets more frames


def test_animate_maps_writes_one_frame_per_step_and_never_overwrites(tmp_path):
    frames = np.random.default_rng(0).random((7, 4, 5))
    path = animate_maps(tmp_path / "m.gif", list(range(0, 70, 10)), [{"frames": frames, "title": "A"},
                                                                      {"frames": frames[:, :2], "title": "B"}], "toy")
    with Image.open(path) as im:
        assert im.n_frames == 7
    with pytest.raises(ValueError, match="exists; remove it first"):
        animate_maps(path, list(range(7)), [{"frames": frames}])
    with pytest.raises(ValueError, match="F = len\\(steps\\) = 3"):
        animate_maps(tmp_path / "n.gif", [0, 1, 2], [{"frames": frames}])
    with pytest.raises(ValueError, match="must end in .gif"):
        animate_maps(tmp_path / "n.png", list(range(7)), [{"frames": frames}])


def test_matrix_metrics_picks_matrices_and_splits_heads():
    traj = {"metrics": {"W": np.zeros((1, 2, 9, 3, 3)), "a": np.zeros((1, 2, 9)), "maps": np.ones((1, 2, 9, 2, 4, 4))}}
    got = matrix_metrics(traj, seed_index=1)
    assert sorted(got) == ["W", "maps_head0", "maps_head1"] and got["W"].shape == (9, 3, 3)


def test_cli_animates_the_chen_three_stage_run_and_explains_a_run_without_maps(tmp_path, capsys):
    run = shutil.copytree(FIGURES / "chen-three-stage-d2", tmp_path / "d2", ignore=shutil.ignore_patterns("*.gif"))
    assert main(["animate", str(run), "--max-frames", "12"]) == 0
    with Image.open(run / "chen-three-stage-d2_W.gif") as im:
        assert 10 <= im.n_frames <= 13
    chain = shutil.copytree(FIGURES / "nichani-fig2-chain", tmp_path / "chain")
    with pytest.raises(SystemExit) as stop:
        main(["animate", str(chain)])
    assert stop.value.code == 2 and "records no matrix-valued metric" in capsys.readouterr().err


