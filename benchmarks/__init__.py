"""Benchmarks: scripts that print a table and exit non-zero when a goal is missed."""
