"""The PyTorch-compatible losses, one module per family."""

from .binary import binary_cross_entropy, binary_cross_entropy_with_logits
from .classification import cross_entropy, nll_loss
from .divergence import kl_div
from .margin import hinge_loss, multi_margin_loss
from .regression import mse_loss

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "hinge_loss",
    "kl_div",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
]
