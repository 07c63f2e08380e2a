"""The static description of a training run (`Program`) and the compiled step.

Inside a chunk the step is a pure function of (params, optimiser state, step):

    batch  = data.batch(...)                      # FreshSamples draws it on device here
    loss, g = value_and_grad(loss_fn)(params, batch)
    params  = params + stage.transform.update(g)  # optax, frozen groups get zero updates

Metrics `metrics(params, step)` (or `metrics(params, step, hparams)`) are recorded at the
start of every stage and every `record_every` steps within it, plus once after the last
step; the training loss (before each update) is returned for every step.

`make_program` validates a configuration before anything compiles (parameter dtypes,
stages, a scalar loss) and caches programs, so repeated `train` calls compile once.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_jax.engine.data import DataSource, check_data
from icl_jax.engine.results import TrainState
from icl_jax.engine.runs import run_keys
from icl_jax.engine.stages import LabelFn, Stage, check_stages, top_level_labels

LossFn = Callable[[Any, Any], jax.Array]


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
        init_key, _ = run_keys(key)
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
        _, data_key = run_keys(key)
        prepared = self.data.prepare(data_key, hparams, dataset)
        tx = self.stages[stage_idx].transform(hparams, self.label_fn(state.params))
        loss_fn = _stage_loss(self.loss_fn, self.stages[stage_idx].loss_kwargs)

        def step(carry, _):
            params, opt_state, t = carry
            batch = self.data.batch(prepared, data_key, t, hparams)
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
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
        dataset = self.data.dataset
        digest = hashlib.sha1()
        for leaf in jax.tree.leaves(dataset):
            digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        out = {
            "stages": [s.describe() for s in self.stages],
            "data_mode": self.data.mode,
            "dataset_sha1": digest.hexdigest() if dataset is not None else None,
            "record_every": self.record_every,
            "chunk_steps": self.chunk_records * self.record_every,
            "total_steps": self.total_steps,
            "loss_fn": getattr(self.loss_fn, "__qualname__", repr(self.loss_fn)),
        }
        if callable(getattr(self.data, "describe", None)):  # a source's own settings (batch size, ...)
            out["data_options"] = self.data.describe()
        return out


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
    _check_loss_output(loss_fn, data, params_shape, shape_key, hparams_example, stages)
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


def _stage_loss(loss_fn, loss_kwargs: tuple):
    """The loss of a stage: ``loss_fn`` with the stage's ``loss_kwargs`` (pairs) bound."""
    if not loss_kwargs:
        return loss_fn
    kw = dict(loss_kwargs)
    return lambda params, batch: loss_fn(params, batch, **kw)


def _check_loss_output(loss_fn, data, params_shape, key, hparams, stages=()) -> None:
    """Shape-check the loss (with every stage's ``loss_kwargs``) on an abstract batch, so a
    non-scalar loss or a bad keyword fails at config time, before anything trains."""
    _, data_key = run_keys(key)
    prepared = jax.eval_shape(lambda k: data.prepare(k, hparams, data.dataset), data_key)
    batch = jax.eval_shape(lambda p, k: data.batch(p, k, jnp.zeros((), jnp.int32), hparams), prepared, data_key)
    for kw in dict.fromkeys([s.loss_kwargs for s in stages] or [()]):
        out = jax.eval_shape(_stage_loss(loss_fn, kw), params_shape, batch)
        if not hasattr(out, "shape") or out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
            raise ValueError(f"loss_fn: must return a scalar float (mean over the batch), got {out}")
