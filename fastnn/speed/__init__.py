"""Measuring speed: the machine and its ceilings (machine), the profile (profiling), scaling, and the
benchmark report (report)."""
