"""Shared body of the per-figure scripts: run registered experiments, one sub-folder each.

``python scripts/<figure>.py [--quick] [--out DIR] [--seeds N] [--set key=value ...] [--resume | --overwrite]``:
every argument but ``--out`` is passed to ``icl-jax run``; results go to ``DIR/<experiment>``
(default ``figures/<experiment>``; an existing run there is refused unless ``--resume`` or
``--overwrite``)."""

import sys

from icl_jax.cli import main


def run_experiments(names: list[str], argv: list[str]) -> int:
    args, root = list(argv), "figures"
    if "--out" in args:
        i = args.index("--out")
        root = args[i + 1]
        del args[i : i + 2]
    if "--resume" not in args and "--overwrite" not in args:  # refuse before the first run, not between runs
        from pathlib import Path

        taken = [name for name in names if Path(root, name).is_dir() and any(Path(root, name).iterdir())]
        if taken:
            print(f"icl-jax: error: {', '.join(f'{root}/{n}' for n in taken)} already hold runs; "
                  "pass --resume to continue them or --overwrite to replace them", file=sys.stderr)
            return 2
    for name in names:
        code = main(["run", name, *args, "--out", f"{root}/{name}"])
        if code:
            return code
    return 0
