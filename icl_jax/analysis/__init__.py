"""Analysis helpers: plotting."""
