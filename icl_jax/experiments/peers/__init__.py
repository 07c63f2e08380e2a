"""Experiments of the peer papers on the shared samplers (docs/peer-tasks.md).

Registered: ``makkuva-switching`` (one vs two attention layers on a binary switching chain)."""

from icl_jax.experiments.peers import switching as switching  # registers makkuva-switching
