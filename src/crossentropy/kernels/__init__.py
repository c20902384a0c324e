"""Fast CPU paths behind the same API: fused, multithreaded, vectorized kernels.

``crossentropy.cross_entropy`` and ``crossentropy.value_and_grad(cross_entropy)``
take these kernels automatically for NumPy arrays and PyTorch CPU tensors in
float32/float64 (float16 is computed in float32), and fall back to the portable
Array API code for every other library, device or layout.  JAX arrays on CPU
with at least 512 classes take the same kernel inside ``jax.jit``, as an XLA
custom call (:mod:`crossentropy.kernels.xla`, an optional extension built when
JAX is importable at build time).  Results agree with the portable path to
rounding (about 1e-6 relative in float32, 1e-12 in float64).

The kernels live in an optional C extension built at install time; without a
compiler the library still installs and runs on the portable path
(:func:`available` says which).  ``CROSSENTROPY_DISABLE_KERNELS=1`` or
``with crossentropy.kernels.disabled():`` forces the portable path;
``CROSSENTROPY_NUM_THREADS`` or :func:`set_num_threads` sets the threads.

:func:`cross_entropy_value_and_grad` adds what a fixed signature cannot:
``out=`` to reuse a gradient buffer and ``overwrite_input=True`` to write the
gradient over the logits, as fused LLM losses do.
"""

from __future__ import annotations

from ._inplace import cross_entropy_value_and_grad
from .native import available, disabled, enabled, get_num_threads, info, set_num_threads

__all__ = [
    "available",
    "cross_entropy_value_and_grad",
    "disabled",
    "enabled",
    "get_num_threads",
    "info",
    "set_num_threads",
]
