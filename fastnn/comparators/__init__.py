"""The professional baselines' trainers, side by side with fastnn's: PyTorch (torch_trainer, also
the torch backend's trainer) and JAX (jax_trainer)."""
