"""True gradient flow dθ/dt = −∇L(θ) by ODE integration (diffrax), staged like training.

Time follows the neural-tangents convention t = η·steps, so a `Stage(steps=n,
learning_rate=η)` of plain SGD is the explicit-Euler discretisation, with step η, of the flow
over a time n·η; `refine_stages` shrinks η at fixed time ("gradient descent with small steps")
and `gradient_flow` integrates the limit with adaptive Tsit5 + a PID step-size controller
(docs/engine.md#time-convention). In a stage only its groups move; the others have zero velocity.

The loss must be deterministic: pass a fixed batch (data modes (b)/(c)) or an exact /
enumerated population loss, never a resampling one.

`gradient_flow_fn` returns the pure, jit/vmap-able solver (vmap it over initial parameters
or batches for seed sweeps; adaptive steps then run until the slowest member finishes);
`gradient_flow` runs it on the host and checks the solve.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icl_jax.engine.stages import LabelFn, Stage, flow_duration, group_names, top_level_labels

# diffrax is imported inside the functions that integrate, so `import icl_jax.engine` stays light.
_SOLVERS = {"tsit5": "Tsit5", "dopri5": "Dopri5", "dopri8": "Dopri8", "euler": "Euler", "heun": "Heun"}


@dataclasses.dataclass
class FlowResult:
    """Parameters along the flow at the save times.

    Attributes:
      ts: save times, shape (n_save,).
      params: parameter pytree with a leading (n_save,) axis.
      loss: L(θ(t)) at the save times.
      metrics: `metrics(params, t)` stacked over save times, or None.
      num_steps: accepted + rejected solver steps per stage.
      stage_times: (start, end) flow time of each stage.
    """

    ts: np.ndarray
    params: Any
    loss: np.ndarray
    metrics: Any
    num_steps: tuple[int, ...]
    stage_times: tuple[tuple[float, float], ...]


def _flow_stages(stages) -> tuple[tuple[tuple[str, ...] | None, float, float], ...]:
    if isinstance(stages, (int, float)):
        stages = [(None, float(stages))]
    else:
        for i, s in enumerate(stages):
            if isinstance(s, Stage) and s.loss_kwargs:
                raise ValueError(f"stages[{i}].loss_kwargs: the gradient flow integrates one loss; bind the keywords "
                                 "into loss_fn instead")
        stages = [(s.groups, flow_duration(s)) if isinstance(s, Stage) else tuple(s) for s in stages]
    if not stages:
        raise ValueError("stages: need a duration or at least one Stage")
    out, t = [], 0.0
    for i, (groups, duration) in enumerate(stages):
        if not duration > 0:
            raise ValueError(f"stages[{i}]: the flow time must be > 0, got {duration!r}")
        out.append((groups, t, t + float(duration)))
        t += float(duration)
    return tuple(out)


def _save_times(ts, total: float) -> np.ndarray:
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"ts: needs a non-empty 1-D array of save times, got shape {ts.shape}")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("ts: save times must be strictly increasing")
    if ts[0] < 0 or ts[-1] > total * (1 + 1e-9):
        raise ValueError(f"ts: save times must lie in [0, {total}] (the stages' total flow time), got [{ts[0]}, {ts[-1]}]")
    return ts


def gradient_flow_fn(
    loss_fn: Callable[[Any, Any], jax.Array],
    stages: Sequence[Stage] | float,
    ts,
    params_example,
    *,
    label_fn: LabelFn = top_level_labels,
    solver: str = "tsit5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    dt0: float | None = None,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    max_steps: int = 2**20,
    progress: bool = False,
) -> Callable[[Any, Any], tuple[Any, jax.Array, jax.Array]]:
    """Build the pure solver `flow(params0, batch) -> (params at ts, steps per stage, ok)`.

    Args:
      stages: Stages (plain constant-lr SGD; their flow time is η·steps and only their groups
        move), or one float: the total time with every group moving.
      ts: save times in [0, total time]; the state at a stage's end is exact (not interpolated).
      solver: "tsit5" (default, adaptive with a PIDController(rtol, atol, pcoeff, icoeff,
        dcoeff)), "dopri5", "dopri8", "heun", or "euler" (constant step `dt0`; explicit Euler
        with dt0 = η is plain gradient descent with learning rate η).
    """
    import diffrax

    if solver not in _SOLVERS:
        raise ValueError(f"solver: must be one of {sorted(_SOLVERS)}, got {solver!r}")
    flow_stages = _flow_stages(stages)
    groups_all = group_names(params_example, label_fn)
    for i, (groups, _, _) in enumerate(flow_stages):
        unknown = [g for g in (groups or ()) if g not in groups_all]
        if unknown:
            raise ValueError(f"stages[{i}].groups: unknown parameter group(s) {unknown}; the parameters have {list(groups_all)}")
    total = flow_stages[-1][2]
    tol = 1e-9 * total
    ts = _save_times(ts, total)
    constant = solver in ("euler",)
    if constant and (dt0 is None or not dt0 > 0):
        raise ValueError(f"dt0: the constant-step solver {solver!r} needs dt0 > 0, got {dt0!r}")
    if not max_steps >= 1:
        raise ValueError(f"max_steps: must be >= 1, got {max_steps!r}")
    labels = label_fn(params_example)
    controller = (
        diffrax.ConstantStepSize() if constant
        else diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff)
    )
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    solver_cls = getattr(diffrax, _SOLVERS[solver])
    grad_fn = jax.grad(loss_fn)

    def velocity(moving):
        def field(t, params, batch):
            grads = grad_fn(params, batch)
            return jax.tree.map(lambda g, name: -g if (moving is None or name in moving) else jnp.zeros_like(g),
                                grads, labels)
        return diffrax.ODETerm(field)

    def flow(params0, batch):
        saved = [jax.tree.map(lambda x: x[None], params0)] if ts[0] <= tol else []
        steps, ok = [], jnp.asarray(True)
        y = params0
        for groups, t_start, t_end in flow_stages:
            # Times within `tol` of a stage boundary are that boundary (the exact state there),
            # so η·steps summed in floats (0.1·3 = 0.30000000000000004) never saves a time twice.
            inner = ts[(ts > t_start + tol) & (ts < t_end - tol)]
            saveat = diffrax.SaveAt(ts=jnp.asarray(inner, jnp.float32) if inner.size else None, t1=True)
            sol = diffrax.diffeqsolve(
                velocity(None if groups is None else set(groups)), solver_cls(), t_start, t_end,
                dt0, y, args=batch, saveat=saveat, stepsize_controller=controller, max_steps=max_steps,
                throw=False, progress_meter=meter,
            )
            y = jax.tree.map(lambda x: x[-1], sol.ys)
            keep = inner.size + (1 if np.any(np.abs(ts - t_end) <= tol) else 0)
            saved.append(jax.tree.map(lambda x: x[:keep], sol.ys))
            steps.append(sol.stats["num_steps"])
            ok = ok & (sol.result == diffrax.RESULTS.successful)
        stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *saved)
        return stacked, jnp.stack(steps), ok

    flow.ts = ts
    flow.stage_times = tuple((a, b) for _, a, b in flow_stages)
    return flow


_FLOWS: dict = {}


def _cached_flow(loss_fn, stages, ts, params0, progress, options):
    """Compile once per (loss, stages, save times, parameter shapes, options)."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), params0)
    try:
        key = (loss_fn, stages if isinstance(stages, (int, float)) else tuple(stages),
               tuple(np.asarray(ts, np.float64).tolist()), jax.tree.structure(shapes),
               tuple((s.shape, str(s.dtype)) for s in jax.tree.leaves(shapes)), progress,
               tuple(sorted(options.items())))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _FLOWS:
        return _FLOWS[key]
    flow = gradient_flow_fn(loss_fn, stages, ts, params0, progress=progress, **options)
    entry = (flow, jax.jit(flow))
    if key is not None:
        if len(_FLOWS) >= 16:
            _FLOWS.pop(next(iter(_FLOWS)))
        _FLOWS[key] = entry
    return entry


@functools.lru_cache(maxsize=16)
def _batched_loss(loss_fn):
    return jax.jit(jax.vmap(loss_fn, in_axes=(0, None)))


def gradient_flow(
    loss_fn: Callable[[Any, Any], jax.Array],
    params0,
    batch,
    stages: Sequence[Stage] | float,
    *,
    ts=None,
    num_saves: int = 101,
    metrics: Callable | None = None,
    progress: bool = False,
    **solver_options,
) -> FlowResult:
    """Integrate the gradient flow of `loss_fn(·, batch)` from `params0` and check the solve.

    Args:
      ts: save times (default: `num_saves` equally spaced times over the whole flow).
      metrics: `metrics(params, t)` evaluated at every save time.
      **solver_options: solver, rtol, atol, dt0, pcoeff, icoeff, dcoeff, max_steps, label_fn
        (see `gradient_flow_fn`).

    Raises:
      RuntimeError: the solver failed (e.g. hit max_steps) or the flow went non-finite.
    """
    total = _flow_stages(stages)[-1][2]
    if ts is None:
        ts = np.linspace(0.0, total, num_saves)
    flow, run = _cached_flow(loss_fn, stages, ts, params0, progress, solver_options)
    params_t, steps, ok = run(params0, batch)
    if not bool(ok):
        raise RuntimeError(
            f"gradient_flow: the ODE solver did not finish (steps per stage {np.asarray(steps).tolist()}, "
            f"max_steps={solver_options.get('max_steps', 2**20)}); raise max_steps or loosen rtol/atol"
        )
    loss_t = np.asarray(_batched_loss(loss_fn)(params_t, batch))
    if not np.all(np.isfinite(loss_t)):
        first = int(np.argmin(np.isfinite(loss_t)))
        raise RuntimeError(f"gradient_flow: non-finite loss {loss_t[first]} at t = {flow.ts[first]}")
    records = None
    if metrics is not None:
        records = jax.tree.map(np.asarray, jax.jit(jax.vmap(metrics))(params_t, jnp.asarray(flow.ts, jnp.float32)))
    return FlowResult(ts=flow.ts, params=params_t, loss=loss_t, metrics=records,
                      num_steps=tuple(int(s) for s in np.asarray(steps)), stage_times=flow.stage_times)
