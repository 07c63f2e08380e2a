"""Checkpoints as single `.npz` files, written atomically.

Parameters here are tiny, so a flat `numpy.savez` of the state's leaves is enough (see
docs/engine.md#checkpoints-and-resume); the pytree structure is rebuilt from a template on load, so
no pickling. Typed PRNG keys are stored as their raw `key_data`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import jax
import numpy as np


def to_numpy(leaf) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    arr = np.asarray(leaf)
    if arr.dtype.kind == "V" or arr.dtype.type.__module__.startswith("ml_dtypes"):
        # npz cannot describe bfloat16 & co.; float32 holds them exactly, and loading casts back.
        arr = arr.astype(np.float32)
    return arr


def tree_to_arrays(prefix: str, tree) -> dict[str, np.ndarray]:
    """Flatten a pytree into `{prefix/i: array}` in `jax.tree.leaves` order."""
    return {f"{prefix}/{i}": to_numpy(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def arrays_to_tree(prefix: str, arrays: Mapping[str, np.ndarray], template) -> Any:
    """Inverse of `tree_to_arrays`, given a template with the same structure."""
    leaves, treedef = jax.tree.flatten(template)
    loaded = []
    for i, ref in enumerate(leaves):
        name = f"{prefix}/{i}"
        if name not in arrays:
            raise ValueError(f"checkpoint: missing array {name!r}; it was written for a different run layout")
        arr = arrays[name]
        if np.shape(arr) != np.shape(ref):
            raise ValueError(f"checkpoint: array {name!r} has shape {np.shape(arr)}, the run expects {np.shape(ref)}")
        ref_dtype = getattr(ref, "dtype", None)
        if ref_dtype is not None and arr.dtype != ref_dtype and not jax.dtypes.issubdtype(ref_dtype, jax.dtypes.prng_key):
            arr = arr.astype(ref_dtype)
        loaded.append(arr)
    return jax.tree.unflatten(treedef, loaded)


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write arrays plus a JSON `meta` record to `path` atomically (temp file + rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(dict(meta), sort_keys=True)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The meta of a file written by `save_npz` (step, train_seconds, fingerprint, ...), without
    reading its arrays."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        return json.loads(str(f["__meta__"]))


def load_checkpoint(path: str | os.PathLike | BinaryIO) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by `save_npz` (a path, or its bytes as a binary file object): (arrays, meta)."""
    with np.load(path if hasattr(path, "read") else os.fspath(path), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != "__meta__"}
        meta = json.loads(str(f["__meta__"]))
    return arrays, meta
