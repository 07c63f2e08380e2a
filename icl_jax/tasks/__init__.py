"""Tasks: priors, graphs, the shared sampler, the papers' tasks and baselines."""
