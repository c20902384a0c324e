"""Option sets of the softmax cross-entropy family, checked once, as frozen dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .validate import check_label_smoothing, check_z_loss_softcap

__all__ = ["CrossEntropyOptions", "check_temperature"]


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float, or ``ValueError`` unless it is positive and finite."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(temperature, bool) or not 0 < value < math.inf:
        raise ValueError(
            f"temperature must be a positive finite number (the logits are divided by it), "
            f"got {temperature!r}"
        )
    return value


@dataclass(frozen=True)
class CrossEntropyOptions:
    """What changes the per-row softmax cross-entropy besides the target and weights.

    ``label_smoothing`` mixes the target with the uniform distribution;
    ``z_loss`` adds ``z_loss * logsumexp(x)**2`` per counted row; ``softcap``
    replaces the logits by ``softcap * tanh(x / softcap)``; ``temperature``
    divides the (capped) logits by itself before the softmax; ``normalizer``,
    when not ``None``, is what ``'mean'`` divides by instead of the summed
    weight of the counted targets.  Build it with :meth:`checked`, which
    validates and converts the user's values.
    """

    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None
    temperature: float = 1.0
    normalizer: Any = None

    @classmethod
    def checked(
        cls,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        temperature: float = 1.0,
        normalizer: Any = None,
    ) -> CrossEntropyOptions:
        """The options as floats, or ``ValueError`` naming the offending one;
        ``normalizer`` is expected checked already (``reduction.check_normalizer``)."""
        eps = check_label_smoothing(label_smoothing)
        z, cap = check_z_loss_softcap(z_loss, softcap)
        return cls(eps, z, cap, check_temperature(temperature), normalizer)

    def tempered(self) -> tuple[float, CrossEntropyOptions]:
        """``(1 / temperature, options)`` for logits already divided by the
        temperature: the soft cap divided too, the temperature 1.

        ``c tanh(x / c) / T = (c / T) tanh((x / T) / (c / T))``, so the loss of
        ``x / T`` with these options is this call's loss, and its gradient
        times ``1 / T`` is the gradient with respect to ``x``.
        """
        t = self.temperature
        cap = None if self.softcap is None else self.softcap / t
        return 1.0 / t, CrossEntropyOptions(self.label_smoothing, self.z_loss, cap, 1.0, self.normalizer)
