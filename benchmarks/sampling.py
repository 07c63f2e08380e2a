"""Sampling throughput: icl_jax batched samplers vs a naive per-sequence sampler.

Measures sequences/second of ``TreeTask.sample`` (Nichani chain tree task, S=10,
T=20, α=0.1) and ``NGramTask.sample`` (Chen n-gram task, d=3, L=100, parent
offsets {1, 2}, α=0.1) against naive samplers written here without ``icl_jax``.
The naive samplers reproduce the official design: a ``jax.vmap`` over sequences
of a per-sequence function that draws π with ``jax.random.dirichlet``, takes the
stationary vector from an SVD (tree task), and runs a per-token
``lax.fori_loop`` that splits the key and calls ``jax.random.choice``.

For each (task, sampler, batch) the first call (compile + run) is timed as
compile time, one more call warms up, then ``reps`` calls with fresh keys are
timed with ``jax.block_until_ready``; the median is reported. Results are printed
as one JSON object on stdout and a short table on stderr.

Usage:
    python benchmarks/sampling.py [--quick] [--reps-large 3] > bench.json
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax

from icl_jax import NGramTask, tree_task

S, T, ALPHA = 10, 20, 0.1  # tree task
D, L = 3, 100  # n-gram task


def naive_tree_one(key):
    """One chain-tree sequence, official style; returns (tokens[T], label_probs[S])."""
    k1, k2, k3 = jax.random.split(key, 3)
    pi = jax.random.dirichlet(k1, jnp.full((S,), ALPHA), (S,))
    _, _, vt = jnp.linalg.svd(pi.T - jnp.eye(S))
    mu = jnp.abs(vt[-1])
    mu = mu / mu.sum()
    dag = jnp.arange(-1, T - 2)  # [-1, 0, 1, ..., T-3]

    def body(i, carry):
        x, k = carry
        k, sub = jax.random.split(k)
        p = jnp.where(dag[i] < 0, mu, pi[x[jnp.maximum(dag[i], 0)]])
        return x.at[i].set(jax.random.choice(sub, S, p=p)), k

    x, _ = lax.fori_loop(0, T - 1, body, (jnp.zeros(T, jnp.int32), k2))
    x = x.at[T - 1].set(jax.random.randint(k3, (), 0, S))
    return x, pi[x[T - 1]]


def naive_ngram_one(key):
    """One n-gram sequence, official style; returns (tokens[L], label_probs[d], label)."""
    k1, k2, k3 = jax.random.split(key, 3)
    pi = jax.random.dirichlet(k1, jnp.full((D,), ALPHA), (D * D,))
    x = jnp.zeros(L + 1, jnp.int32).at[:2].set(jax.random.choice(k2, D, (2,)))

    def body(i, carry):
        x, k = carry
        k, sub = jax.random.split(k)
        return x.at[i].set(jax.random.choice(sub, D, p=pi[x[i - 1] * D + x[i - 2]])), k

    x, _ = lax.fori_loop(2, L + 1, body, (x, k3))
    return x[:L], pi[x[L - 1] * D + x[L - 2]], x[L]


def batched(one):
    """Jitted ``(key, B) -> vmap(one)`` over B split keys, B static."""
    return jax.jit(lambda key, b: jax.vmap(one)(jax.random.split(key, b)), static_argnums=1)


def bench(fn, batch, reps, seed=0):
    """Times ``fn(key, batch)``.

    Args:
        fn: Sampler taking ``(key, batch)``.
        batch: Number of sequences per call.
        reps: Number of timed calls.
        seed: Base seed; every call uses a different key.

    Returns:
        (compile_s, median_s): time of the first call and median of the timed calls.
    """
    keys = iter(jax.random.split(jax.random.key(seed), reps + 2))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(next(keys), batch))
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(fn(next(keys), batch))  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(next(keys), batch))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def rng_floor(num_tokens):
    """A sampler drawing one uniform per token can be no faster than this call: the
    threefry cost of ``num_tokens × B`` float32 uniforms (reported so the measured
    speedup can be compared with its ceiling on this machine)."""
    return jax.jit(lambda key, b: jax.random.uniform(key, (num_tokens, b)), static_argnums=1)


def main():
    """Runs the benchmark and prints JSON (stdout) and a table (stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only batch 1024")
    parser.add_argument("--reps-large", type=int, default=3, help="timed reps at batch 65536")
    args = parser.parse_args()

    tree = tree_task("chain", vocab_size=S, seq_len=T, alpha=ALPHA)
    ngram = NGramTask(D, L, (1, 2), alpha=ALPHA)
    samplers = {
        "tree": {"ours": tree.sample, "naive": batched(naive_tree_one), "rng": rng_floor(T + 1)},
        "ngram": {"ours": ngram.sample, "naive": batched(naive_ngram_one), "rng": rng_floor(L + 1)},
    }
    sizes = [(1024, 5)] + ([] if args.quick else [(65536, args.reps_large)])

    results = []
    for task, fns in samplers.items():
        for batch, reps in sizes:
            (oc, om), (nc, nm), (_, rm) = (bench(fns[n], batch, reps) for n in ("ours", "naive", "rng"))
            row = {"task": task, "batch": batch, "ours_seq_per_s": batch / om,
                   "naive_seq_per_s": batch / nm, "speedup": nm / om, "ours_median_s": om,
                   "naive_median_s": nm, "ours_compile_s": oc, "naive_compile_s": nc,
                   "rng_floor_s": rm, "speedup_ceiling_at_rng_floor": nm / rm}
            results.append(row)
            print(f"{task:6s} B={batch:6d}  ours {row['ours_seq_per_s']:12.0f} seq/s  "
                  f"naive {row['naive_seq_per_s']:12.0f} seq/s  speedup {row['speedup']:7.1f}x  "
                  f"(one-uniform-per-token ceiling {row['speedup_ceiling_at_rng_floor']:.0f}x)",
                  file=sys.stderr)

    out = {
        "machine": {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "cpu_count": os.cpu_count(), "jax": jax.__version__},
        "results": results,
        "target": {"batch": 65536, "min_speedup": 30},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
