"""Experiments of the peer papers on the shared samplers (docs/peer-tasks.md).

Registered: ``makkuva-switching`` (one vs two attention layers on a binary switching chain) and
``edelman-icl-mc`` (the uniform → unigram → bigram stages on in-context Markov chains)."""

from icl_jax.experiments.peers import ngram_stages as ngram_stages  # registers edelman-icl-mc
from icl_jax.experiments.peers import switching as switching  # registers makkuva-switching
