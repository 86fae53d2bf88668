"""Measuring speed: the machine and its ceilings (machine), the profile (profiling), scaling, the
shape grid (grid), and the benchmark report (report)."""
