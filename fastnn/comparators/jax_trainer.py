"""A comparator a performance-minded user would try first: the same MLP in JAX, compiled by XLA.

Two ways a JAX user writes the training loop, both from the ``NeuralNetwork``'s initial
weights, with the same batch order and the same SGD-with-momentum / L2 formulas as
``fastnn.training.optim`` (PyTorch's heavy-ball form, weights decayed, biases not):

- ``mode="step"``: ``jax.jit`` of one training step, called from Python once per batch;
- ``mode="scan"``: ``jax.jit`` of a whole run of steps as one ``lax.scan`` over the batches, so
  XLA compiles the epoch's loop (one call per ``run_steps``; full batches inside the scan,
  a short last batch through the step function).

Used by ``benchmarks/test_training.py`` (``jax-step``, ``jax-scan``). Only SGD/momentum with
ReLU and no dropout: the benchmark's configuration. JAX is an optional extra
(``pip install -e ".[bench]"``); importing this module without it raises ModuleNotFoundError.
"""
from __future__ import annotations

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # the benchmarks skip with this reason
    # ModuleNotFoundError, not ImportError: pytest.importorskip (pytest 9) skips only that one
    raise ModuleNotFoundError(f"jax is not installed ({exc}): pip install -e '.[bench]'", name="jax") from exc

from fastnn.training.trainers import TrainerBase, checked_order

__all__ = ["JaxTrainer"]


def _loss(params, X, y):
    """Mean softmax cross-entropy of the ReLU MLP; params = [(W (n_in, n_out), b (n_out,)), ...]."""
    h = X                                                            # (N, D)
    for W, b in params[:-1]:
        h = jax.nn.relu(h @ W + b)                                   # (N, H)
    W, b = params[-1]
    logits = h @ W + b                                               # (N, C)
    logp = jax.nn.log_softmax(logits)                                # (N, C)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def _make_step():
    """One SGD-with-momentum step (fastnn.training.optim's formulas): (params, velocity, X, y, [lr, mu, wd])
    -> (params, velocity, loss)."""
    grad_fn = jax.value_and_grad(_loss)

    def step(params, velocity, X, y, hyper):
        lr, mu, wd = hyper[0], hyper[1], hyper[2]
        loss, grads = grad_fn(params, X, y)
        new_params, new_velocity = [], []
        for (W, b), (gW, gb), (vW, vb) in zip(params, grads, velocity):
            vW = mu * vW + gW + wd * W
            vb = mu * vb + gb
            new_params.append((W - lr * vW, b - lr * vb))
            new_velocity.append((vW, vb))
        return new_params, new_velocity, loss

    return step


class JaxTrainer(TrainerBase):
    """Trains a copy of ``model`` in JAX (SGD with momentum, ReLU, no dropout); same interface as
    the other trainers (``fastnn.training.trainers.Trainer``).

    Args:
        model: a ``NeuralNetwork`` with ReLU and no dropout; its weights are the starting point
            and receive the result (``sync_to_model``).
        optimizer: a ``fastnn.training.optim.SGD`` (its lr, momentum and weight_decay are read at every call).
        dataset: the training ``Dataset``; kept on the device as one float32 (n, D) array.
        mode: ``"scan"`` (the epoch's steps in one compiled ``lax.scan``) or ``"step"``.
    Raises:
        ValueError: an unsupported model or optimizer, or an unknown mode.
    """

    def __init__(self, model, optimizer, dataset, mode: str = "scan"):
        from fastnn.training.optim import SGD

        if mode not in ("scan", "step"):
            raise ValueError(f"mode must be 'scan' or 'step', got {mode!r}")
        if model.activation != "relu" or model.dropout or not isinstance(optimizer, SGD):
            raise ValueError("the JAX comparator runs ReLU, no dropout, SGD (with or without momentum)")
        if model.dtype != np.float32:
            raise ValueError("the JAX comparator runs float32")
        self.model, self.optimizer, self.mode = model, optimizer, mode
        loop = "lax.scan over the batches" if mode == "scan" else "one step per call"
        self.description = f"JAX {jax.__version__} jit ({loop})"
        self.X = jnp.asarray(dataset.features(dtype=np.float32))     # (n, D)
        self.y = jnp.asarray(np.asarray(dataset.labels, dtype=np.int32))  # (n,)
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(model.weights, model.biases)]
        self.velocity = [(jnp.zeros_like(W), jnp.zeros_like(b)) for W, b in self.params]
        step = _make_step()
        self._step = jax.jit(step)
        X_all, y_all = self.X, self.y

        def scan_steps(params, velocity, batches, hyper):           # batches (S, B) int32 sample ids
            def body(carry, idx):
                p, v = carry
                p, v, loss = step(p, v, X_all[idx], y_all[idx], hyper)
                return (p, v), loss
            (params, velocity), losses = jax.lax.scan(body, (params, velocity), batches)
            return params, velocity, losses

        self._scan = jax.jit(scan_steps)

    def _hyper(self):
        opt = self.optimizer
        return jnp.asarray([opt.lr, opt.momentum, opt.weight_decay], dtype=jnp.float32)

    def run_steps(self, order, first_step: int, n_steps: int, batch_size: int) -> np.ndarray:
        """Steps ``first_step`` .. of the epoch ordered by ``order``; returns their losses (float64).
        Raises as ``fastnn.training.trainers.checked_order`` (JAX would clamp an index out of range)."""
        order = checked_order(order, self.y.shape[0], first_step, n_steps, batch_size)
        n = len(order)
        last = min(first_step + n_steps, -(-n // batch_size))
        if last <= first_step:
            return np.empty(0)
        hyper = self._hyper()
        order = np.asarray(order, dtype=np.int32)
        full_end = min(last, n // batch_size)                         # steps with a whole batch
        losses = []
        if self.mode == "scan" and full_end > first_step:
            batches = jnp.asarray(order[first_step * batch_size:full_end * batch_size].reshape(-1, batch_size))
            self.params, self.velocity, scan_losses = self._scan(self.params, self.velocity, batches, hyper)
            losses.append(np.asarray(scan_losses, dtype=np.float64))
            first = full_end
        else:
            first = first_step
        for step in range(first, last):
            idx = jnp.asarray(order[step * batch_size:(step + 1) * batch_size])
            self.params, self.velocity, loss = self._step(self.params, self.velocity, self.X[idx], self.y[idx], hyper)
            losses.append(np.asarray([loss], dtype=np.float64))
        self.optimizer.t += last - first_step
        return np.concatenate(losses)

    def run_epoch(self, order, batch_size: int, on_steps=None) -> np.ndarray:
        """The whole epoch: in scan mode one compiled ``lax.scan`` over every full batch (one call),
        then a short last batch through the step function; in step mode, call by call."""
        if self.mode != "scan":
            return super().run_epoch(order, batch_size, on_steps)
        losses = self.run_steps(order, 0, -(-len(order) // batch_size), batch_size)
        if on_steps is not None:
            on_steps(losses)
        self.sync_to_model()
        return losses

    def sync_to_model(self) -> None:
        """Copy the trained weights back into the ``NeuralNetwork``."""
        for i, (W, b) in enumerate(self.params):
            self.model.weights[i][...] = np.asarray(W)
            self.model.biases[i][...] = np.asarray(b)
