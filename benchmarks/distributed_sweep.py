"""A sweep over several processes with ``jax.distributed`` (README, "Several hosts").

The README's engine example — Nichani's reduced model, Algorithm 1's two stages (A1, then
A2), 4 seeds × 2 learning rates, a fresh batch drawn on device every step — as one
``engine.sweep`` whose 8 runs are sharded over the global device mesh: each process trains
the runs on its own devices. Every process gets the whole result; process 0 alone writes
``--out`` (config.json, checkpoint.npz, params.npz, trajectory.npz, metrics.json) and prints
a JSON summary. ``--resume`` continues from ``--out/checkpoint.npz`` (process 0 reads it and
broadcasts it, so only process 0's host needs the folder).

On every host (same command, its own process id):

    python benchmarks/distributed_sweep.py --coordinator HOST0:1234 --num-processes N --process-id I --out runs/dist

Under Slurm, Open MPI or on a Cloud TPU slice leave out the three flags
(``jax.distributed.initialize()`` finds them). On one machine, ``--launch N`` starts N local
processes of this script (one CPU device each, coordinator on a free localhost port):

    python benchmarks/distributed_sweep.py --launch 2 --out /tmp/dist_sweep
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder (written by process 0 only)")
    parser.add_argument("--launch", type=int, default=None, metavar="N", help="start N local processes and wait")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (else auto-detected)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--steps", type=int, default=300, help="total steps (2/3 in stage A1, 1/3 in stage A2)")
    parser.add_argument("--chunk-steps", type=int, default=50, help="steps per compiled call (checkpoint granularity)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.npz")
    args = parser.parse_args(argv)
    if args.steps < 3 or args.chunk_steps < 1:
        parser.error("--steps must be >= 3 and --chunk-steps >= 1")
    return args


def launch(args) -> int:
    """Run N copies of this script on localhost, one CPU device each; the first failure stops all."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    flags.append("--xla_force_host_platform_device_count=1")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
    common = ["--out", args.out, "--steps", str(args.steps), "--chunk-steps", str(args.chunk_steps),
              "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(args.launch)] + ["--resume"] * args.resume
    procs = [subprocess.Popen([sys.executable, __file__, *common, "--process-id", str(i)], env=env)
             for i in range(args.launch)]
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    return max(p.returncode for p in procs)


def main(args) -> None:
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over gloo
    except AttributeError:  # newer jax: gloo is the only (and default) choice
        pass
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)

    import jax.numpy as jnp

    import icl_jax
    import icl_jax.engine as engine

    task = icl_jax.tree_task(icl_jax.chain_graph(9), vocab_size=5, alpha=0.1)
    T, S = task.seq_len, task.vocab_size
    causal = jnp.where(jnp.tril(jnp.ones((T, T))) > 0, 0.0, -jnp.inf)

    def loss(params, batch):
        x = jax.nn.one_hot(batch.tokens_BxT, S)
        h = jnp.einsum("ij,bjs->bis", jax.nn.softmax(params["A1"] + causal, -1), x)
        attn = jax.nn.softmax(jnp.einsum("bs,st,bjt->bj", x[:, -1], params["A2"], h), -1)
        probs = jnp.einsum("bj,bjs->bs", attn, x)
        return jnp.mean(icl_jax.cross_entropy_probs(probs, batch.label_probs_BxS, eps=1e-3))

    init = lambda key, hp: {"A1": jnp.zeros((T, T)), "A2": jnp.eye(S)}  # noqa: E731
    parent_attention = lambda p, step: jnp.diagonal(jax.nn.softmax(p["A1"] + causal, -1), -1).mean()  # noqa: E731
    s1 = 2 * args.steps // 3
    stages = [engine.Stage(s1, groups="A1", learning_rate="lr"),
              engine.Stage(args.steps - s1, groups="A2", learning_rate=1.0)]
    result = engine.sweep(loss, init, stages, engine.FreshSamples(lambda key, hp: task.sample(key, 128)),
                          seeds=4, hparams={"lr": [1.0, 10.0]}, metrics=parent_attention, record_every=50,
                          chunk_steps=args.chunk_steps, out_dir=args.out, resume=args.resume)
    if jax.process_index() == 0:
        print(json.dumps({
            "processes": jax.process_count(), "devices": result.num_devices, "runs": 8, "steps": args.steps,
            "wall_seconds": round(result.wall_seconds, 2),
            "final_loss_per_lr": result.final_loss.mean(1).tolist(),
            "parent_attention_per_lr": result.metrics[..., -1].mean(1).tolist(),
        }))


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.launch is not None:
        if ARGS.launch < 1:
            sys.exit("--launch must be >= 1")
        sys.exit(launch(ARGS))
    main(ARGS)
