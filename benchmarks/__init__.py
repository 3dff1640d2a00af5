"""Benchmarks: each measures against a baseline run side by side and reports ratios."""
