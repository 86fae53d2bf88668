"""``NeuralNetwork``: a fully connected classifier whose every kernel call goes to a backend.

Shapes: N batch, D input features, H hidden units, C classes. Layer ``i`` maps
(N, n_in) to (N, n_out) with ``weights[i]`` (n_in, n_out) and ``biases[i]`` (n_out,);
hidden layers apply the activation (and inverted dropout while training); the
last layer's logits go through softmax cross-entropy.
"""
from __future__ import annotations

import numpy as np

from fastnn.backends import get_backend
from fastnn.backends.memory import aligned_copy, aligned_zeros
from fastnn.backends.timing import phase
from fastnn.data.normalize import normalize_background
from fastnn.inference.forward import ForwardPlan, as_batch, has_fused_forward, input_range_error
from fastnn.model.file_format import load_model, save_model
from fastnn.model.initializers import INITIALIZERS, init_weights

# activation -> (forward kernel, backward kernel, which forward array the backward takes)
ACTIVATIONS = {
    "relu": ("relu", "relu_backward", "z"),
    "sigmoid": ("sigmoid", "sigmoid_backward", "out"),
    "tanh": ("tanh", "tanh_backward", "out"),
}

class NeuralNetwork:
    """Multi-layer perceptron trained with softmax cross-entropy.

    Args:
        layer_sizes: [D, H1, ..., C], at least two entries, all positive.
        activation: ``relu``, ``sigmoid`` or ``tanh`` for the hidden layers.
        init: weight initializer (``he``, ``xavier``, ``lecun``, ``normal``, ``zeros``; see
            ``fastnn.model.initializers``). Biases start at zero.
        backend: a backend name (see ``fastnn.backends.available_backends()``) or module.
        dtype: float32 (default) or float64 (for gradient checks).
        seed: seeds the initialization and the dropout masks.
        dropout: probability of zeroing each hidden activation while training
            (inverted dropout: survivors are scaled by 1 / (1 - p); inactive in ``forward``).

    Attributes:
        weights, biases: lists of arrays, (n_in, n_out) and (n_out,).
        grad_weights, grad_biases: same shapes, set by ``backward`` (None before).
        class_names: names of the C output classes (saved and loaded with the model), or None.
        input_norm: "background" for a model trained on normalized images (``fastnn.data.normalize``:
            each image's background subtracted and its ink stretched): logits/forward/predict then
            normalize every input first; "none" (the default) leaves inputs as they are.
        pixel_inputs: True for a model of images, whose inputs are pixels in [0, 1] (every model
            ``fastnn.train`` makes): ``predict``/``forward``/``logits`` then refuse inputs outside
            [0, 1]; False (the default for a model built here): they refuse only NaN and inf.
            Saved with the model. The policy is ``fastnn.inference.forward``'s (garbage in is an error).
        timer: a ``fastnn.backends.timing.PhaseTimer`` to time ``backward``'s forward / loss / backward
            phases (``python -m fastnn.profile``); None (the default) times nothing.
    """

    def __init__(self, layer_sizes=(784, 128, 64, 10), activation: str = "relu", init: str = "he",
                 backend="numpy", dtype=np.float32, seed: int | None = 0, dropout: float = 0.0):
        layer_sizes = [int(s) for s in layer_sizes]
        if len(layer_sizes) < 2 or min(layer_sizes) < 1:
            raise ValueError(f"layer_sizes needs at least two positive sizes [D, ..., C], got {layer_sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if init not in INITIALIZERS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITIALIZERS)}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.layer_sizes = layer_sizes
        self.activation = activation
        self.init = init
        self.dtype = dtype
        self.dropout = float(dropout)
        self.seed = seed
        self.backend = get_backend(backend)
        self.rng = np.random.default_rng(seed)
        # on 64-byte boundaries, as the compiled forward loads them (fastnn.backends.memory)
        self.weights = [aligned_copy(init_weights(init, n_in, n_out, self.rng, dtype))
                        for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])]
        self.biases = [aligned_zeros(n_out, dtype) for n_out in layer_sizes[1:]]
        self.grad_weights: list[np.ndarray] | None = None
        self.grad_biases: list[np.ndarray] | None = None
        self.timer = None
        self.class_names: list[str] | None = None     # saved with the model when set (the trainer sets it)
        self.dataset: str | None = None               # the dataset it was trained on (saved; evaluate/predict use it)
        self.pixel_inputs = False                      # inputs are pixels in [0, 1] (saved; fastnn.train sets it)
        self.input_norm = "none"                       # "background": inputs normalized first (saved)
        self._plan: ForwardPlan | None = None          # the fused forward, where the backend has one

    # ------------------------------------------------------------------ basics
    @property
    def num_layers(self) -> int:
        return len(self.weights)

    @property
    def backend_name(self) -> str:
        return self.backend.NAME

    def set_backend(self, backend) -> None:
        """Switch the kernels used from now on (parameters are unchanged)."""
        self.backend = get_backend(backend)

    def parameters(self) -> list[np.ndarray]:
        """[W0, ..., WL-1, b0, ..., bL-1]: the arrays an optimizer updates in place."""
        return [*self.weights, *self.biases]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def __repr__(self):
        arch = "-".join(map(str, self.layer_sizes))
        drop = f", dropout={self.dropout}" if self.dropout else ""
        return (f"NeuralNetwork({arch}, activation={self.activation!r}, init={self.init!r}, "
                f"backend={self.backend_name!r}, dtype={self.dtype.name}{drop}, "
                f"parameters={self.num_parameters():,})")

    def _check_input(self, X, check_range: bool = True) -> np.ndarray:
        """Return X as a C-contiguous (N, D) array of the model's dtype (a copy only where X is
        strided or of another dtype: the compiled kernels then meet one layout, so a strided view
        costs no compile); images (N, 28, 28) are flattened.
        ``check_range``: refuse inputs outside [0, 1] (the fused forward checks them itself).

        Raises:
            TypeError: X is not floating point. ValueError: its shape does not fit the input
            layer. InputRangeError (a ValueError): a value outside [0, 1], NaN or infinite.
        """
        X = as_batch(X, self.layer_sizes[0])                            # (N, D)
        if check_range and X.size:
            ok = (X.min() >= 0 and X.max() <= 1) if self.pixel_inputs else bool(np.isfinite(X).all())  # NaN fails
            if not ok:
                good = ((X >= 0) & (X <= 1)) if self.pixel_inputs else np.isfinite(X)
                raise input_range_error(X, int(np.flatnonzero(~good.all(axis=1))[0]), self.pixel_inputs)
        return np.ascontiguousarray(X, dtype=self.dtype)                # (N, D): one layout, compiled once

    # ------------------------------------------------------------------ forward
    def _forward(self, X: np.ndarray, training: bool):
        """Run every layer; return logits (N, C) and, when training, the per-layer cache."""
        k = self.backend
        act = getattr(k, ACTIVATIONS[self.activation][0])
        cache = []
        a = X                                                           # (N, D)
        for W, b in zip(self.weights[:-1], self.biases[:-1]):          # hidden layers
            z = k.matmul(a, W)                                          # (N, H)
            z += b
            out = act(z)                                                # (N, H)
            mask = None
            if training and self.dropout:
                keep = 1.0 - self.dropout
                mask = (self.rng.random(out.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
            cache.append((a, z, out, mask))
            a = out if mask is None else out * mask                     # (N, H)
        logits = k.matmul(a, self.weights[-1])                          # (N, C)
        logits += self.biases[-1]
        cache.append((a, logits, None, None))
        return logits, cache

    def _fused_plan(self) -> ForwardPlan | None:
        """The fused forward of the current arrays (``fastnn.inference.forward``), or None where the
        backend has none or an array does not suit it (then the kernel path runs)."""
        plan = self._plan
        if plan is not None and plan.matches(self.backend, self.weights, self.biases, self.activation):
            return plan
        self._plan = None
        if has_fused_forward(self.backend) and ForwardPlan.unusable_reason(
                self.backend, self.weights, self.biases, self.activation, self.dtype) is None:
            self._plan = ForwardPlan(self.backend, self.weights, self.biases, self.activation, self.dtype)
        return self._plan

    def _evaluation_input(self, X):
        """(plan or None, X checked and, for a model with ``input_norm`` "background", normalized
        (``fastnn.data.normalize``)): what logits/forward/predict run on."""
        plan = self._fused_plan()
        if self.input_norm == "none":
            return plan, self._check_input(X, check_range=plan is None)
        return plan, normalize_background(self._check_input(X))                    # checked before it is changed

    def logits(self, X) -> np.ndarray:
        """Logits (N, C) for X (N, D) float, evaluation mode (no dropout). Raises as ``predict``."""
        plan, X = self._evaluation_input(X)
        if plan is not None:
            return plan.run(X, "logits", self.pixel_inputs)
        return self._forward(X, training=False)[0]

    def forward(self, X) -> np.ndarray:
        """Class probabilities (N, C) for X (N, D) float, evaluation mode (no dropout). Raises as
        ``predict``."""
        plan, X = self._evaluation_input(X)
        if plan is not None:
            return plan.run(X, "probs", self.pixel_inputs)
        return self.backend.softmax(self._forward(X, training=False)[0])

    def predict(self, X, batch_size: int = 4096) -> np.ndarray:
        """Predicted labels (N,) int64 for X (N, D) float (images (N, 28, 28) are flattened):
        the first maximum of each row's logits. A model with ``input_norm`` "background"
        normalizes each row first (``fastnn.data.normalize``).

        One compiled call for the whole batch where the backend has a fused forward (numba,
        cython: ``fastnn.inference.forward``); else kernel by kernel, ``batch_size`` rows at a time.
        Raises:
            TypeError: X is not floating point. ValueError: X's shape does not fit the input layer,
            or ``batch_size`` < 1. InputRangeError (a ValueError): an input outside [0, 1] (NaN,
            infinite, or pixels not scaled from 0-255): garbage in gets an error, not a label.
        """
        plan = self._fused_plan()
        if plan is not None and self.input_norm == "none" and batch_size >= 1:
            labels = plan.try_labels(X, self.pixel_inputs)          # X already what _check_input returns
            if labels is not None:
                return labels
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        plan, X = self._evaluation_input(X)
        if plan is not None:
            return plan.run(X, "labels", self.pixel_inputs)
        out = [np.argmax(self._forward(X[i:i + batch_size], False)[0], axis=1)
               for i in range(0, X.shape[0], batch_size)]
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def loss(self, X, y) -> tuple[float, np.ndarray]:
        """(mean cross-entropy, probs (N, C)) in evaluation mode; no gradients."""
        return self.backend.softmax_cross_entropy(self.logits(X), y)

    # ------------------------------------------------------------------ backward
    def backward(self, X, y, label_smoothing: float = 0.0, check_range: bool = True) -> float:
        """Forward in training mode, then backpropagate the mean cross-entropy.

        Args:
            X: (N, D) float. y: (N,) integer labels in [0, C).
            label_smoothing: eps in [0, 1): the target is (1 - eps) one_hot(y) + eps / C instead of
                one_hot(y) (C. Szegedy et al., "Rethinking the Inception Architecture for Computer
                Vision", CVPR 2016, section 7); the loss is then -sum_j t_j log p_j.
            check_range: refuse inputs outside the model's range (``pixel_inputs``) or not finite;
                False only for X the caller made itself from uint8 images (the trainers).
        Returns:
            The mean loss (float). Sets ``grad_weights`` and ``grad_biases``.
        Raises:
            ValueError: shapes of X and y disagree, a label is out of range, or eps not in [0, 1).
        """
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        k = self.backend
        X = self._check_input(X, check_range)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"labels shape {y.shape} does not match X shape {X.shape}: expected ({X.shape[0]},)")
        with phase(self.timer, "forward"):
            logits, cache = self._forward(X, training=True)             # (N, C)
        with phase(self.timer, "loss"):
            loss, probs = k.softmax_cross_entropy(logits, y)
            grad = k.softmax_cross_entropy_backward(probs, y)           # (N, C) (probs - one_hot) / N
            if label_smoothing:
                loss, grad = _smooth_labels(logits, y, loss, grad, label_smoothing)
        with phase(self.timer, "backward"):
            self.grad_weights, self.grad_biases, _ = self._backprop(cache, grad)
        return loss

    def _backprop(self, cache, grad, input_grad: bool = False):
        """Backpropagate ``grad`` = dL/dlogits (N, C) through the cached forward pass.

        Returns (grad_weights, grad_biases, dL/dX or None); the input gradient only when asked.
        """
        k = self.backend
        _, act_back_name, act_arg = ACTIVATIONS[self.activation]
        act_back = getattr(k, act_back_name)
        grad_weights = [None] * self.num_layers
        grad_biases = [None] * self.num_layers
        for i in reversed(range(self.num_layers)):
            a_in, z, out, mask = cache[i]
            if i < self.num_layers - 1:                                 # hidden layer: through act + dropout
                if mask is not None:
                    grad = grad * mask                                  # (N, n_out)
                grad = act_back(grad, z if act_arg == "z" else out)     # (N, n_out)
            grad_weights[i] = k.matmul(a_in.T, grad)                    # (n_in, n_out)
            grad_biases[i] = grad.sum(axis=0)                           # (n_out,)
            if i > 0 or input_grad:
                grad = k.matmul(grad, self.weights[i].T)                # (N, n_in)
        return grad_weights, grad_biases, grad if input_grad else None

    def input_gradient(self, X, grad_logits) -> np.ndarray:
        """dS/dX (N, D) for a score S with dS/dlogits = ``grad_logits`` (N, C), evaluation mode.

        With ``grad_logits`` one-hot on the predicted class this is the saliency map of
        K. Simonyan et al., "Deep Inside Convolutional Networks", ICLR 2014 workshop. For a model
        with ``input_norm`` the gradient is with respect to the normalized input.
        Raises:
            ValueError: ``grad_logits`` is not (N, C) for X's N.
        """
        X = self._evaluation_input(X)[1]
        grad_logits = np.asarray(grad_logits, dtype=self.dtype)
        if grad_logits.shape != (X.shape[0], self.layer_sizes[-1]):
            raise ValueError(f"grad_logits shape {grad_logits.shape} does not match X shape {X.shape}: "
                             f"expected ({X.shape[0]}, {self.layer_sizes[-1]})")
        _, cache = self._forward(X, training=False)
        return self._backprop(cache, grad_logits, input_grad=True)[2]

    def hidden_outputs(self, X) -> list[np.ndarray]:
        """Each hidden layer's activations, (N, H_l) per layer, in evaluation mode (no dropout)."""
        _, cache = self._forward(self._evaluation_input(X)[1], training=False)
        return [out for _, _, out, _ in cache[:-1]]

    def update_weights(self, learning_rate: float) -> None:
        """One plain gradient-descent step: p <- p - learning_rate * grad_p."""
        if self.grad_weights is None:
            raise RuntimeError("no gradients: call backward(X, y) before update_weights()")
        lr = self.dtype.type(learning_rate)
        for W, gW in zip(self.weights, self.grad_weights):
            W -= lr * gW
        for b, gb in zip(self.biases, self.grad_biases):
            b -= lr * gb

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write weights and architecture to ``path`` (.npz), atomically (``fastnn.model.file_format``).

        Holds only plain numeric and string arrays: loading never needs pickle.
        """
        save_model(self, path)

    def to_onnx(self, path):
        """Write this model as a standard ONNX file (``fastnn.export``: input "pixels" (N, D) in
        [0, 1], outputs "logits" and "probs" (N, C), "labels" (N,)); returns the path.

        Raises:
            ImportError: the onnx package is not installed (the message says how to get it).
            ValueError: an activation or dtype ONNX export does not cover.
        """
        from fastnn.model.onnx import export_onnx

        return export_onnx(self, path)

    def to_int8(self):
        """This model's forward with layer 0 in int8: an ``fastnn.model.int8.Int8Model`` (a
        snapshot with ``predict``, ``logits``, ``forward``; ``fastnn.inference.int8`` gives the
        quantization and its accuracy). An opt-in for speed: a few labels in 10,000 change.

        Raises:
            ValueError: the model is not one of pixels (``pixel_inputs``), normalizes its inputs,
                or the cython backend (which has the int8 kernels) is not built here.
        """
        from fastnn.model.int8 import Int8Model

        return Int8Model(self)

    @classmethod
    def pretrained(cls, dataset: str = "mnist", backend: str = "auto", variant: str | None = None) -> "NeuralNetwork":
        """The model that ships with fastnn for ``dataset`` ("mnist" or "fashion-mnist"), trained
        by ``python -m fastnn.train`` with that dataset's recipe (``fastnn.pretrained.info(dataset)``
        gives the command, the commit and its test accuracy); ``variant`` "robust" (the robust
        recipe), "torch" (trained by PyTorch), "all-data" (trained on every training image:
        Fashion-MNIST's 90% model) or "numbers" (MNIST's number reader, classes 0-9 and "none", for
        ``fastnn.model.numbers.read_number``) for another that ships (``fastnn.pretrained.VARIANTS``).

        Args:
            backend: kernels for the model; "auto": the fastest with a fused forward here.
        Raises:
            ValueError: no pretrained model for ``dataset``, or an unknown variant.
            FileNotFoundError: the installation lost the file, or that variant does not ship for ``dataset``.
        """
        from fastnn.inference.forward import inference_backend
        from fastnn.pretrained import model_path, variant_path

        if variant is None:
            return cls.load(model_path(dataset), backend=inference_backend(backend))
        path = variant_path(dataset, variant)
        if path is None:
            raise FileNotFoundError(f"no {variant} model ships for {dataset}")
        return cls.load(path, backend=inference_backend(backend))

    @classmethod
    def load(cls, path, backend="numpy", layer_sizes=None) -> "NeuralNetwork":
        """Read a model written by ``save``. Never unpickles anything.

        Args:
            path: the .npz file.
            backend: backend for the loaded model.
            layer_sizes: if given, the architecture the caller expects; a file of another
                architecture raises ``ModelFileError``.
        Raises:
            FileNotFoundError: no such file.
            ModelFileError: not a fastnn model file, corrupt, holds pickled objects,
                inconsistent shapes, or another architecture than ``layer_sizes``.
        """
        return load_model(cls, path, backend, layer_sizes)


def _smooth_labels(logits, y, loss: float, grad, eps: float):
    """The cross-entropy's (loss, dL/dlogits) turned into label smoothing's with weight eps.

    -sum_j t_j log p_j = (1 - eps) CE + eps mean_j(-log p_j), and its gradient
    (p - t) / N = (p - one_hot) / N + eps (one_hot - 1/C) / N."""
    N, C = logits.shape
    z = logits.astype(np.float64)                                       # (N, C)
    mx = z.max(axis=1, keepdims=True)                                   # (N, 1)
    lse = np.log(np.exp(z - mx).sum(axis=1)) + mx[:, 0]                 # (N,) log-sum-exp
    uniform = float(np.mean(lse - z.mean(axis=1)))                      # mean_i mean_j -log p_ij
    shift = np.full((N, C), -eps / C / N)                               # (N, C) eps (one_hot - 1/C) / N
    shift[np.arange(N), y] += eps / N
    return (1 - eps) * loss + eps * uniform, grad + shift.astype(grad.dtype)
