"""A scalar reverse-mode autograd engine: backpropagation one number at a time.

``Value`` (``engine.py``) and ``Neuron``/``Layer``/``MLP`` (``nn.py``). Train one on real
MNIST with ``python -m fastnn.autograd.train``.
"""
from fastnn.autograd.engine import Value, dot, value_sum
from fastnn.autograd.nn import MLP, Layer, Module, Neuron, softmax_cross_entropy

__all__ = ["Value", "dot", "value_sum", "Module", "Neuron", "Layer", "MLP", "softmax_cross_entropy"]
