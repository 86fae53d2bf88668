"""The codes the fused kernels take for activations, optimizers (``fused_steps``, see
``fastnn.training.fused``) and outputs (``fused_forward``, see ``fastnn.inference.forward``), defined once for
every backend that implements them."""

ACT_CODES = {"relu": 0, "sigmoid": 1, "tanh": 2}      # the fused kernels' ``act`` argument
OPT_CODES = {"sgd": 0, "momentum": 1, "adam": 2}      # their ``opt`` argument
FORWARD_MODES = {"logits": 0, "probs": 1, "labels": 2}   # the fused forward's ``mode`` argument
FORWARD_BLOCK_ROWS = 32   # rows a fused forward may run through layer 0 together (its work buffers' size)
