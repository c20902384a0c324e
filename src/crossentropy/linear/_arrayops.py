"""Array operations of the chunk engine, in place where the array library allows it.

:class:`Functional` writes them for any Array API library (new arrays each
time); :class:`NumpyOps` and :class:`TorchOps` override them with in-place
versions (NumPy ``out=`` and BLAS accumulation, PyTorch ``*_`` methods), which is
what keeps ``linear_cross_entropy`` at one logits buffer.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from .._core.namespace import is_torch
from ..kernels import native
from ..kernels.blas import gemm

__all__ = ["Functional", "NumpyOps", "TorchOps", "ops_for"]


class Functional:
    """Array operations written for any Array API library (new arrays each time).

    Subclasses override them with in-place versions where the library has
    them (NumPy ``out=``, PyTorch ``*_``), which is what keeps the memory at
    one logits buffer.
    """

    mutable = False
    fold_scale = False  # the engine may apply the row scale after the GEMMs (see _engine)

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def buffer(self, size: int, dtype: Any, dev: Any) -> Any:
        return None

    def mm(self, a: Any, b: Any, out: Any) -> Any:
        """``a @ b``, written into ``out`` (compute dtype) when there is one."""
        y = self.xp.matmul(a, b)
        return y if out is None or y.dtype == out.dtype else self.xp.astype(y, out.dtype)

    def exp_(self, a: Any) -> Any:
        return self.xp.exp(a)

    def exp(self, a: Any, name: str | None = None) -> Any:
        """``exp(a)``; with ``name``, written into a scratch block of that name,
        reused from one call to the next (it must not be kept)."""
        return self.xp.exp(a)

    def sub(self, a: Any, b: Any, name: str | None = None) -> Any:
        """``a - b`` (into scratch ``name``, as :meth:`exp`)."""
        return a - b

    def mix(self, p: Any, q: Any, beta: float, name: str | None = None) -> Any:
        """``beta * p + (1 - beta) * q`` (into scratch ``name``, as :meth:`exp`)."""
        return beta * p + (1 - beta) * q

    def clip_min_(self, a: Any, low: float) -> Any:
        """``max(a, low)``, in place where possible."""
        return self.xp.clip(a, min=low)

    def log_(self, a: Any) -> Any:
        return self.xp.log(a)

    def tanh_(self, a: Any) -> Any:
        return self.xp.tanh(a)

    def exp_sum_(self, a: Any, s: Any) -> tuple[Any, Any]:
        """``(exp(a), s + exp(a).sum(axis=0))``, ``a`` exponentiated in place where possible."""
        a = self.exp_(a)
        return a, s + self.xp.sum(a, axis=0)

    def sum_exp(self, a: Any) -> Any:
        """``exp(a).sum(axis=0)``, ``a`` left as it is."""
        return self.xp.sum(self.exp(a), axis=0)

    def assign_(self, dst: Any, value: Any) -> Any:
        """``value`` written into ``dst`` where possible (else ``value`` itself)."""
        return value

    def rsub_(self, a: Any, b: Any) -> Any:
        """``b - a``, written into ``a`` where possible."""
        return b - a

    def dot_columns(self, a: Any, b: Any) -> Any:
        """``(a * b).sum(axis=0)`` of two ``(block, rows)`` blocks."""
        return self.xp.sum(a * b, axis=0)

    def addmm_(self, acc: Any, a: Any, b: Any) -> Any:
        """``acc + a @ b`` (in place where possible)."""
        y = self.xp.matmul(a, b)
        return acc + (y if y.dtype == acc.dtype else self.xp.astype(y, acc.dtype))

    def sub_at(self, g: Any, hit: Any, col: Any, vals: Any) -> Any:
        """``g[col[n], n] -= vals[n]`` for the rows ``n`` where ``hit`` (``g`` is a
        ``(block, rows)`` block): a one-hot of the block, as the standard has no
        scatter."""
        xp = self.xp
        cols = xp.arange(g.shape[0], device=array_api_compat.device(g))
        onehot = xp.astype(cols[:, None] == col[None, :], g.dtype)
        return g - onehot * xp.where(hit, vals, xp.zeros_like(vals))[None, :]

    def put_rows(self, dst: Any, rows: Any, vals: Any) -> Any:
        raise NotImplementedError  # functional libraries collect the rows instead


class NumpyOps(Functional):
    mutable = True
    fold_scale = True

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._scratch: dict[str, np.ndarray] = {}

    def _tmp(self, name: str, shape: tuple, dtype: Any) -> np.ndarray:
        size = math.prod(shape)
        buf = self._scratch.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)

    def buffer(self, size: int, dtype: Any, dev: Any) -> Any:
        return np.empty(size, dtype=dtype)

    def sum_exp(self, a: Any) -> Any:
        return self.exp(a, "sum_exp").sum(axis=0)

    def exp(self, a: Any, name: str | None = None) -> Any:
        return np.exp(a) if name is None else np.exp(a, out=self._tmp(name, a.shape, a.dtype))

    def sub(self, a: Any, b: Any, name: str | None = None) -> Any:
        if name is None:
            return a - b
        return np.subtract(a, b, out=self._tmp(name, a.shape, np.result_type(a, b)))

    def mix(self, p: Any, q: Any, beta: float, name: str | None = None) -> Any:
        out = np.multiply(q, 1 - beta, out=self._tmp(name or "mix", q.shape, q.dtype))
        out += np.multiply(p, beta, out=self._tmp("mix'", p.shape, p.dtype))
        return out if name is not None else out.copy()

    def clip_min_(self, a: Any, low: float) -> Any:
        return np.maximum(a, low, out=a)

    def mm(self, a: Any, b: Any, out: Any) -> Any:
        if out is None or a.dtype != out.dtype:
            return super().mm(a, b, out) if out is None else _assign(out, a @ b)
        if gemm(a, b, out, 0.0):
            return out
        return np.matmul(a, b, out=out)

    def exp_(self, a: Any) -> Any:
        return np.exp(a, out=a)

    def tanh_(self, a: Any) -> Any:
        return np.tanh(a, out=a)

    def log_(self, a: Any) -> Any:
        return np.log(a, out=a)

    def assign_(self, dst: Any, value: Any) -> Any:
        dst[...] = value
        return dst

    def rsub_(self, a: Any, b: Any) -> Any:
        return np.subtract(b, a, out=a)

    def dot_columns(self, a: Any, b: Any) -> Any:
        return np.einsum("ij,ij->j", a, b)

    def exp_sum_(self, a: Any, s: Any) -> tuple[Any, Any]:
        # one fused pass in C (NumPy's exp and its sum along axis 0 are two)
        total = np.array(s, dtype=a.dtype, copy=True)
        if native.exp_sum(a, total):
            return a, total
        return super().exp_sum_(a, s)

    def addmm_(self, acc: Any, a: Any, b: Any) -> Any:
        if gemm(a, b, acc, 1.0):  # BLAS accumulates into acc itself
            return acc
        # NumPy's matmul cannot accumulate: product into a reused scratch, then add
        tmp = self._tmp("mm", acc.shape, np.result_type(a, b))
        np.matmul(a, b, out=tmp)
        acc += tmp
        return acc

    def sub_at(self, g: Any, hit: Any, col: Any, vals: Any) -> Any:
        g[col, np.arange(g.shape[1])] -= np.where(hit, vals, 0)
        return g

    def put_rows(self, dst: Any, rows: Any, vals: Any) -> Any:
        dst[rows] = vals
        return dst


# NumPy's matmul has no ``C += A @ B``; its BLAS does.  NumPy's wheels ship
# OpenBLAS with its CBLAS symbols, which ctypes reaches in the library NumPy
# has already loaded (so the same threads run both).  Anything unexpected
# (another BLAS, another layout) falls back to matmul + add.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


class TorchOps(Functional):
    """In-place PyTorch operations; on float32/float64 CPU tensors the
    exponentials go through NumPy views of the same memory (NumPy's
    vectorised ``exp`` and the fused ``exp_sum`` kernel, several times faster
    than PyTorch's ``exp`` on the same CPU)."""

    mutable = True

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._numpy = NumpyOps(xp)

    @staticmethod
    def _host(a: Any) -> np.ndarray | None:
        """A NumPy view of a float32/float64 CPU tensor, or ``None``."""
        if a.device.type != "cpu" or a.element_size() == 2 or not a.is_floating_point():
            return None
        return a.detach().numpy()

    def exp_(self, a: Any) -> Any:
        host = self._host(a)
        if host is None:
            return a.exp_()
        with np.errstate(over="ignore"):
            np.exp(host, out=host)
        return a

    def _numpy_op(self, fallback: Any, method: str, *arrays: Any, **kw: Any) -> Any:
        """``NumpyOps.<method>`` on NumPy views of CPU tensors, as a tensor; else
        ``fallback`` (the PyTorch way)."""
        import torch

        hosts = [self._host(a) for a in arrays]
        if any(h is None for h in hosts):
            return fallback()
        with np.errstate(over="ignore", divide="ignore"):
            return torch.from_numpy(np.asarray(getattr(self._numpy, method)(*hosts, **kw)))

    def exp(self, a: Any, name: str | None = None) -> Any:
        import torch

        return self._numpy_op(lambda: torch.exp(a), "exp", a, name=name)

    def sub(self, a: Any, b: Any, name: str | None = None) -> Any:
        return self._numpy_op(lambda: a - b, "sub", a, b, name=name)

    def mix(self, p: Any, q: Any, beta: float, name: str | None = None) -> Any:
        return self._numpy_op(lambda: (q * (1 - beta)).add_(p, alpha=beta), "mix", p, q,
                              beta=beta, name=name)  # fmt: skip

    def clip_min_(self, a: Any, low: float) -> Any:
        return a.clamp_(min=low)

    def dot_columns(self, a: Any, b: Any) -> Any:
        return self._numpy_op(lambda: (a * b).sum(0), "dot_columns", a, b)

    def log_(self, a: Any) -> Any:
        host = self._host(a)
        if host is None:
            return a.log_()
        with np.errstate(divide="ignore"):
            np.log(host, out=host)
        return a

    def exp_sum_(self, a: Any, s: Any) -> tuple[Any, Any]:
        import torch

        host, sums = self._host(a), self._host(s)
        if host is None or sums is None:
            return super().exp_sum_(a, s)
        with np.errstate(over="ignore"):
            _, total = self._numpy.exp_sum_(host, sums)
        return a, torch.from_numpy(total)

    def sum_exp(self, a: Any) -> Any:
        import torch

        host = self._host(a)
        if host is None:
            return super().sum_exp(a)
        with np.errstate(over="ignore"):
            return torch.from_numpy(np.asarray(self._numpy.sum_exp(host)))

    def buffer(self, size: int, dtype: Any, dev: Any) -> Any:
        import torch

        return torch.empty(size, dtype=dtype, device=dev)

    def mm(self, a: Any, b: Any, out: Any) -> Any:
        import torch

        if out is None:
            return super().mm(a, b, out)
        if a.dtype != out.dtype:  # half-precision GEMM, float32 block
            return out.copy_(a @ b)
        return torch.matmul(a, b, out=out)

    def tanh_(self, a: Any) -> Any:
        return a.tanh_()

    def assign_(self, dst: Any, value: Any) -> Any:
        return dst.copy_(value)

    def rsub_(self, a: Any, b: Any) -> Any:
        return a.neg_().add_(b)


    def addmm_(self, acc: Any, a: Any, b: Any) -> Any:
        if a.dtype == acc.dtype:
            return acc.addmm_(a, b)
        acc += a @ b
        return acc

    def sub_at(self, g: Any, hit: Any, col: Any, vals: Any) -> Any:
        # every row once (0 where the target is elsewhere): no nonzero(), no device sync
        import torch

        rows = torch.arange(g.shape[1], device=g.device)
        g[col, rows] -= torch.where(hit, vals, torch.zeros_like(vals))
        return g

    def put_rows(self, dst: Any, rows: Any, vals: Any) -> Any:
        if isinstance(rows, slice):
            dst[rows].copy_(vals)
        else:
            dst.index_copy_(0, rows, vals.to(dst.dtype))
        return dst


def _assign(out: Any, value: Any) -> Any:
    out[...] = value
    return out


def ops_for(xp: Any, x: Any) -> Functional:
    if array_api_compat.is_numpy_array(x):
        return NumpyOps(xp)
    if is_torch(x):
        return TorchOps(xp)
    return Functional(xp)
