"""Package hygiene: `import icl_jax` is light and side-effect free, and no import cycles."""

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"MPLBACKEND": "", "PATH": ""})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_is_light_and_keeps_the_matplotlib_backend():
    """`import icl_jax` pulls in neither diffrax nor matplotlib (both imported when used), and
    never switches matplotlib's backend (a notebook keeps its own)."""
    got = _run(
        "import sys, icl_jax, icl_jax.models, icl_jax.engine, icl_jax.theory\n"
        "print(sorted(m for m in ('diffrax', 'matplotlib', 'equinox') if m in sys.modules))"
    )
    assert got == "[]", got
    got = _run(
        "import matplotlib\nmatplotlib.use('svg')\n"
        "import icl_jax.experiments, icl_jax.analysis.plots, icl_jax.analysis.gradient_plots\n"
        "print(matplotlib.get_backend())"
    )
    assert got == "svg", got


def _import_graph() -> dict[str, set[str]]:
    """Module → the icl_jax modules it imports anywhere in its source (top level or inside
    functions: a deferred import is still a dependency, and hides a cycle only until the
    function runs)."""
    import ast
    import pathlib

    import icl_jax

    root = pathlib.Path(icl_jax.__file__).parent
    files = {}
    for path in root.rglob("*.py"):
        parts = ("icl_jax",) + path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "") in files:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, stack, found = {}, [], []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = _import_graph()
    assert "icl_jax.models.induction" in graph and "icl_jax.engine" in graph
    assert _cycles(graph) == []
