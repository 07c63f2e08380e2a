"""Compiled, staged training: `lax.scan` over steps inside one compiled call per chunk.

The host touches a run only between chunks (progress bar, finiteness check, checkpoint,
callback). Inside a chunk the step is a pure function of (params, optimiser state, step):

    batch  = data.batch(...)                      # mode (a) draws it on device here
    loss, g = value_and_grad(loss_fn)(params, batch)
    params  = params + stage.transform.update(g)  # optax, frozen groups get zero updates

Metrics `metrics(params, step)` (or `metrics(params, step, hparams)`) are recorded at the
start of every stage and every `record_every` steps within it, plus once after the last
step; the training loss (before each update) is returned for every step.

`train` runs one seed; `icl_jax.engine.sweep` runs a grid of seeds × hyperparameters through
the same program under `vmap` (and shards it over devices). Both share `execute` below.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding
from tqdm.auto import tqdm

from icl_jax.engine import checkpoint as ckpt
from icl_jax.engine.data import DataSource, check_data, dataset_arg
from icl_jax.engine.stages import LabelFn, Stage, check_stages, top_level_labels

LossFn = Callable[[Any, Any], jax.Array]


class TrainState(NamedTuple):
    """Everything a run carries between steps (and between chunks / checkpoints)."""

    params: Any
    opt_states: tuple  # one optax state per stage, each fresh at its stage's start
    step: jax.Array  # int32 global step


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or ±inf; the run stops at that chunk."""

    def __init__(self, message: str, *, step: int, run: dict, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.run = run
        self.checkpoint = checkpoint


@dataclasses.dataclass
class TrainResult:
    """Outputs of `train` (no leading axes) or `sweep` (leading axes (grid, seed)).

    Attributes:
      params: final parameters.
      state: final TrainState (parameters, optimiser states, step).
      loss: training loss before every update, shape (..., total_steps).
      metrics: the metrics pytree stacked over records, leaves (..., n_records, ...); None
        when no metrics function was given.
      record_steps: global step of each record, shape (n_records,).
      stage_starts: global step at which each stage starts.
      seeds, hparams: what was run (hparams: the grid, leaves (grid,)).
      out_dir: the run folder, if any.
      wall_seconds: host wall-clock time of the training loop (compiles included).
      num_devices: devices the run axis was sharded over.
    """

    params: Any
    state: TrainState
    loss: np.ndarray
    metrics: Any
    record_steps: np.ndarray
    stage_starts: tuple[int, ...]
    seeds: tuple[int, ...]
    hparams: dict[str, np.ndarray]
    out_dir: str | None = None
    wall_seconds: float = 0.0
    num_devices: int = 1

    @property
    def final_loss(self) -> np.ndarray:
        return self.loss[..., -1]


def _is_init_fn(init) -> bool:
    """A function init(key, hparams), as opposed to fixed parameters (which may themselves be
    callable pytrees, e.g. an Equinox module): fixed parameters have array leaves."""
    leaves = jax.tree.leaves(init)
    return callable(init) and not any(isinstance(x, (jax.Array, np.ndarray, np.generic)) for x in leaves)


def _metrics_adapter(metrics: Callable | None) -> Callable | None:
    """Accept `metrics(params, step)` or `metrics(params, step, hparams)`."""
    if metrics is None:
        return None
    try:
        params = inspect.signature(metrics).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_hparams = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        takes_hparams = False
    if takes_hparams:
        return metrics
    return lambda params, step, hparams: metrics(params, step)


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """The static description of a training run: what is compiled, independent of seeds.

    Build with `make_program`; `train` and `sweep` do it for you.
    """

    loss_fn: LossFn
    init: Any  # callable init(key, hparams) -> params, or a fixed params pytree
    stages: tuple[Stage, ...]
    data: DataSource
    metrics: Callable | None
    label_fn: LabelFn
    record_every: int
    chunk_records: int
    cache: dict = dataclasses.field(default_factory=dict, repr=False)

    # ---- pure per-run functions (vmapped by sweeps) -------------------------------------------
    def init_params(self, key, hparams):
        init_key, _ = jax.random.split(key)
        if _is_init_fn(self.init):
            return self.init(init_key, hparams)
        return jax.tree.map(jnp.asarray, self.init)

    def init_state(self, key, hparams) -> TrainState:
        params = self.init_params(key, hparams)
        labels = self.label_fn(params)
        opt_states = tuple(stage.transform(hparams, labels).init(params) for stage in self.stages)
        return TrainState(params, opt_states, jnp.zeros((), jnp.int32))

    def chunk(self, state: TrainState, key, hparams, dataset, *, stage_idx: int, n_records: int, tail: int,
              first: bool):
        """Run `n_records` blocks of `record_every` steps, then a recorded block of `tail` steps.

        On a stage's first chunk (`first`) its optimiser state is initialised from the current
        parameters, so optimisers whose state holds parameters start where the stage starts.
        """
        _, data_key = jax.random.split(key)
        prepared = self.data.prepare(data_key, hparams, dataset)
        tx = self.stages[stage_idx].transform(hparams, self.label_fn(state.params))

        def step(carry, _):
            params, opt_state, t = carry
            batch = self.data.batch(prepared, data_key, t, hparams)
            loss, grads = jax.value_and_grad(self.loss_fn)(params, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, t + 1), loss

        def block(length):
            def run(carry, _):
                record = self.metrics(carry[0], carry[2], hparams) if self.metrics is not None else ()
                carry, losses = jax.lax.scan(step, carry, None, length=length)
                return carry, (record, losses)

            return run

        opt_state = tx.init(state.params) if first else state.opt_states[stage_idx]
        carry = (state.params, opt_state, state.step)
        carry, (records, losses) = jax.lax.scan(block(self.record_every), carry, None, length=n_records)
        losses = losses.reshape(-1)
        if tail:
            carry, (tail_record, tail_losses) = block(tail)(carry, None)
            records = jax.tree.map(lambda r, t: jnp.concatenate([r, t[None]]), records, tail_record)
            losses = jnp.concatenate([losses, tail_losses])
        opt_states = state.opt_states[:stage_idx] + (carry[1],) + state.opt_states[stage_idx + 1 :]
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(carry[0])]))
        return TrainState(carry[0], opt_states, carry[2]), losses, records, finite

    def final_metrics(self, state: TrainState, hparams):
        return self.metrics(state.params, state.step, hparams) if self.metrics is not None else ()

    # ---- static layout ---------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def stage_starts(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.cumsum([0] + [s.steps for s in self.stages])[:-1])

    def chunks(self) -> list[tuple[int, int, int, bool]]:
        """The host-side chunk schedule: (stage_idx, n_records, tail, first) in execution order."""
        out = []
        for idx, stage in enumerate(self.stages):
            full, tail = divmod(stage.steps, self.record_every)
            first = True
            while full > self.chunk_records:
                out.append((idx, self.chunk_records, 0, first))
                full -= self.chunk_records
                first = False
            out.append((idx, full, tail, first))
        return out

    def record_steps(self) -> np.ndarray:
        steps = []
        for start, stage in zip(self.stage_starts, self.stages):
            steps.extend(range(start, start + stage.steps, self.record_every))
        steps.append(self.total_steps)
        return np.asarray(steps, dtype=np.int64)

    def describe(self) -> dict:
        dataset = dataset_arg(self.data)
        digest = hashlib.sha1()
        for leaf in jax.tree.leaves(dataset):
            digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        return {
            "stages": [s.describe() for s in self.stages],
            "data_mode": self.data.mode,
            "dataset_sha1": digest.hexdigest() if dataset is not None else None,
            "record_every": self.record_every,
            "chunk_steps": self.chunk_records * self.record_every,
            "total_steps": self.total_steps,
            "loss_fn": getattr(self.loss_fn, "__qualname__", repr(self.loss_fn)),
        }


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_PROGRAM_CACHE_SIZE = 16


def make_program(
    loss_fn: LossFn,
    init,
    stages: Sequence[Stage],
    data: DataSource,
    *,
    metrics: Callable | None = None,
    label_fn: LabelFn = top_level_labels,
    record_every: int = 1,
    chunk_steps: int | None = None,
    hparams_example: Mapping[str, Any] | None = None,
) -> Program:
    """Validate a training configuration (at config time, before anything compiles).

    Programs are cached on the identity of their ingredients (same loss, init, data objects,
    equal stages and options), so a Python loop calling `train` with the same objects compiles
    once.
    """
    cache_key = None
    if _is_init_fn(init):  # a parameter pytree may be mutated in place: never cache on it
        cache_key = (loss_fn, init, data, tuple(stages), metrics, label_fn, record_every, chunk_steps,
                     tuple(sorted(hparams_example or {})))
    try:
        if cache_key is not None and cache_key in _PROGRAMS:
            _PROGRAMS.move_to_end(cache_key)
            return _PROGRAMS[cache_key]
    except TypeError:  # an unhashable ingredient: no caching
        cache_key = None
    program = _make_program(loss_fn, init, stages, data, metrics=metrics, label_fn=label_fn,
                            record_every=record_every, chunk_steps=chunk_steps, hparams_example=hparams_example)
    if cache_key is not None:
        _PROGRAMS[cache_key] = program
        if len(_PROGRAMS) > _PROGRAM_CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    return program


def _make_program(
    loss_fn: LossFn,
    init,
    stages: Sequence[Stage],
    data: DataSource,
    *,
    metrics: Callable | None,
    label_fn: LabelFn,
    record_every: int,
    chunk_steps: int | None,
    hparams_example: Mapping[str, Any] | None,
) -> Program:
    if not callable(loss_fn):
        raise ValueError("loss_fn: must be a callable loss(params, batch) -> scalar")
    data = check_data(data)
    if not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every: must be an integer >= 1, got {record_every!r}")
    hparams_example = dict(hparams_example or {})
    shape_key = jax.random.key(0)
    params_shape = (
        jax.eval_shape(init, shape_key, hparams_example) if _is_init_fn(init) else jax.tree.map(jnp.asarray, init)
    )
    for path, leaf in jax.tree_util.tree_flatten_with_path(params_shape)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)}: has dtype {leaf.dtype}; every parameter is differentiated, "
                "so keep integer data in the batch or close over it in the loss"
            )
    stages = check_stages(stages, params_shape, label_fn, tuple(hparams_example))
    _check_loss_output(loss_fn, data, params_shape, shape_key, hparams_example)
    total = sum(s.steps for s in stages)
    if chunk_steps is None:
        chunk_steps = max(1024, -(-total // 64))
    if not isinstance(chunk_steps, int) or chunk_steps < 1:
        raise ValueError(f"chunk_steps: must be an integer >= 1, got {chunk_steps!r}")
    return Program(
        loss_fn=loss_fn,
        init=init,
        stages=stages,
        data=data,
        metrics=_metrics_adapter(metrics),
        label_fn=label_fn,
        record_every=record_every,
        chunk_records=max(1, chunk_steps // record_every),
    )


def _check_loss_output(loss_fn, data, params_shape, key, hparams) -> None:
    """Shape-check the loss on an abstract batch, so a non-scalar loss fails at config time."""
    _, data_key = jax.random.split(key)
    prepared = jax.eval_shape(lambda k: data.prepare(k, hparams, dataset_arg(data)), data_key)
    batch = jax.eval_shape(lambda p, k: data.batch(p, k, jnp.zeros((), jnp.int32), hparams), prepared, data_key)
    out = jax.eval_shape(loss_fn, params_shape, batch)
    if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"loss_fn: must return a scalar float (mean over the batch), got {out}")


# ---- execution (shared by train and sweep) ------------------------------------------------------


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


def _check_finite(losses: np.ndarray, params_finite: np.ndarray, chunk_start: int, n_steps: int,
                  layout: RunLayout, last_ckpt: str | None):
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
    where = f"last finite checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written (pass out_dir=...)"
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
    """Host loop over chunks. Returns (final state, losses, stacked records, wall seconds)."""
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: must be an integer >= 1, got {checkpoint_every!r}")
    t0 = time.perf_counter()
    batched = layout.batched
    axis = 1 if batched else 0
    dataset = dataset_arg(program.data)
    fingerprint = _fingerprint(program, layout, config)
    ckpt_path = None
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        ckpt_path = os.path.join(out_dir, "checkpoint.npz")
    elif resume:
        raise ValueError("resume: needs out_dir (the folder holding checkpoint.npz)")

    state = _compiled(program, layout, "init")(layout.keys, layout.hparams)
    if layout.sharding is not None:
        state = jax.device_put(state, layout.sharding)
    schedule = program.chunks()
    done_chunks, losses, records = 0, [], []
    last_ckpt = None
    if resume and os.path.exists(ckpt_path):
        arrays, meta = ckpt.load_checkpoint(ckpt_path)
        if meta["fingerprint"] != fingerprint:
            raise ValueError(f"resume: {ckpt_path} was written by a different configuration; use a new out_dir")
        state = ckpt.arrays_to_tree("state", arrays, state)
        state = jax.device_put(state, layout.sharding) if layout.sharding is not None else jax.tree.map(jnp.asarray, state)
        done_chunks = meta["chunks_done"]
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

    if out_dir is not None:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(fingerprint, f, indent=2, sort_keys=True)

    def save(chunks_done):
        arrays = {
            **ckpt.tree_to_arrays("state", state),
            **ckpt.tree_to_arrays("records", _concat_records(records, axis)),
            "loss": np.concatenate(losses, axis=-1),
            "keys": ckpt.to_numpy(layout.keys),
        }
        meta = {
            "fingerprint": fingerprint,
            "chunks_done": chunks_done,
            "records_done": _records_done(schedule[:chunks_done]),
            "step": int(np.max(np.asarray(state.step))),
        }
        ckpt.save_npz(ckpt_path, arrays, meta)

    total = program.total_steps
    steps_done = sum(n * program.record_every + t for _, n, t, _ in schedule[:done_chunks])
    bar = tqdm(total=total, initial=steps_done, unit="step", delay=2.0, disable=not progress, dynamic_ncols=True,
               desc=f"train ×{layout.n_real}" if batched else "train")
    try:
        for i in range(done_chunks, len(schedule)):
            stage_idx, n_records, tail, _ = schedule[i]
            fn = _compiled(program, layout, "chunk", schedule[i])
            state, chunk_losses, chunk_records, params_finite = fn(state, layout.keys, layout.hparams, dataset)
            chunk_losses = np.asarray(chunk_losses)
            chunk_losses = chunk_losses.astype(np.promote_types(chunk_losses.dtype, np.float32))
            n_steps = n_records * program.record_every + tail
            _check_finite(chunk_losses, np.asarray(params_finite), steps_done, n_steps, layout, last_ckpt)
            losses.append(chunk_losses)
            records.append(jax.tree.map(np.asarray, chunk_records))
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

    final_record = jax.tree.map(np.asarray, _compiled(program, layout, "final")(state, layout.hparams))
    records.append(jax.tree.map(lambda r: np.expand_dims(r, axis), final_record))
    loss_all = np.concatenate(losses, axis=-1)
    return state, loss_all, _concat_records(records, axis), time.perf_counter() - t0


def _records_done(chunks) -> int:
    return sum(n + (1 if t else 0) for _, n, t, _ in chunks)


def _concat_records(records: list, axis: int):
    if not records:
        return ()
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=axis), *records)


def write_outputs(out_dir, result: TrainResult) -> None:
    """Final outputs of a run folder: params.npz, trajectory.npz and metrics.json."""
    if out_dir is None:
        return
    params_arrays = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(result.params)[0]}
    np.savez(os.path.join(out_dir, "params.npz"), **params_arrays)
    traj = {"loss": result.loss, "record_steps": result.record_steps}
    if result.metrics is not None:
        for p, x in jax.tree_util.tree_flatten_with_path(result.metrics)[0]:
            traj["metrics" + jax.tree_util.keystr(p)] = np.asarray(x)
    np.savez(os.path.join(out_dir, "trajectory.npz"), **traj)
    summary = {
        "total_steps": int(result.record_steps[-1]),
        "final_loss": np.asarray(result.final_loss).tolist(),
        "seeds": list(result.seeds),
        "hparams": {k: np.asarray(v).tolist() for k, v in result.hparams.items()},
        "wall_seconds": result.wall_seconds,
        "stage_starts": list(result.stage_starts),
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)


def numeric_hparam(name: str, value) -> jax.Array:
    """A hyperparameter as a JAX array; only numbers and booleans can be sweep leaves."""
    try:
        arr = jnp.asarray(value)
    except TypeError:
        raise ValueError(f"hparams[{name!r}]: must be numeric, got {value!r}") from None
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise ValueError(f"hparams[{name!r}]: must be numeric, got dtype {arr.dtype}")
    return arr


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
    write_outputs(result.out_dir, result)
    return result


def _scalar_hparams(hparams: Mapping | None) -> dict[str, jax.Array]:
    out = {}
    for name, value in (hparams or {}).items():
        arr = numeric_hparam(name, value)
        if arr.ndim != 0:
            raise ValueError(
                f"hparams[{name!r}]: a single run takes scalar hyperparameters, got shape {arr.shape}; "
                "use icl_jax.engine.sweep for a grid"
            )
        out[name] = arr
    return out


def train(
    loss_fn: LossFn,
    init,
    stages: Sequence[Stage],
    data: DataSource,
    *,
    seed: int = 0,
    hparams: Mapping[str, Any] | None = None,
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
    """Train one run (one seed, scalar hyperparameters).

    Args:
      loss_fn: pure `loss(params, batch) -> scalar`.
      init: `init(key, hparams) -> params`, or a fixed parameter pytree.
      stages: list of `Stage`s run in order.
      data: `FreshSamples`, `FixedDataset` or `CommonSamples`.
      seed: the run's key is `jax.random.key(seed)`, split into (init key, data key); a sweep
        member with the same seed and hyperparameters reproduces this run.
      hparams: scalar hyperparameters, referenced by name from stages / init / samplers.
      metrics: `metrics(params, step)` or `metrics(params, step, hparams)` → pytree, recorded at
        each stage start, every `record_every` steps, and after the last step.
      chunk_steps: steps per compiled call (the host's granularity for progress/checkpoints).
      out_dir: run folder: config.json, checkpoint.npz (every `checkpoint_every` chunks),
        params.npz, trajectory.npz, metrics.json.
      resume: continue from `out_dir/checkpoint.npz` if present (bit-identical to an
        uninterrupted run).
      progress: show a tqdm bar (appears only for runs longer than ~2 s).
      callback: called on the host after every chunk with a dict (chunk, step, loss, ...).

    Raises:
      NonFiniteLossError: a loss went NaN/inf (reports step, run and last finite checkpoint).
    """
    hp = _scalar_hparams(hparams)
    program = make_program(loss_fn, init, stages, data, metrics=metrics, label_fn=label_fn,
                           record_every=record_every, chunk_steps=chunk_steps, hparams_example=hp)
    seed = int(seed)
    layout = RunLayout(
        keys=jax.random.key(seed), hparams=hp, batched=False, n_real=1,
        describe_run=lambda i: {"seed": seed, **{k: float(v) for k, v in hp.items()}},
        meta={"seeds": [seed], "hparams": {k: np.asarray(v).tolist() for k, v in hp.items()}},
    )
    return run_layout(program, layout, seeds=(seed,), hparams=hp, out_dir=out_dir, resume=resume,
                      checkpoint_every=checkpoint_every, progress=progress, config=config, callback=callback)
