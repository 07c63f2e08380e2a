"""Models: pure apply functions on parameter dicts (the engine's groups are their keys)."""
