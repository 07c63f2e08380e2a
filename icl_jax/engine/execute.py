"""Running a program: the host loop over compiled chunks, shared by `train` and `sweep`.

The host touches the runs only between chunks (progress bar, finiteness check, checkpoint,
callback). A `RunLayout` says how the runs of one call are laid out: one run, or a run axis
batched on each device with `vmap` (or the exact sequential `lax.map`) and sharded over a
device mesh with `shard_map`. Compiled entry points are cached on the program.

Several processes (`jax.distributed`): when the mesh spans devices of more than one process
(`RunLayout.distributed`), every process runs this same host loop on the global arrays
(multi-controller JAX: the same computations in the same order). Per-run arrays are gathered
to every process with one all-gather per chunk (losses, finiteness, records), at checkpoints
and at the end (state), so every process makes the same decisions (the non-finite check, the
callback) and returns the same `TrainResult`. Only process 0 writes: the run folder, its
checkpoints and the progress bar; on resume process 0 reads the checkpoint and broadcasts its
bytes to the others, so `out_dir` need exist only on process 0's host.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding
from tqdm.auto import tqdm

from icl_jax.engine import checkpoint as ckpt
from icl_jax.engine.program import Program
from icl_jax.engine.results import NonFiniteLossError, TrainResult, TrainState, write_outputs

RUN_AXIS = "runs"
VECTORIZE_MODES = ("vmap", "map")


@dataclasses.dataclass
class RunLayout:
    """How the runs of one call are laid out.

    `keys`/`hparams` carry a leading run axis when `batched`; `vectorize` says how runs on one
    device are batched ("vmap": vectorised kernels; "map": `lax.map`, one run at a time through
    the single-run program); `mesh` (size > 1) shards the run axis with `shard_map`;
    `describe_run(i)` names run i for error messages.
    """

    keys: jax.Array
    hparams: dict[str, jax.Array]
    batched: bool
    n_real: int
    describe_run: Callable[[int], dict]
    vectorize: str = "vmap"
    mesh: Mesh | None = None
    device: jax.Device | None = None  # an explicitly chosen single device (no mesh)
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def sharding(self):
        if self.mesh is not None:
            return NamedSharding(self.mesh, PartitionSpec(RUN_AXIS))
        return None if self.device is None else SingleDeviceSharding(self.device)

    @property
    def distributed(self) -> bool:
        """The run axis spans devices of several processes (`jax.distributed`)."""
        return self.mesh is not None and not self.sharding.is_fully_addressable

    @property
    def writes(self) -> bool:
        """This process writes the run folder (always, unless distributed and not process 0)."""
        return not self.distributed or jax.process_index() == 0


def to_global(tree, sharding):
    """Place host values (equal on every process) with `sharding`, also across processes.

    One process: `jax.device_put`. Several: `device_put` cannot reach other processes'
    devices, so each process builds its own shards with `jax.make_array_from_callback`
    (typed PRNG keys through their `key_data`).
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


@functools.lru_cache(maxsize=8)
def _replicate(mesh: Mesh) -> Callable:
    return jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, PartitionSpec()))


def to_host(tree, layout: RunLayout):
    """Per-run arrays as host numpy arrays (typed keys stay JAX arrays), on every process.

    Distributed layouts gather with one all-gather over the mesh (a collective: every process
    must call this at the same point).
    """
    def host(x):
        return x if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else np.asarray(x)

    if not layout.distributed:
        return jax.tree.map(host, tree)
    if not jax.tree.leaves(tree):
        return tree
    return jax.tree.map(lambda x: host(x.addressable_data(0)), _replicate(layout.mesh)(tree))


def _broadcast_bytes(data: bytes | None, failed: bool = False) -> bytes | None:
    """Process 0's `data` on every process (None: process 0 had nothing to send).

    Raises on every process if process 0 `failed`, so none waits in a later collective.
    """
    size = -2 if failed else -1 if data is None else len(data)
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(size, np.int32)))
    if size == -2:
        raise RuntimeError("process 0 could not read the checkpoint (see its error)")
    if size < 0:
        return None
    payload = np.frombuffer(data, np.uint8) if jax.process_index() == 0 else np.zeros(size, np.uint8)
    return multihost_utils.broadcast_one_to_all(payload).tobytes()


def _read_checkpoint(path: str, layout: RunLayout):
    """(arrays, meta) of the checkpoint at `path`, or None if there is none.

    Distributed: process 0 reads the file and broadcasts its bytes, so every process resumes
    from the same checkpoint and `path` need exist only on process 0's host.
    """
    if not layout.distributed:
        return ckpt.load_checkpoint(path) if os.path.exists(path) else None
    data, error = None, None
    if jax.process_index() == 0 and os.path.exists(path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            error = e
    try:
        data = _broadcast_bytes(data, failed=error is not None)
    except RuntimeError:
        if error is not None:
            raise error from None
        raise
    return None if data is None else ckpt.load_checkpoint(io.BytesIO(data))


def _compiled(program: Program, layout: RunLayout, what: str, static: tuple = ()):
    """jit-compiled (and, for sweeps, batched and sharded) entry points, cached on the program."""
    cache_key = (layout.batched, layout.vectorize, layout.mesh, what, static)
    if cache_key not in program.cache:
        program.cache[cache_key] = _build(program, layout, what, static)
    return program.cache[cache_key]


def _per_run(fn: Callable, n_mapped: int, vectorize: str) -> Callable:
    """Map `fn` over the leading axis of its first `n_mapped` arguments; the rest broadcast."""

    def run(*args):
        mapped, shared = args[:n_mapped], args[n_mapped:]
        if vectorize == "vmap":
            return jax.vmap(fn, in_axes=(0,) * n_mapped + (None,) * len(shared))(*args)
        return _sequential_map(lambda m: fn(*m, *shared), mapped)

    return run


def _sequential_map(fn: Callable, xs):
    """`lax.map` whose trip count XLA cannot see, so it never unrolls the loop.

    An unrolled loop lets XLA fuse the runs' ops together, which changes float32 rounding;
    behind an optimisation barrier every run executes exactly the single-run program.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    out_shape = jax.eval_shape(fn, jax.tree.map(lambda x: x[0], xs))
    out = jax.tree.map(lambda s: jnp.zeros((n,) + s.shape, s.dtype), out_shape)
    n_opaque = jax.lax.optimization_barrier(jnp.asarray(n, jnp.int32))

    def body(carry):
        i, out = carry
        y = fn(jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), xs))
        out = jax.tree.map(lambda o, v: jax.lax.dynamic_update_index_in_dim(o, v, i, 0), out, y)
        return i + 1, out

    return jax.lax.while_loop(lambda carry: carry[0] < n_opaque, body, (jnp.zeros((), jnp.int32), out))[1]


def _build(program: Program, layout: RunLayout, what: str, static: tuple):
    if what == "init":
        fn, n_mapped, n_shared = program.init_state, 2, 0
    elif what == "final":
        fn, n_mapped, n_shared = program.final_metrics, 2, 0
    else:
        stage_idx, n_records, tail, first = static
        fn = functools.partial(program.chunk, stage_idx=stage_idx, n_records=n_records, tail=tail, first=first)
        n_mapped, n_shared = 3, 1
    if layout.batched:
        fn = _per_run(fn, n_mapped, layout.vectorize)
        if layout.mesh is not None:
            # check_vma=False: user losses and samplers need not annotate varying values (runs
            # are independent; nothing is communicated across the mesh).
            fn = jax.shard_map(fn, mesh=layout.mesh, out_specs=PartitionSpec(RUN_AXIS), check_vma=False,
                               in_specs=(PartitionSpec(RUN_AXIS),) * n_mapped + (PartitionSpec(),) * n_shared)
    donate = (0,) if what == "chunk" and jax.default_backend() != "cpu" else ()
    return jax.jit(fn, donate_argnums=donate)


def _json_default(obj):
    if isinstance(obj, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    return str(obj)


def _fingerprint(program: Program, layout: RunLayout, config: Mapping | None) -> dict:
    """What a checkpoint must match to be resumed (JSON-normalised)."""
    raw = {"program": program.describe(), "runs": layout.meta, "config": dict(config or {})}
    return json.loads(json.dumps(raw, default=_json_default, sort_keys=True))


def _fingerprint_differences(stored: dict, current: dict) -> list[str]:
    """The fingerprint entries (``section.key``) in which a checkpoint differs from this run."""
    parts = set()
    for section in set(stored) | set(current):
        a, b = stored.get(section), current.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            parts |= {f"{section}.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k)}
        elif a != b:
            parts.add(section)
    return sorted(parts)


def _check_finite(losses: np.ndarray, params_finite: np.ndarray, chunk_start: int, n_steps: int,
                  layout: RunLayout, last_ckpt: str | None, checkpointing: bool = False):
    """Raise NonFiniteLossError for the earliest non-finite loss, or for parameters that became
    non-finite in the chunk's last update (whose loss is never computed)."""
    finite = np.isfinite(losses)
    params_finite = np.asarray(params_finite, dtype=bool)
    if layout.batched:
        finite, params_finite = finite[: layout.n_real], params_finite[: layout.n_real]  # drop padding
    else:
        finite, params_finite = finite[None], params_finite[None]
    bad_loss = ~finite
    if not bad_loss.any() and params_finite.all():
        return
    if bad_loss.any():
        hits = np.argwhere(bad_loss)
        run_idx, offset = hits[np.argmin(hits[:, 1])]
        value = (losses[run_idx, offset] if layout.batched else losses[offset])
        what, step = f"non-finite training loss {value}", chunk_start + int(offset)
    else:
        run_idx = int(np.argmin(params_finite))
        what, step = "non-finite parameters", chunk_start + n_steps
    run = layout.describe_run(int(run_idx))
    if last_ckpt:
        where = f"last finite checkpoint: {last_ckpt}"
    else:
        where = "no checkpoint had been written yet" if checkpointing else "no checkpoint was written (pass out_dir=...)"
    raise NonFiniteLossError(f"{what} at step {step} for run {run}; training stopped, {where}",
                             step=step, run=run, checkpoint=last_ckpt)


def execute(
    program: Program,
    layout: RunLayout,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 1,
    progress: bool = True,
    config: Mapping | None = None,
    callback: Callable[[dict], None] | None = None,
) -> tuple[TrainState, np.ndarray, Any, float]:
    """Host loop over chunks. Returns (final state, losses, stacked records, wall seconds); the
    wall seconds of a resumed run add those of the calls that wrote its checkpoint (stored in the
    checkpoint's ``train_seconds``), so a run trained across sessions reports its whole time."""
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: must be an integer >= 1, got {checkpoint_every!r}")
    t0 = time.perf_counter()
    batched = layout.batched
    axis = 1 if batched else 0
    dataset = program.data.dataset
    fingerprint = _fingerprint(program, layout, config)
    ckpt_path = None
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        if layout.writes:
            os.makedirs(out_dir, exist_ok=True)
        ckpt_path = os.path.join(out_dir, "checkpoint.npz")
    elif resume:
        raise ValueError("resume: needs out_dir (the folder holding checkpoint.npz)")

    state = _compiled(program, layout, "init")(layout.keys, layout.hparams)
    if layout.sharding is not None:
        state = jax.device_put(state, layout.sharding)
    if layout.distributed and dataset is not None:  # replicated on every device of the mesh
        dataset = to_global(dataset, NamedSharding(layout.mesh, PartitionSpec()))
    schedule = program.chunks()
    done_chunks, losses, records = 0, [], []
    last_ckpt = None
    earlier_seconds = 0.0  # training-loop time of the calls that wrote the checkpoint (resumes add up)
    stored = _read_checkpoint(ckpt_path, layout) if resume else None
    if stored is not None:
        arrays, meta = stored
        if meta["fingerprint"] != fingerprint:
            parts = _fingerprint_differences(meta["fingerprint"], fingerprint)
            raise ValueError(f"resume: {ckpt_path} was written by a different run setup (differs in: "
                             f"{', '.join(parts) or 'layout'}); use a new out_dir or start again")
        state = ckpt.arrays_to_tree("state", arrays, state)
        state = to_global(state, layout.sharding) if layout.sharding is not None else jax.tree.map(jnp.asarray, state)
        done_chunks = meta["chunks_done"]
        earlier_seconds = float(meta.get("train_seconds", 0.0))  # absent in checkpoints before it was recorded
        if done_chunks:
            losses = [arrays["loss"]]
            record_template = jax.eval_shape(
                lambda s: _compiled(program, layout, "final")(s, layout.hparams), state
            )
            n_rec = meta["records_done"]
            template = jax.tree.map(
                lambda x: np.zeros(x.shape[:axis] + (n_rec,) + x.shape[axis:], x.dtype), record_template
            )
            records = [ckpt.arrays_to_tree("records", arrays, template)]
        last_ckpt = ckpt_path

    if out_dir is not None and layout.writes:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(fingerprint, f, indent=2, sort_keys=True)

    def save(chunks_done):
        host_state, host_keys = to_host((state, layout.keys), layout)  # collective when distributed
        if not layout.writes:
            return
        arrays = {
            **ckpt.tree_to_arrays("state", host_state),
            **ckpt.tree_to_arrays("records", _concat_records(records, axis)),
            "loss": np.concatenate(losses, axis=-1),
            "keys": ckpt.to_numpy(host_keys),
        }
        meta = {
            "fingerprint": fingerprint,
            "chunks_done": chunks_done,
            "records_done": _records_done(schedule[:chunks_done]),
            "step": int(np.max(host_state.step)),
            "train_seconds": earlier_seconds + time.perf_counter() - t0,
        }
        ckpt.save_npz(ckpt_path, arrays, meta)

    total = program.total_steps
    trained = done_chunks < len(schedule)
    steps_done = sum(n * program.record_every + t for _, n, t, _ in schedule[:done_chunks])
    bar = tqdm(total=total, initial=steps_done, unit="step", delay=2.0, disable=not (progress and layout.writes),
               dynamic_ncols=True,
               desc=f"train ×{layout.n_real}" if batched else "train")
    try:
        for i in range(done_chunks, len(schedule)):
            stage_idx, n_records, tail, _ = schedule[i]
            fn = _compiled(program, layout, "chunk", schedule[i])
            state, chunk_losses, chunk_records, params_finite = fn(state, layout.keys, layout.hparams, dataset)
            chunk_losses, chunk_records, params_finite = to_host((chunk_losses, chunk_records, params_finite), layout)
            chunk_losses = chunk_losses.astype(np.promote_types(chunk_losses.dtype, np.float32))
            n_steps = n_records * program.record_every + tail
            _check_finite(chunk_losses, params_finite, steps_done, n_steps, layout, last_ckpt,
                          checkpointing=ckpt_path is not None)
            losses.append(chunk_losses)
            records.append(chunk_records)
            steps_done += n_steps
            last = chunk_losses[..., -1]
            bar.set_postfix(stage=program.stages[stage_idx].label,
                            loss=f"{float(np.mean(last[: layout.n_real] if batched else last)):.4g}", refresh=False)
            bar.update(n_steps)
            if ckpt_path is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == len(schedule)):
                save(i + 1)
                last_ckpt = ckpt_path
            if callback is not None:
                leaf = jax.tree.leaves(state.params)[0]
                callback({"chunk": i + 1, "chunks": len(schedule), "step": steps_done, "stage": stage_idx,
                          "loss": chunk_losses, "checkpoint": last_ckpt,
                          "state_devices": sorted(d.id for d in leaf.devices())})
    finally:
        bar.close()

    final_record = to_host(_compiled(program, layout, "final")(state, layout.hparams), layout)
    records.append(jax.tree.map(lambda r: np.expand_dims(r, axis), final_record))
    if layout.distributed:  # every process returns the whole result, on its own default device
        state = jax.tree.map(jnp.asarray, to_host(state, layout))
    loss_all = np.concatenate(losses, axis=-1)
    # a call that trained nothing (a finished run resumed to re-evaluate it) reports the
    # checkpoint's training time: that of the calls that trained, up to their last save
    seconds = earlier_seconds + (time.perf_counter() - t0 if trained else 0.0)
    return state, loss_all, _concat_records(records, axis), seconds


def _records_done(chunks) -> int:
    return sum(n + (1 if t else 0) for _, n, t, _ in chunks)


def _concat_records(records: list, axis: int):
    if not records:
        return ()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis), *records)


def run_layout(
    program: Program,
    layout: RunLayout,
    *,
    seeds: tuple[int, ...],
    hparams: Mapping[str, Any],
    reshape: Callable = lambda x: x,
    out_dir: str | os.PathLike | None = None,
    **options,
) -> TrainResult:
    """Execute `layout`'s runs, give every per-run array its public shape (`reshape`), and
    write the run folder's final outputs."""
    state, loss, records, wall = execute(program, layout, out_dir=out_dir, **options)
    state = TrainState(*jax.tree.map(reshape, tuple(state)))
    result = TrainResult(
        params=state.params, state=state, loss=reshape(loss),
        metrics=jax.tree.map(reshape, records) if program.metrics is not None else None,
        record_steps=program.record_steps(), stage_starts=program.stage_starts, seeds=tuple(seeds),
        hparams={k: np.asarray(v) for k, v in hparams.items()},
        out_dir=None if out_dir is None else os.fspath(out_dir), wall_seconds=wall,
        num_devices=1 if layout.mesh is None else layout.mesh.devices.size,
    )
    if layout.writes:
        write_outputs(result.out_dir, result)
    return result
