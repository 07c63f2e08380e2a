"""The README's Python example runs as written (and its quoted numbers hold)."""

import pathlib
import re


def test_readme_python_example_runs(capsys):
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    loss, oracle = map(float, capsys.readouterr().out.split())
    assert abs(loss - 1.76) < 0.05 and abs(oracle - 0.8465) < 1e-4
