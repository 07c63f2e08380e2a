"""Seeds × hyperparameters in one compiled call, sharded over every available device.

A sweep flattens its (grid point, seed) pairs into one run axis — grid outer, seeds inner —
vmaps the single-run program of `icl_jax.engine.program` over it, and shards that axis over a
1-D device mesh (`jax.sharding.Mesh` + `NamedSharding`; runs are independent, so no
collectives). The axis is padded to a multiple of the device count and the padding dropped.
One CPU, a GPU node and a TPU slice run the same code; a mesh of one device is the fallback.

Under `jax.distributed` (several processes, e.g. one per host) `jax.devices()` is the global
device list, so the default mesh spans every process: run the same script on every host and
each host trains the runs on its own devices. Every process gets the whole `TrainResult`;
only process 0 writes `out_dir` (see `icl_jax.engine.execute`). A sweep over
`devices=jax.local_devices()` stays local to its process (each process runs and writes it).

Run r of a sweep uses `jax.random.key(seeds[r % n_seeds])` and grid point `r // n_seeds`, so
it reproduces `train(..., seed=seeds[r % n_seeds], hparams=<that grid point>)`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from icl_jax.engine.data import DataSource
from icl_jax.engine.execute import RUN_AXIS, VECTORIZE_MODES, RunLayout, run_layout, to_global
from icl_jax.engine.program import LossFn, make_program
from icl_jax.engine.results import TrainResult
from icl_jax.engine.runs import numeric_hparam
from icl_jax.engine.stages import LabelFn, Stage, top_level_labels


def product_grid(**axes: Sequence[float]) -> dict[str, np.ndarray]:
    """Cartesian product of 1-D hyperparameter axes, flattened (last axis fastest).

    `product_grid(lr=[0.1, 1.0], init_scale=[1e-3, 1e-2])` gives 4 grid points; reshape a
    sweep's leading axis to (2, 2) to index them as (lr, init_scale).
    """
    names = list(axes)
    values = [np.asarray(axes[n]) for n in names]
    for name, v in zip(names, values):
        if v.ndim != 1 or v.size == 0:
            raise ValueError(f"product_grid({name}=...): needs a non-empty 1-D sequence, got shape {v.shape}")
    points = list(itertools.product(*[range(v.size) for v in values]))
    return {n: v[[p[i] for p in points]] for i, (n, v) in enumerate(zip(names, values))}


def _grid(hparams: Mapping[str, Any] | None) -> tuple[dict[str, jax.Array], int]:
    if not hparams:
        return {}, 1
    arrays = {name: numeric_hparam(name, value) for name, value in hparams.items()}
    lengths = {}
    for name, arr in arrays.items():
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ValueError(
                f"hparams[{name!r}]: a sweep takes non-empty 1-D grids (one value per grid point), got shape {arr.shape}"
            )
        lengths[name] = arr.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"hparams: every grid must have the same length (one entry per grid point; use product_grid for "
            f"a Cartesian product), got lengths {lengths}"
        )
    return arrays, next(iter(lengths.values()))


def _seeds(seeds) -> tuple[int, ...]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds: need at least one seed, got {seeds}")
        return tuple(range(int(seeds)))
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds: need at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: must be distinct, got {seeds}")
    return seeds


def run_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all) with the axis name 'runs'."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return Mesh(np.asarray(devices), (RUN_AXIS,))


def sweep(
    loss_fn: LossFn,
    init,
    stages: Sequence[Stage],
    data: DataSource,
    *,
    seeds: int | Sequence[int] = 1,
    hparams: Mapping[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    vectorize: str = "auto",
    metrics: Callable | None = None,
    record_every: int = 1,
    label_fn: LabelFn = top_level_labels,
    chunk_steps: int | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    progress: bool = True,
    config: Mapping | None = None,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train every (grid point, seed) pair in one compiled, vmapped, sharded call.

    Args:
      seeds: a count n (seeds 0..n-1) or explicit distinct integer seeds.
      hparams: dict of 1-D arrays of equal length G (zipped grid points; see `product_grid`).
        Each run sees scalars, so stages, init and samplers use them exactly as in `train`.
      devices: devices to shard the run axis over (default: all of `jax.devices()`, which under
        `jax.distributed` are the devices of every process); each device gets a contiguous
        block of runs through `jax.shard_map`. In one process, a sweep of fewer runs than
        devices uses only the first n_runs of the default devices (no duplicated padding runs).
        A mesh spanning several processes needs every
        process to call `sweep` with the same arguments; each returns the whole result, and
        only process 0 writes `out_dir` (checkpoints, outputs, progress bar).
      vectorize: how the runs on one device are batched. "auto" (default): "map" on CPU
        devices, "vmap" on accelerators (measured in benchmarks/sweep.py and
        benchmarks/nichani.py). "vmap" vectorises them;
        results equal the single runs up to float32 rounding (XLA picks a different association
        order for some reductions when they gain a batch axis, so the last bit can differ from
        `train`). "map" runs them one after another through the single-run program (a while
        loop XLA cannot unroll) and reproduces `train` bit for bit. Which is faster depends on
        the hardware: vmap pays off when one run does not fill the device (accelerators, small
        batches); on a CPU with runs of batch ~1024 one run already keeps a core busy and the
        32× larger vmapped working set runs slower per run than "map" (benchmarks/sweep.py).
      Everything else: as `icl_jax.engine.train` (the function).

    Returns:
      A TrainResult whose arrays have leading axes (G, n_seeds): `loss` is (G, N, steps),
      metric leaves (G, N, n_records, ...), parameter leaves (G, N, ...).
    """
    if vectorize not in VECTORIZE_MODES + ("auto",):
        raise ValueError(f"vectorize: must be 'auto' or one of {VECTORIZE_MODES}, got {vectorize!r}")
    seeds = _seeds(seeds)
    grid, n_grid = _grid(hparams)
    n_seeds = len(seeds)
    n_runs = n_grid * n_seeds
    example = {k: v[0] for k, v in grid.items()}
    program = make_program(loss_fn, init, stages, data, metrics=metrics, label_fn=label_fn,
                           record_every=record_every, chunk_steps=chunk_steps, hparams_example=example)
    if devices is None and jax.process_count() == 1 and n_runs < jax.device_count():
        devices = jax.devices()[:n_runs]  # a padding run would only compete for the cores
    mesh = run_mesh(devices)
    n_dev = mesh.devices.size
    if vectorize == "auto":
        # on a CPU one run of batch ~10^3 keeps a core busy: runs one after another per device
        # (each device its own thread) beat one vmapped working set n times larger
        vectorize = "map" if mesh.devices.flat[0].platform == "cpu" else "vmap"
    n_pad = -(-n_runs // n_dev) * n_dev
    run = np.minimum(np.arange(n_pad), n_runs - 1)  # padding repeats the last run
    run_grid, run_seed = run // n_seeds, np.asarray(seeds)[run % n_seeds]
    device = mesh.devices.flat[0] if n_dev == 1 and devices is not None else None
    mesh = mesh if n_dev > 1 else None
    keys = jax.vmap(jax.random.key)(jnp.asarray(run_seed, dtype=jnp.uint32))
    run_hparams = {k: v[run_grid] for k, v in grid.items()}
    if mesh is not None:  # several processes: each builds the shards of its own devices
        keys, run_hparams = to_global((keys, run_hparams), NamedSharding(mesh, PartitionSpec(RUN_AXIS)))
    elif device is not None:
        keys, run_hparams = jax.device_put((keys, run_hparams), device)

    def describe_run(r: int) -> dict:
        return {"seed": int(run_seed[r]), "grid_index": int(run_grid[r]),
                **{k: float(v[run_grid[r]]) for k, v in grid.items()}}

    layout = RunLayout(
        keys=keys, hparams=run_hparams, batched=True, n_real=n_runs, describe_run=describe_run,
        vectorize=vectorize, mesh=mesh, device=device,
        meta={"seeds": list(seeds), "hparams": {k: np.asarray(v).tolist() for k, v in grid.items()},
              "devices": n_dev, "vectorize": vectorize},
    )
    def unpad(x):
        return x[:n_runs].reshape((n_grid, n_seeds) + x.shape[1:])

    return run_layout(program, layout, seeds=seeds, hparams=grid, reshape=unpad, out_dir=out_dir, resume=resume,
                      checkpoint_every=checkpoint_every, progress=progress, config=config, callback=callback)
