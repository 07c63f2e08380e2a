"""One XLA host device per CPU core, so that a sweep's runs run on the cores in parallel.

XLA's CPU client exposes a single device by default, and a run of the papers' models (a few
thousand parameters, batches of ~10^3 sequences) keeps about one core busy: a sweep on that one
device leaves the other cores mostly idle. With ``--xla_force_host_platform_device_count=n``
the client exposes n devices; :func:`icl_jax.engine.sweep` shards its runs over all of them and
each device runs its share on its own thread (``vectorize="auto"`` runs them one after another
on CPU, see :func:`~icl_jax.engine.grid.sweep`). Accelerator backends are not affected: the flag
only shapes the CPU platform, which is not the default backend on a GPU or TPU host.

The flag is read when the CPU client is created, i.e. at the first ``jax.devices()`` (or any
computation), not at ``import jax``; :func:`use_cpu_cores` must run before that. The
``icl-jax`` command line calls it first thing; scripts call it at their top.
"""

from __future__ import annotations

import os

__all__ = ["cpu_cores", "use_cpu_cores"]

_FLAG = "--xla_force_host_platform_device_count"


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def use_cpu_cores(n: int | None = None) -> int:
    """Ask XLA for ``n`` host devices (default: :func:`cpu_cores`) unless ``XLA_FLAGS``
    already sets a count (the user's choice wins). Returns the count in effect. Has no
    effect once the CPU client exists (call it before the first computation)."""
    flags = os.environ.get("XLA_FLAGS", "")
    for part in flags.split():
        if part.startswith(_FLAG + "="):
            return int(part.split("=", 1)[1])
    n = cpu_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"n: the number of host devices must be >= 1 (got {n})")
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={n}".strip()
    return n
