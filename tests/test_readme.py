"""The README's Python examples run as written (and their quoted numbers hold)."""

import ast
import math
import pathlib
import re

BLOCKS = re.findall(r"```python\n(.*?)```", (pathlib.Path(__file__).parents[1] / "README.md").read_text(), re.S)


def _block(marker: str) -> str:
    """The README's Python block that contains ``marker`` (robust to new blocks)."""
    (block,) = [b for b in BLOCKS if marker in b]
    return block


def _run(block, capsys):
    exec(compile(block, "README.md", "exec"), {})
    return capsys.readouterr().out.splitlines()


def test_readme_task_example(capsys):
    loss, oracle = map(float, _run(_block('baseline_predictions'), capsys)[0].split())
    assert abs(loss - 1.76) < 0.05 and abs(oracle - 0.8465) < 1e-4


def test_readme_engine_example(capsys):
    import numpy as np

    lines = _run(_block("parent_attention =").replace("record_every=50)", "record_every=50, progress=False)"), capsys)
    assert ast.literal_eval(lines[0]) == (2, 4, 300)
    parent_attention = np.array(lines[1].strip("[]").split(), dtype=float)
    # Stage 1 moves attention from uniform (0.21 on the parent, averaged over rows) onto the parent.
    assert parent_attention[0] > 0.3 and parent_attention[1] > 0.8


def test_readme_nichani_example(capsys):
    loss, recovery = map(float, _run(_block('CatFormer('), capsys))
    assert abs(loss - math.log(5)) < 1e-5  # zero init: uniform output
    assert recovery == 1.0  # the first-order gradient points every non-root row at its parent


def test_readme_chen_example(capsys):
    lines = _run(_block('InductionModel('), capsys)
    prob_ce, official = map(float, lines[0].split())
    # at a = 0.01 the output is ≈ the in-context unigram (true CE ≈ 0.7 at α = 0.1); the
    # official metric is bounded below by log(e + 2) − 1 for d = 3
    assert 0.6 < prob_ce < 0.8 and math.log(math.e + 2) - 1 < official < math.log(3)
    assert float(lines[1]) < 1e-5  # hard parameters reproduce the GIH closed form


def test_readme_transformer_example(capsys):
    """The Flax NNX transformer trains through engine.sweep over 2 seeds, and a W-only stage
    leaves the other groups alone (the loss keeps falling, but only through the readout)."""
    import numpy as np

    lines = _run(_block("Transformer(vocab_size").replace("record_every=50)", "record_every=50, progress=False)"), capsys)
    assert ast.literal_eval(lines[0]) == ["L1", "L2", "W", "ln_f", "wpe", "wte"]
    assert ast.literal_eval(lines[1]) == (1, 2, 250)
    early = np.array(lines[2].split("] [")[0].strip("[]").split(), dtype=float)
    late = np.array(lines[2].split("] [")[1].strip("[]").split(), dtype=float)
    assert early.shape == late.shape == (2,) and np.all(late < early - 0.05)  # both seeds learn
    attention = np.array(lines[3].strip("[]").split(), dtype=float)
    assert attention.shape == (2,) and np.all((attention > 0) & (attention <= 1))


def test_readme_load_run_example(capsys):
    """A run reloads with its typed config, the model's parameter structure on (grid, seed) axes,
    and parameters that score on a fresh test set like the test loss the run reported."""
    lines = _run(_block("ij.load_run("), capsys)
    assert lines[0] == "nichani-fig2-chain ('grid', 'seed') (0, 1) 600"
    fresh, reported = map(float, lines[1].split())
    assert abs(fresh - reported) < 0.05  # same parameters, another sample of the same task
    assert fresh < math.log(3) - 0.05  # and they learned something (uniform output: ln S)
