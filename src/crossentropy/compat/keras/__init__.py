"""Keras's ``keras.losses`` functions and classes over this library's losses.

``from crossentropy.compat import keras`` and ``keras.categorical_crossentropy(y_true,
y_pred, from_logits=True)`` or ``keras.CategoricalCrossentropy(label_smoothing=0.1)``
work on NumPy, PyTorch, JAX or any Array API array, with Keras's numbers: the
functions return one loss per example, the classes add ``sample_weight`` and
``reduction``.
"""

from ._classes import (
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    CategoricalCrossentropy,
    CategoricalFocalCrossentropy,
    CategoricalGeneralizedCrossEntropy,
    CategoricalHinge,
    Hinge,
    KLDivergence,
    Loss,
    SparseCategoricalCrossentropy,
    SquaredHinge,
)
from ._functions import (
    binary_crossentropy,
    binary_focal_crossentropy,
    categorical_crossentropy,
    categorical_focal_crossentropy,
    categorical_generalized_cross_entropy,
    categorical_hinge,
    hinge,
    kl_divergence,
    sparse_categorical_crossentropy,
    squared_hinge,
)

__all__ = [
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "CategoricalGeneralizedCrossEntropy",
    "CategoricalHinge",
    "Hinge",
    "KLDivergence",
    "Loss",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "categorical_generalized_cross_entropy",
    "categorical_hinge",
    "hinge",
    "kl_divergence",
    "sparse_categorical_crossentropy",
    "squared_hinge",
]
