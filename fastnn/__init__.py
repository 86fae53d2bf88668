"""fastnn: a neural network built from scratch, and made fast.

One MLP, one kernel interface (``fastnn.backends``), several implementations.
"""
from fastnn.backends import available_backends, get_backend
from fastnn.model.network import NeuralNetwork

__version__ = "0.1.0"
__all__ = ["NeuralNetwork", "get_backend", "available_backends", "__version__"]
