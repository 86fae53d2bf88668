"""Inference: the fused forward plan behind ``NeuralNetwork.predict`` and its input checks (forward)."""
