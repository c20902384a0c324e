"""Cross-entropy of a linear layer's output without the ``(N, V)`` logits: ``linear_cross_entropy``.

A language model's head computes ``logits = h @ W.T`` for ``N`` tokens and a
vocabulary of ``V`` words and feeds them to ``cross_entropy``.  With
``N = 8192`` and ``V = 128000`` the float32 logits alone take 4 GiB, and the
naive backward holds two more arrays of that size.  Here the tokens are taken
a chunk at a time (and the vocabulary a block at a time inside each chunk):
per chunk, one GEMM gives the logits block, a streaming (online) logsumexp
gives the row statistics, and the gradient of the block with respect to the
logits is applied at once with two GEMMs (``dinput = G @ W`` and
``dW += G.T @ input``).  Peak extra memory is one ``(chunk, V)`` buffer.

With a reduced loss (``'mean'``, ``'sum'``) the gradients are computed during
the forward, so the backward costs nothing; with ``reduction='none'`` the
backward of the PyTorch ``autograd.Function`` recomputes the blocks, because
each row's gradient must be scaled by its own upstream gradient.

The same engine gives :func:`linear_cross_entropy_stats` (the loss and, per
token, the target's log-probability, logsumexp, entropy, argmax and z-loss
term, in a :class:`TokenStats`) and :func:`linear_distillation_loss` (a
divergence between a student head and a frozen teacher head, with a second
``(chunk, V)`` buffer for the teacher's block).

The modules: ``_api`` (``linear_cross_entropy`` and its gradient rule),
``_stats`` and ``_distill`` (the other two public functions), ``_prepare``
(validation and chunk sizes), ``_engine`` (the chunk engine), the objectives
it runs per chunk, ``_softmax`` (cross-entropy) and ``_divergence``
(distillation), over ``_blocks`` (a block's GEMM and gradient products),
``_arrayops`` (in-place array operations per library) and ``_autograd`` (the
PyTorch ``autograd.Function`` of all three).  :func:`sharded_linear_cross_entropy`
and :class:`LinearOptions` are the building blocks of
:mod:`crossentropy.distributed`.
"""

from ._api import linear_cross_entropy, sharded_linear_cross_entropy
from ._distill import linear_distillation_loss
from ._prepare import LinearOptions, default_chunk_size
from ._stats import TokenStats, linear_cross_entropy_stats

__all__ = [
    "LinearOptions",
    "TokenStats",
    "default_chunk_size",
    "linear_cross_entropy",
    "linear_cross_entropy_stats",
    "linear_distillation_loss",
    "sharded_linear_cross_entropy",
]
