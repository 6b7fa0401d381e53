"""Standalone benchmarks; each ``bench/<name>.py`` runs on its own and prints one JSON line last."""
