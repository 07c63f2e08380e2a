"""Test configuration: headless plotting, strict rank promotion, fixed seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite is dominated by XLA:CPU compile time of small programs, most of it LLVM's
# backend optimisation passes, which buy little at test sizes (suite: 377 s -> 273 s).
# Must be set before the backend initialises; a level the caller sets in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


def _adopt_xla_flag(flag: str) -> None:
    """Append `flag` to XLA_FLAGS if this jaxlib knows it. XLA aborts the process on an unknown
    flag, so a child process tries it first (about 1.5 s, once: the xdist workers and the
    subprocesses the tests start inherit the result through the environment)."""
    import subprocess
    import sys

    name = flag.split("=")[0].lstrip("-")
    if name in os.environ.get("XLA_FLAGS", "") or os.environ.get("ICL_JAX_TESTS_PROBED_" + name):
        return
    os.environ["ICL_JAX_TESTS_PROBED_" + name] = "1"
    trial = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flag).strip(), JAX_PLATFORMS="cpu")
    probe = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; jnp.exp(jnp.ones(3)).block_until_ready()"],
                           env=trial, capture_output=True)
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = trial["XLA_FLAGS"]


# XLA:CPU's MLIR fusion emitters spend most of a small program's compile time building an MLIR
# context and running its passes for every fusion; the classic elemental emitters compile the
# same fusions at about a third of that cost (Chen three-stage toy run: jit(run) compiles
# 24.3 s -> 8.2 s, the test's CPU time 41.6 s -> 23.4 s; the suite 564 s in CI before
# the switch, 362 s after it in a fresh clone on this 2-core machine).
# Both are XLA's own code generators for the same HLO, and the suite passes under either (it ran
# under the MLIR ones until this change); the library's users get XLA's default. A value the caller
# sets in XLA_FLAGS wins.
_adopt_xla_flag("--xla_cpu_use_fusion_emitters=false")

import gc  # noqa: E402

# One persistent compilation cache for the whole run (this process, the xdist workers it starts
# and every subprocess a test spawns: CLI runs, lanes, the two-process sweep), so a program
# compiled once is loaded from disk when a worker, a child process, or a module after
# clear_caches below compiles it again. The process that creates it removes it at the end; a
# cache directory the caller set is used as it is.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _OWN_CACHE = tempfile.mkdtemp(prefix="icl_jax_tests_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module. An XLA:CPU executable holds about
    three memory mappings; a worker that keeps all of the suite's programs crossed the kernel's
    vm.max_map_count (65,530 here: 29,000 mappings after half of one worker's tests) and
    segfaulted inside LLVM while compiling the next one."""
    yield
    jax.clear_caches()
    gc.collect()


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
