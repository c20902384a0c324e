"""crossentropy: the cross-entropy loss family, PyTorch-exact, on any array library.

NumPy by default; PyTorch, JAX and any Array API library work too.  Every
loss has an analytic gradient through :func:`value_and_grad`.
"""

from . import distributed, info, metrics, nn
from ._core.errors import DTypeError, ProbabilitiesAsLogitsWarning, TargetIndexError
from ._version import __version__
from .grad import grad, value_and_grad, vjp
from .info import entropy
from .linear import (
    TokenStats,
    linear_cross_entropy,
    linear_cross_entropy_stats,
    linear_distillation_loss,
)
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    focal_cross_entropy,
    generalized_cross_entropy,
    generalized_kl_div,
    hinge_loss,
    kl_div,
    mse_loss,
    multi_margin_loss,
    multiclass_hinge_loss,
    nll_loss,
    poly1_cross_entropy,
    sigmoid_focal_loss,
    squared_hinge_loss,
)
from .special import (
    log_sigmoid,
    log_softmax,
    logsumexp,
    looks_like_probabilities,
    sigmoid,
    softmax,
)

__all__ = [
    "DTypeError",
    "ProbabilitiesAsLogitsWarning",
    "TargetIndexError",
    "TokenStats",
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "distributed",
    "entropy",
    "focal_cross_entropy",
    "generalized_cross_entropy",
    "generalized_kl_div",
    "grad",
    "hinge_loss",
    "info",
    "kl_div",
    "linear_cross_entropy",
    "linear_cross_entropy_stats",
    "linear_distillation_loss",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "looks_like_probabilities",
    "metrics",
    "mse_loss",
    "multi_margin_loss",
    "multiclass_hinge_loss",
    "nll_loss",
    "nn",
    "poly1_cross_entropy",
    "sigmoid",
    "sigmoid_focal_loss",
    "softmax",
    "squared_hinge_loss",
    "value_and_grad",
    "vjp",
]
