"""Training-engine throughput: one seed, a vmapped 32-seed sweep, and a Python loop of seeds.

Trains a small stand-in model with ``icl_jax.engine`` — Nichani's disentangled two-layer
attention-only transformer (CatFormer, docs/models.md#catformer): S=10, T=20, heads [1,1], 5,700
parameters, zero init, last-position soft-label cross-entropy, plain constant-lr SGD, a fresh
batch of chain-graph tree-task sequences (α=0.1) drawn on device at every step — and times,
all in one process, with the same loss/init/data/stage objects throughout (so the engine's
program cache is hit):

  single          ``train(...)``, one seed (one device: a run cannot be split)
  loop            a Python loop of N single-seed ``train`` calls
  sweep_vmap      ``sweep(..., seeds=N, vectorize="vmap")``, run axis sharded over every device
  sweep_vmap_1dev the same sweep restricted to ``devices=jax.devices()[:1]``
  sweep_map       (``--with-map``) ``sweep(..., vectorize="map")`` over every device: the runs
                  of a device go one after another through the single-run program

Each path is called once with the same step count to compile and warm up (the loop shares
the single path's program and warm-up); then ``--repeats`` rounds time every path once in
turn (so slow drifts of a shared machine hit every path alike) and the best call is kept,
with the median. Reported: steps/s, seed-steps/s, process CPU time (cores busy), the load
other processes put on the machine meanwhile (Linux /proc/stat), achieved FLOP/s and the
ratios vectorisation gain = sweep_vmap_1dev / loop, multi-device gain = sweep_vmap /
sweep_vmap_1dev and target = sweep_vmap / loop (≥ 3 wanted).

FLOPs of one training step (forward + backward + SGD update of one seed on one batch; the
sampler excluded) come from XLA's cost analysis, with an analytic matmul count as fallback
and cross-check; the matmul peak is measured in the same run (best of several 2048×2048
float32 matmuls, 2n³ FLOPs; XLA's CPU runtime may spread one large matmul over several
cores, see its cores_busy). A breakdown section times the sampler and the model step alone,
one seed vs N vmapped seeds, and the model step of one seed at growing batch up to N·B (the
vmapped sweep's working set), to show where a vectorisation gain is or is not to be found.

Devices: ``--host-devices K`` sets ``XLA_FLAGS=--xla_force_host_platform_device_count=K``
before jax is imported, splitting the CPU into K XLA devices that run concurrently. The
default is ``os.cpu_count()`` (one device per core) unless XLA_FLAGS already sets the count.
The flag only affects JAX's CPU platform: on a GPU/TPU machine the default backend's devices
are used and the sweep shards over them.

Results are printed as one JSON object on stdout; progress goes to stderr.

Usage:
    python benchmarks/sweep.py [--steps 12] [--seeds 32] [--batch 1024] [--host-devices K] > bench.json
"""

import argparse
import os
import sys

from _measure import cost_flops, set_host_devices, timed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="SGD steps per run (one compiled chunk)")
    parser.add_argument("--seeds", type=int, default=32, help="seeds in the sweep and in the Python loop")
    parser.add_argument("--batch", type=int, default=1024, help="sequences per step and seed")
    parser.add_argument("--host-devices", type=int, default=None,
                        help="XLA CPU devices (default: os.cpu_count(), unless XLA_FLAGS sets the count)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds; each round times every path once (single: 5 times); best and median kept")
    parser.add_argument("--lr", type=float, default=1.0, help="constant SGD learning rate")
    parser.add_argument("--init-scale", type=float, default=0.0,
                        help="std of the normal init of A1, A2 (0: all-zero init, the official one); W starts at 0")
    parser.add_argument("--peak-reps", type=int, default=5, help="2048x2048 matmuls timed for the peak (best kept)")
    parser.add_argument("--breakdown-steps", type=int, default=2, help="steps per timed call in the breakdown")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the sampler/model breakdown")
    parser.add_argument("--with-map", action="store_true", help="also time sweep(..., vectorize='map')")
    args = parser.parse_args(argv)
    for name in ("steps", "seeds", "batch", "repeats", "peak_reps", "breakdown_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.host_devices is not None and args.host_devices < 1:
        parser.error("--host-devices must be >= 1")
    return args


if __name__ == "__main__":
    ARGS = parse_args()
    set_host_devices(ARGS.host_devices)

import json
import math
import platform
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import icl_jax
from icl_jax.engine import FreshSamples, Stage, sweep, train

# Nichani et al.'s single-parent config (docs/nichani-theory.md#official-recipes)
S, T, ALPHA, HEADS = 10, 20, 0.1, (1, 1)
PEAK_N = 2048


def log(msg):
    print(f"[sweep-bench] {msg}", file=sys.stderr, flush=True)


# ---- model: disentangled transformer (CatFormer), docs/models.md#catformer -----------------------


def param_shapes(heads=HEADS, vocab=S, seq_len=T):
    """A(ℓ): [m_ℓ, d_{ℓ-1}, d_{ℓ-1}], d_ℓ = (1 + m_ℓ)·d_{ℓ-1}, d0 = S + T; W: [d_L, S]."""
    d, shapes = vocab + seq_len, {}
    for layer, m in enumerate(heads, start=1):
        shapes[f"A{layer}"] = (m, d, d)
        d *= 1 + m
    shapes["W"] = (d, vocab)
    return shapes


def make_init(scale):
    def init(key, hparams):
        shapes = param_shapes()
        keys = jax.random.split(key, len(shapes))
        return {name: (scale * jax.random.normal(k, shape) if scale > 0 and name != "W" else jnp.zeros(shape))
                for k, (name, shape) in zip(keys, shapes.items())}

    return init


def attend(a_MxDxD, q_BxIxD, h_BxJxD, mask_IxJ=None):
    """Heads u_ij = q_iᵀ A h_j, softmax over j (mask: j ≤ i), o_i = Σ_j s_ij h_j; heads concatenated."""
    u = jnp.einsum("bid,mde,bje->bmij", q_BxIxD, a_MxDxD, h_BxJxD)
    if mask_IxJ is not None:
        u = jnp.where(mask_IxJ[None, None], u, -jnp.inf)
    o = jnp.einsum("bmij,bjd->bimd", jax.nn.softmax(u, axis=-1), h_BxJxD)
    return o.reshape(o.shape[:2] + (-1,))


def logits(params, tokens_BxT):
    """Embedding [e_x; e_i], layer 1 at every position (causal), layer 2 at the query only."""
    b, t = tokens_BxT.shape
    pos = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32)[None], (b, t, t))
    h0 = jnp.concatenate([jax.nn.one_hot(tokens_BxT, S, dtype=jnp.float32), pos], axis=-1)
    h1 = jnp.concatenate([h0, attend(params["A1"], h0, h0, jnp.tril(jnp.ones((t, t), bool)))], axis=-1)
    q = h1[:, -1:]
    h2 = jnp.concatenate([q, attend(params["A2"], q, h1)], axis=-1)[:, 0]
    return h2 @ params["W"]


def loss_fn(params, batch):
    return icl_jax.cross_entropy_logits(logits(params, batch.tokens_BxT), batch.label_probs_BxS).mean()


def analytic_flops(batch, heads=HEADS):
    """Matmul FLOPs (2·M·N·K) of one step: forward, backward, + 2 per parameter for the update.

    The backward of a matmul costs one matmul per operand that needs a cotangent: layer 1's
    operands other than A1 are the constant embedding (×2 in all), layer 2's and the readout's
    operands all depend on parameters (×3)."""
    d0, t = S + T, T
    m1, m2 = heads
    d1 = (1 + m1) * d0
    layer1 = 2 * batch * m1 * (t * d0 * d0 + 2 * t * t * d0)  # h·A1, (h·A1)·hᵀ, s·h
    layer2 = 2 * batch * m2 * (d1 * d1 + 2 * t * d1)  # q·A2, scores, s·h1 (query row only)
    readout = 2 * batch * (1 + m2) * d1 * S
    n_params = sum(math.prod(s) for s in param_shapes().values())
    return 2 * layer1 + 3 * (layer2 + readout) + 2 * n_params


def matmul_peak(devices, reps):
    """Best-of-reps FLOP/s of one 2048² float32 matmul per device (all devices concurrently)."""
    x = jax.random.normal(jax.random.key(1), (len(devices), PEAK_N, PEAK_N), jnp.float32)
    if len(devices) == 1:
        x = jax.device_put(x[0], devices[0])
        f = jax.jit(lambda a: a @ a)
    else:
        mesh = Mesh(np.asarray(devices), ("d",))
        x = jax.device_put(x, NamedSharding(mesh, PartitionSpec("d")))
        f = jax.jit(jax.shard_map(lambda a: a @ a, mesh=mesh, in_specs=PartitionSpec("d"),
                                  out_specs=PartitionSpec("d")))
    jax.block_until_ready(f(x))
    runs = [timed(lambda: f(x)) for _ in range(reps)]
    best = min(runs, key=lambda r: r.wall)
    return {"flops_per_s": 2 * PEAK_N**3 * len(devices) / best.wall, "devices": len(devices), "best_s": best.wall,
            "median_s": statistics.median(r.wall for r in runs), "cores_busy": best.cpu / best.wall,
            "other_processes_cores_busy": best.other}


def summarize(name, runs, first_s, *, steps, seeds, n_devices, flops_per_step, peak):
    """Best timed call of a path (other processes only ever slow a call down), plus the median."""
    result, wall, cpu, other = min(runs, key=lambda r: r.wall)
    losses = np.asarray(result if isinstance(result, np.ndarray) else result.final_loss).reshape(-1)
    seed_steps = steps * seeds
    out = {
        "seeds": seeds, "devices": n_devices, "steps": steps, "wall_s": wall,
        "wall_s_median": statistics.median(r.wall for r in runs), "timed_calls": len(runs), "first_call_s": first_s,
        "steps_per_s": steps / wall, "seed_steps_per_s": seed_steps / wall,
        "cpu_s": cpu, "cores_busy": cpu / wall, "other_processes_cores_busy": other,
        "flops_per_s": flops_per_step * seed_steps / wall,
        "fraction_of_peak": flops_per_step * seed_steps / wall / peak,
        "final_loss_mean": float(np.mean(losses)),
    }
    log(f"{name}: {out['seed_steps_per_s']:.1f} seed-steps/s ({out['steps_per_s']:.2f} steps/s, "
        f"{out['flops_per_s'] / 1e9:.2f} GFLOP/s, {out['cores_busy']:.2f} cores busy"
        + (f", other processes {other:.2f} cores" if other is not None else "") + ")")
    return out, losses


def breakdown(task, batch, seeds, steps, init_params):
    """Sampler-only and model-only steps (scanned, like the engine), one seed vs `seeds` vmapped
    on one device; and the model step of one seed at batch 64, 256, B and seeds·B (the last has
    the working set of the vmapped step)."""
    dev = jax.devices()[0]
    sgd = optax.sgd(1e-3)

    def sampler_scan(key):
        def body(acc, t):
            b = task.sample(jax.random.fold_in(key, t), batch)
            return acc + b.label_probs_BxS[:, 0].sum() + b.tokens_BxT[:, -1].sum(), None

        return jax.lax.scan(body, jnp.zeros(()), jnp.arange(steps))[0]

    def model_scan(params, batches):  # batches carry a leading step axis: nothing loop-invariant
        def body(p, b):
            loss, g = jax.value_and_grad(loss_fn)(p, b)
            upd, _ = sgd.update(g, sgd.init(p), p)
            return optax.apply_updates(p, upd), loss

        return jax.lax.scan(body, params, batches)

    keys = jax.device_put(jax.random.split(jax.random.key(7), seeds), dev)
    params1 = jax.device_put(init_params, dev)
    params_v = jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds,) + x.shape), params1)
    draw = jax.jit(jax.vmap(lambda k: task.sample(k, batch)))
    batches1 = draw(jax.random.split(keys[0], steps))
    batches_v = jax.vmap(lambda k: draw(jax.random.split(k, steps)))(keys)
    out = {"steps_per_call": steps, "device": str(dev)}

    def per_step(f, *xs):
        f = jax.jit(f)
        jax.block_until_ready(f(*xs))
        t = min((timed(lambda: f(*xs)) for _ in range(2)), key=lambda r: r.wall)  # best of 2
        return t.wall / steps, t.cpu / steps

    for what, single, vmapped in (
        ("sampler", (sampler_scan, keys[0]), (jax.vmap(sampler_scan), keys)),
        ("model_step", (model_scan, params1, batches1), (jax.vmap(model_scan), params_v, batches_v)),
    ):
        log(f"breakdown: {what} ...")
        (t1, c1), (tv, cv) = per_step(*single), per_step(*vmapped)
        out[what] = {"single_s_per_step": t1, f"vmap{seeds}_s_per_step": tv, "vmap_gain": seeds * t1 / tv,
                     "single_cores_busy": c1 / t1, "vmap_cores_busy": cv / tv}
    log("breakdown: model step of one seed vs batch size ...")
    # [seeds, steps, B, ...] -> [steps, seeds·B, ...]: every sequence of the vmapped sweep, one seed
    flat = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape((steps, seeds * batch) + x.shape[3:]), batches_v)
    per_seq = {}
    for b in sorted({min(64, batch), min(256, batch), batch, seeds * batch}):
        t_b, _ = per_step(model_scan, params1, jax.tree.map(lambda x, b=b: x[:, :b], flat))
        per_seq[str(b)] = t_b / b * 1e6
    out["model_step_us_per_sequence_by_batch"] = per_seq
    out["model_step_note"] = (f"one seed, no vmap: a per-sequence cost that is flat up to batch {batch} leaves no "
                              "per-step overhead for vmap to amortise; a higher cost at batch "
                              f"{seeds * batch} (the working set of the {seeds}-seed vmapped step) is a "
                              "working-set (cache) effect, not a vmap one")
    return out


# ---- main ------------------------------------------------------------------------------------------


def main(args):
    loadavg_start = os.getloadavg()
    devices = jax.devices()
    n_dev = len(devices)
    backend = jax.default_backend()
    task = icl_jax.tree_task(icl_jax.chain_graph(T - 1), vocab_size=S, alpha=ALPHA)
    assert task.seq_len == T, task.seq_len
    shapes = param_shapes()
    n_params = sum(math.prod(s) for s in shapes.values())
    assert n_params == 5700, n_params  # heads [1,1], S=10, T=20 (docs/models.md#catformer)

    batch, steps, seeds = args.batch, args.steps, args.seeds
    init = make_init(args.init_scale)
    data = FreshSamples(lambda key, hp: task.sample(key, batch))
    stages = (Stage(steps=steps, learning_rate=args.lr),)
    log(f"backend {backend}, {n_dev} device(s), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")

    # FLOPs of one training step of one seed: forward + backward + SGD update on one batch.
    params0 = init(jax.random.key(0), {})
    sgd = optax.sgd(args.lr)

    def train_step(params, opt_state, b):
        loss, g = jax.value_and_grad(loss_fn)(params, b)
        upd, opt_state = sgd.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    example = task.sample(jax.random.key(0), batch)
    xla_step = cost_flops(jax.jit(train_step).lower(params0, sgd.init(params0), example).compile())
    xla_sampler = cost_flops(jax.jit(lambda k: task.sample(k, batch)).lower(jax.random.key(0)).compile())
    analytic = analytic_flops(batch)
    flops_per_step = xla_step if xla_step is not None else analytic
    flops = {
        "per_step_per_seed": flops_per_step,
        "source": "xla_cost_analysis" if xla_step is not None else "analytic",
        "analytic_matmul_per_step_per_seed": analytic,
        "xla_cost_analysis_per_step_per_seed": xla_step,
        "covers": "one SGD step of one seed: forward + backward + update of the model on one batch "
                  f"of {batch} sequences (XLA counts matmuls as 2·M·N·K plus elementwise ops); the "
                  "per-step sampler is excluded — its work is random bits, gamma rejection loops, "
                  "GTH stationary solves and gathers, not matmul-type FLOPs",
        "sampler_xla_flops_per_step": xla_sampler,
        "sampler_note": "XLA's count for task.sample (while-loop bodies counted once); not in per_step",
    }

    log(f"matmul peak ({PEAK_N}x{PEAK_N} float32) ...")
    peak_1 = matmul_peak(devices[:1], args.peak_reps)
    peak_all = matmul_peak(devices, args.peak_reps) if n_dev > 1 else peak_1

    common = {"progress": False}

    def single():
        return train(loss_fn, init, stages, data, seed=0, **common)

    def loop():
        return np.stack([train(loss_fn, init, stages, data, seed=s, **common).final_loss for s in range(seeds)])

    def sweep_on(devs, vectorize="vmap"):
        return lambda: sweep(loss_fn, init, stages, data, seeds=seeds, devices=devs, vectorize=vectorize, **common)

    # name: (call, seeds, devices used, peak of those devices, warm-up call or None)
    plan = {
        "single": (single, 1, 1, peak_1, single),
        # the loop runs the program the single path compiled and ran: that call is its warm-up
        "loop": (loop, seeds, 1, peak_1, None),
        "sweep_vmap": (sweep_on(devices), seeds, n_dev, peak_all, "own"),
    }
    if n_dev > 1:
        plan["sweep_vmap_1dev"] = (sweep_on(devices[:1]), seeds, 1, peak_1, "own")
    if args.with_map:
        plan["sweep_map"] = (sweep_on(devices, "map"), seeds, n_dev, peak_all, "own")
    first = {}
    for name, (call, _, _, _, warm) in plan.items():
        if warm is not None:
            log(f"{name}: warm-up (compile + one run of {steps} steps) ...")
            first[name] = timed(call if warm == "own" else warm).wall
    # timed rounds, each path once per round, so slow drifts of the machine hit every path alike
    runs = {name: [] for name in plan}
    for r in range(args.repeats):
        for name, (call, *_rest) in plan.items():
            log(f"round {r + 1}/{args.repeats}: {name} ...")
            for _ in range(5 if name == "single" else 1):  # the single run is cheap: time it more
                runs[name].append(timed(call))
    paths, finals = {}, {}
    for name, (_, n_seeds, n_devs, peak, _) in plan.items():
        paths[name], finals[name] = summarize(name, runs[name], first.get(name), steps=steps, seeds=n_seeds,
                                              n_devices=n_devs, flops_per_step=flops_per_step,
                                              peak=peak["flops_per_s"])
    paths["loop"]["note"] = "warm-up = the single path's first call (same compiled program; seeds are arguments)"
    if n_dev == 1:
        paths["sweep_vmap_1dev"], finals["sweep_vmap_1dev"] = dict(paths["sweep_vmap"], note="one device: same as sweep_vmap"), finals["sweep_vmap"]
    del finals["single"]
    for name, f in finals.items():  # every path trains the same seeds: the final losses must agree
        if name != "loop":
            paths[name]["max_abs_final_loss_diff_vs_loop"] = float(np.max(np.abs(np.asarray(f).reshape(-1) - finals["loop"])))

    rate = {k: v["seed_steps_per_s"] for k, v in paths.items()}
    ratios = {
        "sweep_vmap_over_loop": rate["sweep_vmap"] / rate["loop"],
        "vectorisation_gain_sweep_vmap_1dev_over_loop": rate["sweep_vmap_1dev"] / rate["loop"],
        "multi_device_gain_sweep_vmap_over_sweep_vmap_1dev": rate["sweep_vmap"] / rate["sweep_vmap_1dev"],
        "loop_over_single": rate["loop"] / rate["single"],
    }
    if "sweep_map" in rate:
        ratios["sweep_map_over_loop"] = rate["sweep_map"] / rate["loop"]

    out = {
        "benchmark": "engine sweep throughput",
        "config": {
            "model": "Nichani disentangled transformer (CatFormer), attention-only, heads concatenated; "
                     "layer 2 and readout at the query position only",
            "vocab_size": S, "seq_len": T, "heads": list(HEADS), "param_shapes": {k: list(v) for k, v in shapes.items()},
            "n_params": n_params, "task": f"tree_task(chain_graph({T - 1}), vocab_size={S}, alpha={ALPHA})",
            "data": "FreshSamples: a fresh batch per step, drawn on device inside the compiled step",
            "loss": "soft-label cross-entropy at the query (log_softmax)",
            "optimizer": f"plain SGD, constant lr {args.lr}",
            "init": "all zero" if args.init_scale == 0 else f"A ~ {args.init_scale}·N(0,1), W = 0",
            "batch": batch, "steps": steps, "seeds": seeds,
            "timing": f"one warm-up call per path with the same step count (compile excluded), then {args.repeats} "
                      "rounds timing every path once (single: 5 times) in turn; wall_s is the best call, "
                      "wall_s_median the median",
        },
        "machine": {
            "backend": backend, "n_devices": n_dev, "devices": [str(d) for d in devices],
            "device_kind": devices[0].device_kind, "cpu_count": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "host_devices_default": "os.cpu_count() on CPU",
            "jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
            "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
            "loadavg_start": list(loadavg_start), "loadavg_end": list(os.getloadavg()),
        },
        "flops": flops,
        "peak": {"matmul": f"{PEAK_N}x{PEAK_N} float32, best of {args.peak_reps}, 2n^3 FLOPs per device",
                 "one_device": peak_1, "all_devices": peak_all,
                 "fraction_of_peak_uses": "one_device for 1-device paths, all_devices for sharded paths"},
        "paths": paths,
        "ratios": ratios,
        "target": {"ratio": "sweep_vmap_over_loop", "min": 3.0, "value": ratios["sweep_vmap_over_loop"],
                   "met": bool(ratios["sweep_vmap_over_loop"] >= 3.0), "devices": n_dev},
    }
    if not args.no_breakdown:
        out["breakdown"] = breakdown(task, batch, seeds, args.breakdown_steps, params0)
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    print(json.dumps(out, indent=2))
    log(f"sweep_vmap/loop = {ratios['sweep_vmap_over_loop']:.2f} (target >= 3: "
        f"{'met' if out['target']['met'] else 'NOT met'}); vectorisation gain "
        f"{ratios['vectorisation_gain_sweep_vmap_1dev_over_loop']:.2f}, multi-device gain "
        f"{ratios['multi_device_gain_sweep_vmap_over_sweep_vmap_1dev']:.2f} over {n_dev} device(s)")


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main(ARGS)
