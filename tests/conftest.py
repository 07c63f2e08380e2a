"""Test configuration: headless plotting, strict rank promotion, fixed seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite is dominated by XLA:CPU compile time of small programs, most of it LLVM's
# backend optimisation passes, which buy little at test sizes (suite: 377 s -> 273 s).
# Must be set before the backend initialises; a level the caller sets in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import gc  # noqa: E402

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
