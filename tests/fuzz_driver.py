"""The fuzz driver: random calls of the class-index losses, checked against PyTorch.

Run by :mod:`tests.test_fuzz` in subprocess shards, so that a crash of the
interpreter is reported with the case that caused it::

    python -m tests.fuzz_driver --seed 7 --count 200    # one shard: JSON lines on stdout
    python -m tests.fuzz_driver --case '{"fn": ...}'     # one case again (a reproducer)

Each case is a JSON description drawn by hypothesis (:func:`cases`): the function
(``cross_entropy``, ``nll_loss``, ``linear_cross_entropy``), how it is called
(value, ``value_and_grad``, PyTorch autograd, ``out=`` / ``overwrite_input``),
the array library, the logits' dtype and layout (C or Fortran order, a moved
class axis, negative or zero strides, slices), the target's dtype, layout and
values (in range, ``ignore_index``, out of range by one, the dtype's extremes),
``ignore_index`` and every option.  :func:`run_case` makes the arrays from the
description, calls the function on the kernels and on the portable path, and
compares both with PyTorch in float64 (or checks that both raise the error
PyTorch would).  The driver prints ``{"case": ...}`` before a case and
``{"result": ...}`` after it; a shard that dies leaves its last case unanswered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from typing import Any

import numpy as np

import crossentropy as ce

FLOATS = ("float64", "float32", "float16", "bfloat16")
INTS = ("int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64")
LAYOUTS = ("c", "f", "moved", "negative", "slice", "zero")
MODES = ("value", "grad", "autograd", "out", "overwrite")
TOLERANCE = {"float64": 1e-9, "float32": 2e-4, "float16": 2e-2, "bfloat16": 6e-2}


# -- the cases --------------------------------------------------------------------------


def cases() -> Any:
    """The hypothesis strategy of case descriptions (JSON-serialisable dicts)."""
    from hypothesis import strategies as st

    @st.composite
    def case(draw: Any) -> dict:
        fn = draw(st.sampled_from(["cross_entropy"] * 3 + ["nll_loss", "linear_cross_entropy"]))
        backend = draw(st.sampled_from(["numpy", "torch"]))
        big = draw(st.integers(0, 19)) == 0  # the kernels' threads start at 2**16 entries
        if big:  # one long batch axis: 100 000 to 1.4 million logits
            n_classes = draw(st.sampled_from([33, 300, 700]))
            batch = [
                draw(st.integers(3000, 4000)) if n_classes == 33 else draw(st.integers(300, 2000))
            ]
        else:
            n_classes = draw(st.sampled_from([0, 1, 2, 3, 5, 31, 33, 40, 300]))
            batch = draw(st.lists(st.integers(0, 6), min_size=0, max_size=3))
        if fn == "linear_cross_entropy":
            batch = batch or [3]
        probs = fn == "cross_entropy" and draw(st.integers(0, 3)) == 0
        ignore = draw(st.sampled_from([-100, 0, 1, "C", "C-1", "max", "min", 2**64 - 1, None]))
        return {
            "fn": fn,
            "backend": backend,
            "mode": draw(st.sampled_from(MODES)),
            "dtype": draw(st.sampled_from(FLOATS)),
            "n_classes": n_classes,
            "batch": batch,
            "class_axis": draw(st.integers(0, len(batch))),  # where the classes go
            "layout": draw(st.sampled_from(LAYOUTS)),
            "probs": probs,
            "target_dtype": draw(st.sampled_from(INTS)),
            "target_layout": draw(st.sampled_from(LAYOUTS)),
            "specials": draw(
                st.lists(
                    st.tuples(
                        st.integers(0, 10**6),
                        st.sampled_from(["ignore", "C", "-1", "min", "max", "big"]),
                    ),
                    max_size=3,
                )
            ),
            "ignore_index": ignore,
            "weight": draw(st.booleans()),
            "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
            "label_smoothing": draw(st.sampled_from([0.0, 0.0, 0.2])),
            "z_loss": draw(st.sampled_from([0.0, 0.0, 0.01])),
            "softcap": draw(st.sampled_from([None, None, 3.0])),
            "values": draw(st.sampled_from(["normal", "normal", "large", "padding", "inf"])),
            "chunk_size": draw(st.sampled_from([None, 1, 2, (2, 3)])),
            "seed": draw(st.integers(0, 2**32 - 1)),
        }

    return case()


# -- arrays from a description -------------------------------------------------------------


def _ignore_value(case: dict) -> int | None:
    v, n = case["ignore_index"], case["n_classes"]
    info = np.iinfo(case["target_dtype"])
    return {"C": n, "C-1": n - 1, "max": int(info.max), "min": int(info.min)}.get(v, v)


def _target_values(case: dict, rng: np.random.Generator, size: int) -> list[int]:
    """The class indices as Python ints (exact for uint64), each one the dtype holds."""
    n, info = case["n_classes"], np.iinfo(case["target_dtype"])
    ignore = _ignore_value(case)
    if n == 0:  # only ignore_index is valid: make it the usual value
        fill = ignore if ignore is not None and info.min <= ignore <= info.max else 0
        values = [fill] * size
    else:
        values = [int(v) for v in rng.integers(0, min(n, int(info.max) + 1), size=size)]
    specials = {"C": n, "-1": -1, "min": int(info.min), "max": int(info.max), "big": 2**40,
                "ignore": ignore}  # fmt: skip
    for where, kind in case["specials"]:
        v = specials[kind]
        if size and v is not None and info.min <= v <= info.max:
            values[where % size] = v
    return values


def _logits(case: dict, rng: np.random.Generator, shape: tuple, counted: np.ndarray) -> np.ndarray:
    """float64 scores of ``shape`` (classes last): normal, large, NaN / -inf padding
    in the rows that do not count, or one infinite entry."""
    x = rng.normal(scale=2.0, size=shape)
    kind = case["values"]
    if not x.size:
        return x
    if kind == "large":
        x *= {"float64": 1e6, "float32": 1e4, "float16": 3e2, "bfloat16": 1e3}[case["dtype"]]
    elif kind == "padding":
        rows = x.reshape(-1, shape[-1])
        mask = ~counted.reshape(-1)
        rows[mask] = np.where(np.arange(int(mask.sum()))[:, None] % 2, np.nan, -np.inf)
    elif kind == "inf":
        x.reshape(-1)[rng.integers(0, x.size)] = rng.choice([np.inf, -np.inf])
    return x


def _in_layout(a: Any, how: str) -> Any:
    """The same values in the layout ``how``: C or Fortran order, negative strides
    (NumPy only), every other row of a larger array, or zero strides (the first
    row repeated: new values, the oracle sees them too)."""
    torch = sys.modules.get("torch")
    is_torch = torch is not None and isinstance(a, torch.Tensor)
    if a.ndim == 0 or a.shape[0] == 0:
        return a
    if how == "f" and a.ndim > 1:
        rev = tuple(reversed(range(a.ndim)))
        return a.permute(*rev).contiguous().permute(*rev) if is_torch else np.asfortranarray(a)
    if how == "negative" and not is_torch:
        return np.flip(np.flip(a, 0).copy(), 0)
    if how == "slice":
        big = (torch.zeros if is_torch else np.zeros)((2 * a.shape[0], *a.shape[1:]), dtype=a.dtype)
        big[::2] = a
        return big[::2]
    if how == "zero":
        return a[:1].expand(a.shape) if is_torch else np.broadcast_to(a[:1], a.shape)
    return a


def _floats(a: np.ndarray, dtype: str, backend: str) -> Any:
    """float64 ``a`` in ``dtype`` (bfloat16: ml_dtypes' for NumPy) of the backend."""
    if backend == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(getattr(torch, dtype))
    if dtype == "bfloat16":
        import ml_dtypes

        return a.astype(ml_dtypes.bfloat16)
    return a.astype(dtype)


def _ints(values: list[int], dtype: str, shape: tuple, backend: str) -> Any:
    t = np.array(values, dtype=object).astype(dtype).reshape(shape)
    if backend == "torch":
        import torch

        return torch.from_numpy(t)
    return t


def make_call(case: dict) -> dict:
    """The call of ``case``: ``fn``, ``args``, ``kwargs`` in the case's library, dtypes
    and layouts, and what the oracle needs (``axis``, ``values``, ``counted``)."""
    rng = np.random.default_rng(case["seed"])
    n, batch, backend = case["n_classes"], tuple(case["batch"]), case["backend"]
    values = _target_values(case, rng, math.prod(batch))
    ignore = _ignore_value(case)
    counted = np.array([v != ignore for v in values], dtype=bool).reshape(batch)
    call = {"ignore": ignore, "values": values, "counted": counted, "axis": len(batch)}
    kw = {"reduction": case["reduction"], "ignore_index": ignore}
    if case["fn"] != "nll_loss":
        kw.update(label_smoothing=case["label_smoothing"], z_loss=case["z_loss"])
        kw["softcap"] = case["softcap"]
    weight = rng.uniform(0.25, 2.0, size=n) if case["weight"] else None
    if weight is not None:
        kw["weight"] = _floats(weight, case["dtype"], backend)
    if case["fn"] == "linear_cross_entropy":
        d = int(rng.integers(0, 4))
        h = _floats(rng.normal(size=batch + (d,)), case["dtype"], backend)
        w = _floats(rng.normal(scale=2.0, size=(n, d)), case["dtype"], backend)
        kw["chunk_size"] = case["chunk_size"]
        call.update(fn=ce.linear_cross_entropy, x=_in_layout(h, case["layout"]), w=w)
    else:
        x = _logits(case, rng, batch + (n,), counted)
        if case["fn"] == "nll_loss" and n:  # log-probabilities
            x = x - ce.logsumexp(np.where(np.isfinite(x), x, 0.0), axis=-1, keepdims=True)
        axis = case["class_axis"] if batch else 0
        call["axis"] = axis
        if axis != (1 if batch else 0):
            kw["axis"] = axis - (len(batch) + 1) * (axis % 2)  # negative now and then
        x = np.moveaxis(_floats(x, case["dtype"], "numpy") if backend == "numpy" else x, -1, axis)
        x = _floats(x, case["dtype"], "torch") if backend == "torch" else x
        call.update(fn=getattr(ce, case["fn"]), x=_in_layout(x, case["layout"]))
    if case["probs"]:
        p = rng.dirichlet(np.ones(max(n, 1)), size=batch)[..., :n]
        p[rng.random(batch) < 0.3] = np.eye(max(n, 1))[0, :n]  # one-hot rows: zeros in t
        p = np.moveaxis(p, -1, call["axis"])
        t = _floats(p, case["dtype"], backend)
    else:
        t = _ints(values, case["target_dtype"], batch, backend)
    call["t"] = t = _in_layout(t, case["target_layout"])
    if not case["probs"]:  # the values in that layout (zero strides repeat the first row)
        flat = (t.numpy() if hasattr(t, "numpy") else np.asarray(t)).reshape(-1)
        call["values"] = [int(v) for v in flat]
        call["counted"] = np.array([v != ignore for v in call["values"]], bool).reshape(batch)
    call["kwargs"] = kw
    return call


# -- the oracle -------------------------------------------------------------------------------


def _f64(a: Any) -> np.ndarray | None:
    """float64 NumPy values of a NumPy array or tensor (bfloat16 included)."""
    if a is None:
        return None
    if hasattr(a, "detach"):
        return a.detach().double().numpy()
    return np.asarray(a).astype(np.float64)


def expected_error(case: dict, call: dict) -> type | None:
    """The exception type the call must raise (the class-index check), or ``None``."""
    if case["probs"]:
        return None
    n = case["n_classes"]
    bad = [v for v, c in zip(call["values"], call["counted"].reshape(-1)) if c and not 0 <= v < n]
    return ce.TargetIndexError if bad else None


def oracle(case: dict, call: dict) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's value and gradient (of the sum) with respect to the input, in float64.

    Rows that do not count get zero logits first: their loss and gradient are 0
    here whatever their logits (PyTorch gives NaN gradients for NaN rows)."""
    import torch
    import torch.nn.functional as F

    kw = call["kwargs"]
    red, eps = kw["reduction"], kw.get("label_smoothing", 0.0)
    cap, zl = kw.get("softcap"), kw.get("z_loss", 0.0)
    x = torch.from_numpy(np.ascontiguousarray(_f64(call["x"]))).requires_grad_()
    w = None if "weight" not in kw else torch.from_numpy(_f64(kw["weight"]))
    if case["fn"] == "linear_cross_entropy":
        rows = math.prod(case["batch"])
        logits = x.reshape(rows, x.shape[-1]) @ torch.from_numpy(_f64(call["w"])).T
    else:
        logits = torch.movedim(x, call["axis"], -1)
        logits = logits.reshape(math.prod(case["batch"]), logits.shape[-1])
    counted = torch.from_numpy(call["counted"].reshape(-1))
    if case["probs"]:
        counted = torch.ones(logits.shape[0], dtype=torch.bool)
    logits = torch.where(counted[:, None], logits, 0.0)
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    if case["probs"]:
        t = torch.movedim(torch.from_numpy(_f64(call["t"])), call["axis"], -1)
        rows = _probability_rows(logits, t.reshape(logits.shape), w, eps)
        denom = rows.shape[0] * (logits.shape[-1] > 0)  # PyTorch's numel / C: NaN at C = 0
    else:
        t = [v if c else -100 for v, c in zip(call["values"], counted.tolist())]
        t = torch.tensor(t, dtype=torch.int64)
        fn = F.nll_loss if case["fn"] == "nll_loss" else F.cross_entropy
        # (PyTorch's smoothing of no classes is 0 / 0 even in ignored rows: none here)
        smooth = case["fn"] != "nll_loss" and logits.shape[-1] > 0
        extra = {"label_smoothing": eps} if smooth else {}
        rows = fn(logits, t, w, reduction="none", **extra)
        w_t = counted * (w[t.clamp(min=0)] if w is not None and w.numel() else 1.0)
        denom = w_t.sum()
    if zl and logits.shape[-1]:  # (no classes: no loss at all, z-loss included)
        rows = rows + torch.where(counted, zl * torch.logsumexp(logits, -1) ** 2, 0.0)
    rows = rows.reshape(tuple(case["batch"]))
    value = rows if red == "none" else rows.sum() if red == "sum" else rows.sum() / denom
    if value.requires_grad:
        value.sum().backward()
    g = x.grad if x.grad is not None else torch.zeros_like(x)
    return value.detach().numpy(), g.numpy()


def _probability_rows(logits: Any, t: Any, w: Any, eps: float) -> Any:
    import torch

    n = logits.shape[-1]
    tp = (1 - eps) * t + eps / n if n else t
    wt = tp if w is None else tp * w
    logp = torch.log_softmax(logits, -1)
    return -torch.where(wt == 0, 0.0, wt * logp).sum(-1)


# -- one case ---------------------------------------------------------------------------------


def ours(case: dict, call: dict) -> tuple[Any, Any]:
    """Our ``(value, gradient of the sum with respect to the input)`` of the call."""
    f, x, t, kw, mode = call["fn"], call["x"], call["t"], dict(call["kwargs"]), case["mode"]
    lead = (x, call["w"], t) if "w" in call else (x, t)
    if mode == "value":
        return f(*lead, **kw), None
    if mode == "autograd" and hasattr(x, "requires_grad"):
        xs = x.detach().requires_grad_()
        value = f(xs, *lead[1:], **kw)
        if value.requires_grad:
            value.sum().backward()
        return value, xs.grad
    if mode in ("out", "overwrite") and case["fn"] == "cross_entropy":
        return _in_place(case, call, kw)
    return ce.value_and_grad(f)(*lead, **kw)


def _in_place(case: dict, call: dict, kw: dict) -> tuple[Any, Any]:
    """``kernels.cross_entropy_value_and_grad`` with ``out=`` (a fresh buffer in the
    input's layout) or ``overwrite_input`` (a copy of the input, or the input itself
    when it has zero strides: then a ``ValueError`` is the answer)."""
    x, t = call["x"], call["t"]
    if kw.get("softcap") is None:
        kw.pop("softcap", None)
    weight = kw.pop("weight", None)
    is_numpy = isinstance(x, np.ndarray)
    buf = (
        np.empty_like(x) if is_numpy else x.clone(memory_format=__import__("torch").preserve_format)
    )
    buf[...] = x
    strides = x.strides if is_numpy else x.stride()
    expanded = math.prod(x.shape) and any(s == 0 for s, n in zip(strides, x.shape) if n > 1)
    if case["mode"] == "overwrite" and expanded:
        try:
            ce.kernels.cross_entropy_value_and_grad(x, t, weight, overwrite_input=True, **kw)
        except ValueError as e:
            if "zero stride" not in str(e) and "read-only" not in str(e):
                raise
        else:
            raise AssertionError("overwrite_input=True on an input with zero strides returned")
        return ce.value_and_grad(ce.cross_entropy)(x, t, weight, **kw)
    if case["mode"] == "out":
        return ce.kernels.cross_entropy_value_and_grad(x, t, weight, out=buf, **kw)
    return ce.kernels.cross_entropy_value_and_grad(buf, t, weight, overwrite_input=True, **kw)


def _compare(what: str, got: Any, want: np.ndarray, dtype: str, shape: tuple) -> str | None:
    """A message if ``got`` (of the input's ``dtype``, this ``shape``) is not ``want``."""
    if tuple(np.shape(got)) != tuple(shape):
        return f"{what}: shape {tuple(np.shape(got))}, expected {tuple(shape)}"
    if str(got.dtype).removeprefix("torch.") != dtype:
        return f"{what}: dtype {got.dtype}, expected {dtype}"
    got64 = _f64(got)
    with np.errstate(over="ignore"):  # what the dtype holds: beyond float16's range, inf
        want = _f64(_floats(want, dtype, "numpy"))
    tol = TOLERANCE[dtype]
    finite = np.abs(want[np.isfinite(want)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    try:
        np.testing.assert_allclose(got64, want, rtol=tol, atol=tol * scale, equal_nan=True)
    except AssertionError as e:
        return f"{what}: {e}"
    return None


def run_case(case: dict) -> dict:
    """``{"status": "ok" | "fail", ...}`` for one case, on the kernels and the portable path."""
    call = make_call(case)
    want = expected_error(case, call)
    got = {}
    for path in ("kernels", "portable"):
        context = contextlib.nullcontext() if path == "kernels" else ce.kernels.disabled()
        with context, warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("ignore", ce.ProbabilitiesAsLogitsWarning)
            try:
                got[path] = ours(case, call)
            except Exception as e:  # judged below: expected or a failure
                got[path] = e
    problems = []
    for path, result in got.items():
        if want is not None and not isinstance(result, want):
            problems.append(f"{path}: expected {want.__name__}, got {result!r}")
        elif want is None and isinstance(result, Exception):
            problems.append(f"{path}: raised {type(result).__name__}: {result}")
    if want is not None or problems:
        return {"status": "fail" if problems else "ok", "problems": problems,
                "raised": None if want is None else want.__name__}  # fmt: skip
    ref_value, ref_grad = oracle(case, call)
    shape = tuple(np.shape(call["x"]))
    for path, (value, grad) in got.items():
        problems.append(_compare(f"{path} value", value, ref_value, case["dtype"], ref_value.shape))
        if grad is not None:
            problems.append(_compare(f"{path} gradient", grad, ref_grad, case["dtype"], shape))
    problems = [p for p in problems if p]
    return {"status": "fail" if problems else "ok", "problems": problems}


# -- the command line ---------------------------------------------------------------------------


def _emit(record: dict) -> None:
    print(json.dumps(record, default=str), flush=True)


def shard(seed: int, count: int) -> None:
    """``count`` cases drawn by hypothesis from ``seed``: JSON lines on stdout."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    @with_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(cases())
    def each(case: dict) -> None:
        _emit({"case": case})
        try:
            result = run_case(case)
        except Exception as e:  # a failure of the driver itself: report it, go on
            import traceback

            result = {"status": "fail", "problems": [traceback.format_exc(), repr(e)]}
        _emit({"result": result})

    each()
    _emit({"done": count})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--case", help="one case (its JSON) to run again")
    parser.add_argument("--crash", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.crash:  # the runner's own test: a case that kills the interpreter
        _emit({"case": {"crash": True}})
        import ctypes

        ctypes.string_at(0)
    if args.case:
        _emit({"result": run_case(json.loads(args.case))})
        return
    shard(args.seed, args.count)


if __name__ == "__main__":
    main()
