"""A sweep over two processes (`jax.distributed`, CPU collectives over gloo) equals the same
sweep in one process, and only process 0 writes the run folder.

Two worker processes on localhost, one CPU device each, form a global mesh of two devices;
each runs this module's `WORKER` (which imports the problem below after
`jax.distributed.initialize`). The test process runs the same sweeps alone meanwhile.
Each worker is given its own run folder (`.../p<process id>`): process 1's folder must never
appear, which also shows that resuming does not need the checkpoint on process 1's host
(process 0 reads it and broadcasts it).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np

import icl_jax.engine as E

D = 3
W_TRUE = np.linspace(-1.0, 1.0, D, dtype=np.float32)  # numpy: importing this module touches no device


def quad_loss(params, batch):
    x_BxD, y_B = batch
    return jnp.mean((x_BxD @ params["w"] + params["b"] - y_B) ** 2)


def quad_init(key, hp):
    return {"w": hp["scale"] * jax.random.normal(key, (D,)), "b": jnp.zeros(())}


def quad_sample(key, hp):
    kx, kn = jax.random.split(key)
    x_BxD = jax.random.normal(kx, (16, D))
    return x_BxD, x_BxD @ W_TRUE + 0.1 * jax.random.normal(kn, (16,))


def quad_metrics(params, step):
    return {"w_err": jnp.linalg.norm(params["w"] - W_TRUE), "step": step}


DATA = E.FreshSamples(quad_sample)  # one object, so every sweep below reuses one program
STAGES = (E.Stage(10, learning_rate="lr"), E.Stage(10, groups="w", learning_rate=0.05, optimizer="adam"))
OUT_FILES = {"config.json", "checkpoint.npz", "params.npz", "trajectory.npz", "metrics.json"}


class Interrupt(Exception):
    pass


def run_sweeps(root: str, tag: str, devices=None) -> dict:
    """The sweeps both sides run: exact ("map") with a run folder, interrupted + resumed, and
    vmapped. Returns flat arrays to compare, plus what the callbacks saw."""
    kw = dict(seeds=[3, 11], hparams={"lr": [0.05, 0.1], "scale": [0.5, 1.0]}, metrics=quad_metrics,
              record_every=5, chunk_steps=10, devices=devices, progress=False)
    seen = []
    full = E.sweep(quad_loss, quad_init, STAGES, DATA, vectorize="map", out_dir=os.path.join(root, "full", tag),
                   callback=lambda info: seen.append(info["state_devices"]), **kw)

    def stop_after_one(info):
        if info["chunk"] == 1:
            raise Interrupt

    resume_dir = os.path.join(root, "resume", tag)
    try:
        E.sweep(quad_loss, quad_init, STAGES, DATA, vectorize="map", out_dir=resume_dir, callback=stop_after_one, **kw)
        raise AssertionError("the callback did not interrupt the sweep")
    except Interrupt:
        pass
    resumed_chunks = []
    resumed = E.sweep(quad_loss, quad_init, STAGES, DATA, vectorize="map", out_dir=resume_dir, resume=True,
                      callback=lambda info: resumed_chunks.append(info["chunk"]), **kw)
    vmapped = E.sweep(quad_loss, quad_init, STAGES, DATA, vectorize="vmap", **kw)
    out = {}
    for name, res in (("full", full), ("resumed", resumed), ("vmap", vmapped)):
        tree = {"loss": res.loss, "params": res.params, "metrics": res.metrics, "opt_states": res.state.opt_states}
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[name + jax.tree_util.keystr(path)] = np.asarray(leaf)
    out["state_devices"] = np.asarray(seen)
    out["chunks_after_resume"] = np.asarray(resumed_chunks)
    out["num_devices"] = np.asarray(full.num_devices)
    return out


WORKER = textwrap.dedent(
    """
    import os, sys
    import jax
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # jax 0.10's default too
    except AttributeError:  # a jax without the option has no other CPU collectives to choose
        pass
    pid, port, root = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=60)
    assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
    sys.path.insert(0, os.environ["TESTS_DIR"])
    import numpy as np
    from test_engine_distributed import run_sweeps
    out = run_sweeps(root, f"p{pid}")
    np.savez(os.path.join(root, f"worker{pid}.npz"), **out)  # the test's own record, outside the run folders
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_sweep_equals_one_process_and_only_process_0_writes(tmp_path):
    xla_flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                         if not f.startswith("--xla_force_host_platform_device_count"))
    env = dict(os.environ, JAX_PLATFORMS="cpu", TESTS_DIR=os.path.dirname(__file__),
               XLA_FLAGS=xla_flags + " --xla_force_host_platform_device_count=1")
    env.pop("JAX_NUM_CPU_DEVICES", None)
    port = _free_port()
    dist = tmp_path / "dist"
    dist.mkdir()
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with log.open("w") as f:  # the child keeps its own copy of the descriptor
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), str(dist)], env=env,
                                          stdout=f, stderr=subprocess.STDOUT))
    try:
        single = run_sweeps(str(tmp_path / "single"), "p0", devices=jax.devices()[:1])  # this process, meanwhile
        deadline = time.monotonic() + 240
        # A worker whose peer died waits for it until JAX's own timeouts: stop at the first failure.
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"worker {i} failed (rc {p.returncode}):\n{log.read_text()[-4000:]}"
    workers = [dict(np.load(dist / f"worker{i}.npz")) for i in range(2)]

    # The run axis really is split over both processes' devices (ids differ between processes).
    assert int(workers[0]["num_devices"]) == 2 and int(single["num_devices"]) == 1
    assert all(len(set(ids)) == 2 for ids in workers[0]["state_devices"]), workers[0]["state_devices"]
    # Every process returns the whole result.
    chex.assert_trees_all_equal(workers[0], workers[1])
    dist_out = workers[0]
    # "map" runs every run through the single-run program on whichever device holds it, so
    # the distributed sweep equals the one-process sweep bit for bit; the resumed sweep
    # continued after the checkpointed chunk 1 and equals the uninterrupted one exactly.
    np.testing.assert_array_equal(dist_out["chunks_after_resume"], [2])
    for key in single:
        if key.startswith(("full", "resumed")):
            np.testing.assert_array_equal(dist_out[key], single[key], err_msg=key)
            np.testing.assert_array_equal(dist_out[key], single[key.replace("resumed", "full", 1)], err_msg=key)
        elif key.startswith("vmap"):
            # vmap batches 2 runs per device here and 4 in one process: XLA may associate some
            # reductions differently, so only float32 rounding is guaranteed.
            np.testing.assert_allclose(dist_out[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # One set of outputs, written by process 0 only (process 1's folders never appear), with
    # the same contents as the one-process run's files.
    for kind in ("full", "resume"):
        assert set(os.listdir(dist / kind)) == {"p0"}, os.listdir(dist / kind)
        assert set(os.listdir(dist / kind / "p0")) == OUT_FILES
    for name in ("trajectory.npz", "params.npz"):
        a, b = np.load(dist / "full" / "p0" / name), np.load(tmp_path / "single" / "full" / "p0" / name)
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    dist_cfg = json.loads((dist / "full" / "p0" / "config.json").read_text())
    single_cfg = json.loads((tmp_path / "single" / "full" / "p0" / "config.json").read_text())
    assert dist_cfg["runs"]["devices"] == 2 and single_cfg["runs"]["devices"] == 1
    dist_cfg["runs"]["devices"] = 1
    assert dist_cfg == single_cfg
