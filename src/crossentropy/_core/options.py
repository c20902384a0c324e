"""Option sets of the softmax cross-entropy family, checked once, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from .validate import check_label_smoothing, check_z_loss_softcap

__all__ = ["CrossEntropyOptions"]


@dataclass(frozen=True)
class CrossEntropyOptions:
    """What changes the per-row softmax cross-entropy besides the target and weights.

    ``label_smoothing`` mixes the target with the uniform distribution;
    ``z_loss`` adds ``z_loss * logsumexp(x)**2`` per counted row; ``softcap``
    replaces the logits by ``softcap * tanh(x / softcap)``.  Build it with
    :meth:`checked`, which validates and converts the user's values.
    """

    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float | None = None

    @classmethod
    def checked(
        cls, label_smoothing: float = 0.0, z_loss: float = 0.0, softcap: float | None = None
    ) -> CrossEntropyOptions:
        """The options as floats, or ``ValueError`` naming the offending one."""
        eps = check_label_smoothing(label_smoothing)
        z, cap = check_z_loss_softcap(z_loss, softcap)
        return cls(eps, z, cap)
