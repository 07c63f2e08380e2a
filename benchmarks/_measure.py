"""Measurement helpers shared by the benchmarks (no jax import at module level, so a
benchmark can set the XLA device count with :func:`set_host_devices` first)."""

import os
import time
from typing import NamedTuple


def set_host_devices(n):
    """Put the device-count flag in XLA_FLAGS (must run before jax is imported); ``None``
    keeps a count already set there, else uses ``os.cpu_count()``."""
    flags, flag = os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count"
    if n is None:
        if flag in flags:
            return
        n = os.cpu_count() or 1
    os.environ["XLA_FLAGS"] = " ".join([f for f in flags.split() if not f.startswith(flag)] + [f"{flag}={n}"])


def _system_busy_s():
    """CPU seconds all processes have spent busy (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Timing(NamedTuple):
    result: object
    wall: float  # seconds
    cpu: float  # this process's CPU seconds, all threads
    other: float | None  # cores kept busy by other processes on average (Linux), else None


def timed(fn) -> Timing:
    """Run fn() to completion; wall time, own CPU time and other processes' load meanwhile."""
    import jax

    b0, c0, t0 = _system_busy_s(), time.process_time(), time.perf_counter()
    out = jax.block_until_ready(fn())
    wall, cpu, b1 = time.perf_counter() - t0, time.process_time() - c0, _system_busy_s()
    # /proc/stat counts in clock ticks (10 ms): too coarse for calls shorter than ~0.2 s
    other = None if b0 is None or b1 is None or wall < 0.2 else max(0.0, (b1 - b0 - cpu) / wall)
    return Timing(out, wall, cpu, other)


def cost_flops(compiled):
    """'flops' of XLA's cost analysis (a dict, or a list of dicts in some jax versions), or None."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 — not implemented on some backends
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    value = float(ca["flops"]) if ca and "flops" in ca else 0.0
    return value if value > 0 else None
