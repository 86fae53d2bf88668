"""The codes the fused kernels (``fastnn.fused``) take for activations and optimizers, defined
once for every backend that implements ``fused_steps``."""

ACT_CODES = {"relu": 0, "sigmoid": 1, "tanh": 2}      # the fused kernels' ``act`` argument
OPT_CODES = {"sgd": 0, "momentum": 1, "adam": 2}      # their ``opt`` argument
