"""Training: settings and recipes (config), the run (loop), the trainers (trainers, fused, factory),
optimizers (optim), first-run compilation (precompile), sweeps (sweeps, sweep_results)."""
