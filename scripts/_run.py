"""Shared body of the per-figure scripts: run registered experiments, one sub-folder each.

``python scripts/<figure>.py [--quick] [--out DIR] [--seeds N] [--set key=value ...] [--resume | --overwrite]``:
every argument but ``--out`` is passed to ``icl-jax run``; results go to ``DIR/<experiment>``
(default ``figures/<experiment>``; an existing run there is refused unless ``--resume`` or
``--overwrite``)."""

from icl_jax.cli import main


def run_experiments(names: list[str], argv: list[str]) -> int:
    args, root = list(argv), "figures"
    if "--out" in args:
        i = args.index("--out")
        root = args[i + 1]
        del args[i : i + 2]
    for name in names:
        code = main(["run", name, *args, "--out", f"{root}/{name}"])
        if code:
            return code
    return 0
