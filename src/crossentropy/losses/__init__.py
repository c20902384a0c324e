"""The PyTorch-compatible losses, one module per family."""

from .binary import binary_cross_entropy, binary_cross_entropy_with_logits, sigmoid_focal_loss
from .classification import cross_entropy, nll_loss
from .divergence import generalized_kl_div, kl_div
from .margin import hinge_loss, multi_margin_loss, multiclass_hinge_loss, squared_hinge_loss
from .regression import mse_loss
from .softmax_variants import focal_cross_entropy, generalized_cross_entropy, poly1_cross_entropy

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "focal_cross_entropy",
    "generalized_cross_entropy",
    "generalized_kl_div",
    "hinge_loss",
    "kl_div",
    "mse_loss",
    "multi_margin_loss",
    "multiclass_hinge_loss",
    "nll_loss",
    "poly1_cross_entropy",
    "sigmoid_focal_loss",
    "squared_hinge_loss",
]
