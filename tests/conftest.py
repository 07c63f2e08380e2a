"""Test configuration: headless plotting, strict rank promotion, fixed seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# The suite is dominated by XLA:CPU compile time of small programs, most of it LLVM's
# backend optimisation passes, which buy little at test sizes (suite: 377 s -> 273 s).
# Must be set before the backend initialises; a level the caller sets in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
