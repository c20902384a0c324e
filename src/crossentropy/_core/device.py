"""Checks on accelerator tensors that do not synchronise the host.

Reading a value of a GPU tensor (``bool(t)``, ``t.item()``) waits for every
queued kernel to finish: one such check per call stalls a training loop.
On an accelerator, the class-index check therefore runs on the device
(:func:`assert_on_device`, which raises when the device reaches it, as
PyTorch's own kernels do for an out-of-range index), and the
probabilities-as-logits probe, a warning that would need the values on the
host, is skipped.  NumPy arrays and CPU tensors are checked on the host as
before, with the offending value in the message.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

__all__ = ["assert_on_device", "on_accelerator"]


def on_accelerator(x: Any) -> bool:
    """True for a PyTorch tensor on a device other than the CPU (without importing PyTorch)."""
    return array_api_compat.is_torch_array(x) and x.device.type != "cpu"


def assert_on_device(ok: Any, message: str) -> None:
    """Check the 0-d boolean tensor ``ok`` on its device, without waiting for it:
    ``torch._assert_async``, which raises ``message`` (on a CPU tensor at once;
    on CUDA as a device-side assertion when the device runs it)."""
    import torch

    torch._assert_async(ok, message)
