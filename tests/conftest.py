"""Test configuration: headless plotting, strict rank promotion, fixed seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite is dominated by XLA:CPU compile time of small programs, most of it LLVM's
# backend optimisation passes, which buy little at test sizes (suite: 377 s -> 273 s).
# Must be set before the backend initialises; a level the caller sets in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

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
