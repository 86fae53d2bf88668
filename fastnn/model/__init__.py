"""The model: ``NeuralNetwork`` (network), its initializers, its file format and its ONNX export."""
