"""Experiments of the peer papers on the shared samplers (docs/peer-tasks.md).

Registered: ``makkuva-switching`` (one vs two attention layers on a binary switching chain),
``edelman-icl-mc`` (the uniform → unigram → bigram stages on in-context Markov chains),
``bietti-triggers`` (the birth of an induction head on trigger tokens),
``singh-interventions`` (clamping or ablating the layer-1 head early in training),
``dangelo-selective-lags`` (a selective induction head choosing the lag) and ``zhou-ctw``
(one vs two layers against context-tree weighting on variable-order chains)."""

from icl_jax.experiments.peers import ctw_depth as ctw_depth  # registers zhou-ctw
from icl_jax.experiments.peers import interventions as interventions  # registers singh-interventions
from icl_jax.experiments.peers import ngram_stages as ngram_stages  # registers edelman-icl-mc
from icl_jax.experiments.peers import selective_lags as selective_lags  # registers dangelo-selective-lags
from icl_jax.experiments.peers import switching as switching  # registers makkuva-switching
from icl_jax.experiments.peers import triggers as triggers  # registers bietti-triggers
