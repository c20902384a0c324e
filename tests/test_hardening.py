"""Hostile input at the native boundary and in the argument checks: no crash, no
silent wrong answer, a clear error naming the argument.

Calls that once crashed the interpreter run in a subprocess
(:func:`tests.support.run_python`), so that a crash fails its test instead of
the test run.  The oracle is PyTorch in float64 where it accepts the call.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels._inplace import _self_overlapping
from tests.support import assert_close, run_python, torch_oracle

torch = pytest.importorskip("torch")


def _isolated(code: str, timeout: float = 120.0) -> str:
    """Run ``code`` in a subprocess; fail on a crash or an error, return its stdout."""
    done = run_python("-c", textwrap.dedent(code), timeout=timeout)
    assert done.returncode == 0, (
        f"exit status {done.returncode} (-11: segmentation fault)\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def _logits(rng: np.random.Generator, shape: tuple, dtype: str = "float64") -> np.ndarray:
    return rng.normal(scale=2.0, size=shape).astype(dtype)


# -- class indices the kernel must never trust -------------------------------------------


class TestIgnoreIndexIsAnInteger:
    """``ignore_index`` as PyTorch takes it: an int (NumPy integers too), never a float."""

    def test_float_beyond_2_53_is_refused_not_read_out_of_bounds(self):
        # float(2**53) == 2**53 + 1 as floats: the row was once treated as ignored by the
        # check and read at class 2**53 + 1 by the kernel
        out = _isolated(
            """
            import numpy as np, torch, crossentropy as ce
            for x, t in [(np.zeros((4, 5), np.float32), np.array([0, 1, 2, 2**53 + 1])),
                         (torch.zeros(4, 5), torch.tensor([0, 1, 2, 2**53 + 1]))]:
                try:
                    ce.cross_entropy(x, t, ignore_index=float(2**53))
                except TypeError as e:
                    print(e)
            """
        )
        assert out.count("ignore_index must be an integer (or None), got 9007199254740992.0") == 2

    @pytest.mark.parametrize("value", [1.5, 1.0, float("nan"), True, "1", torch.tensor(1)])
    @pytest.mark.parametrize(
        "call",
        ["cross_entropy", "nll_loss", "linear_cross_entropy", "value_and_grad_kernel",
         "CrossEntropyLoss", "NLLLoss"],
    )  # fmt: skip
    def test_non_integers_raise_type_error(self, rng, call, value):
        x, t = _logits(rng, (3, 4)), np.array([0, 1, 2])
        calls = {
            "cross_entropy": lambda: ce.cross_entropy(x, t, ignore_index=value),
            "nll_loss": lambda: ce.nll_loss(x, t, ignore_index=value),
            "linear_cross_entropy": lambda: ce.linear_cross_entropy(
                x, np.ones((4, 4)), t, ignore_index=value
            ),
            "value_and_grad_kernel": lambda: kernels.cross_entropy_value_and_grad(
                x, t, ignore_index=value
            ),
            "CrossEntropyLoss": lambda: ce.nn.CrossEntropyLoss(ignore_index=value)(x, t),
            "NLLLoss": lambda: ce.nn.NLLLoss(ignore_index=value)(x, t),
        }
        with pytest.raises(TypeError, match=r"ignore_index must be an integer \(or None\), got"):
            calls[call]()

    @pytest.mark.parametrize("kernel", [True, False])
    def test_one_and_a_half_ignores_nothing_on_either_path_it_raises(self, rng, kernel):
        # the kernel once ignored class 1 and the portable path nothing
        x, t = _logits(rng, (3, 4)), np.array([0, 1, 2])
        with kernels.disabled() if not kernel else contextlib.nullcontext():
            with pytest.raises(TypeError, match="got 1.5 of type float"):
                ce.cross_entropy(x, t, ignore_index=1.5)

    @pytest.mark.parametrize("kind", ["int32", "int64", "uint8"])
    def test_numpy_integers_work(self, rng, kind):
        x, t = _logits(rng, (5, 4)), np.array([0, 1, 2, 1, 3])
        ii = np.dtype(kind).type(1)
        expected = torch_oracle("cross_entropy", x, t, ignore_index=1)
        assert_close(ce.cross_entropy(x, t, ignore_index=ii), expected)
        assert_close(
            ce.nll_loss(x, t, ignore_index=ii), torch_oracle("nll_loss", x, t, ignore_index=1)
        )


class TestUnsignedTargets:
    """Every integer target dtype, ``ignore_index`` compared exactly in its range."""

    @pytest.mark.parametrize("kernel", [True, False])
    @pytest.mark.parametrize("reduction", ["sum", "none"])
    def test_uint64_max_as_ignore_index(self, rng, kernel, reduction):
        # once: the kernel saw -1 with ignoring off, counted the row (a loss of 3.13 and a
        # gradient) and read out of bounds
        x = _logits(rng, (4, 5), "float32")
        t = np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64)
        with kernels.disabled() if not kernel else contextlib.nullcontext():
            loss, g = ce.value_and_grad(ce.cross_entropy)(
                x, t, ignore_index=2**64 - 1, reduction=reduction
            )
        ref_x = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        ref = torch.nn.functional.cross_entropy(
            ref_x, torch.tensor([0, 1, 2, -100]), reduction=reduction
        )
        ref.sum().backward()
        assert_close(loss, ref.detach().numpy(), rtol=1e-6)
        assert_close(g, ref_x.grad.numpy(), rtol=1e-6, atol=1e-7)
        assert not np.any(g[3])

    @pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
    def test_torch_unsigned_tensors(self, rng, dtype):
        x = _logits(rng, (4, 5))
        t = np.array([0, 4, 2, np.iinfo(dtype).max], dtype=dtype)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        top = int(np.iinfo(dtype).max)
        expected = torch_oracle("cross_entropy", x, np.array([0, 4, 2, -100]), reduction="sum")
        assert_close(ce.cross_entropy(xt, tt, ignore_index=top, reduction="sum"), expected)
        with pytest.raises(ce.TargetIndexError, match=f"Target {top} is out of bounds"):
            ce.cross_entropy(xt, tt)
        h, w = torch.from_numpy(x), torch.eye(5, dtype=torch.float64)
        assert_close(ce.linear_cross_entropy(h, w, tt, ignore_index=top, reduction="sum"), expected)

    @pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "uint32", "uint64"])
    def test_extremes_of_every_dtype_are_out_of_range(self, rng, dtype):
        x = _logits(rng, (3, 5), "float32")
        for value in {int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)} - {0}:
            t = np.array([0, value, 1], dtype=dtype)
            with pytest.raises(ce.TargetIndexError, match=f"Target {value} is out of bounds"):
                ce.cross_entropy(x, t)


class TestMaskedArrays:
    def test_refused_before_anything(self):
        # once: the check saw the masked values, the kernel read the raw 10**12
        out = _isolated(
            """
            import numpy as np, crossentropy as ce
            t = np.ma.array([0, 1, 2, 10**12], mask=[0, 0, 0, 1])
            try:
                ce.cross_entropy(np.zeros((4, 5), np.float32), t)
            except TypeError as e:
                print(e)
            """
        )
        assert "target is a masked array (numpy.ma): its mask would be ignored" in out
        assert "target.filled(ignore_index)" in out

    @pytest.mark.parametrize("where", ["input", "weight"])
    def test_named_wherever_they_appear(self, where):
        x, t, w = np.zeros((2, 3)), np.array([0, 1]), np.ones(3)
        args = {"input": x, "target": t, "weight": w}
        args[where] = np.ma.array(args[where])
        with pytest.raises(TypeError, match=f"{where} is a masked array"):
            ce.cross_entropy(**args)
        with pytest.raises(TypeError, match="p is a masked array"):
            ce.entropy(np.ma.array([0.5, 0.5]))

    def test_other_subclasses_compute_as_plain_arrays(self, rng):
        x = _logits(rng, (3, 4))
        t = np.array([0, 3, 1])
        with warnings.catch_warnings():  # NumPy discourages np.matrix
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            m = np.asmatrix(x)
        out = ce.cross_entropy(m, t, reduction="none")
        assert type(out) is np.ndarray
        assert_close(out, torch_oracle("cross_entropy", x, t, reduction="none"))


class TestKernelRangeCheck:
    """The C code checks each class index where it reads it: with the Python check
    switched off, an out-of-range index still raises, and nothing is read outside."""

    @pytest.mark.parametrize("layout", ["rows", "columns"])
    @pytest.mark.parametrize(
        ("dtype", "value"),
        [(d, v) for d in ("int64", "int32") for v in (-1, "C", 2**31 - 1, -(2**31))]
        + [("int64", 10**12)],  # beyond int32
    )
    def test_bad_index_past_the_check_raises(self, layout, dtype, value):
        n_classes = 40 if layout == "rows" else 5
        value = n_classes if value == "C" else value
        out = _isolated(
            f"""
            import numpy as np, crossentropy as ce
            import crossentropy._core.prepared as prepared
            prepared.check_index_target = lambda *a, **k: None   # the Python check is off
            x = np.zeros((6, {n_classes}), np.float32)
            t = np.array([0, 1, {value}, 2, 3, 0], dtype="{dtype}")
            for kw in [dict(reduction="mean"), dict(reduction="sum"), dict(reduction="none")]:
                for grad in (False, True):
                    f = ce.value_and_grad(ce.cross_entropy) if grad else ce.cross_entropy
                    try:
                        f(x, t, **kw)
                        print("returned")
                    except ce.TargetIndexError as e:
                        print("raised:", e)
            """
        )
        lines = out.strip().splitlines()
        assert len(lines) == 6 and all(line.startswith("raised:") for line in lines), out
        assert f"Target {value} is out of bounds" in lines[0]

    def test_target_changed_by_another_thread_does_not_crash(self):
        # once: a segmentation fault within seconds (the kernel runs without the GIL)
        out = _isolated(
            """
            import threading, time
            import numpy as np, crossentropy as ce
            x = np.zeros((20000, 50), np.float32)
            t = np.zeros(20000, np.int64)
            stop = time.monotonic() + 2.0
            def flip():
                while time.monotonic() < stop:
                    t[::7] = 10**12
                    t[::7] = 3
            worker = threading.Thread(target=flip)
            worker.start()
            ok = raised = 0
            while time.monotonic() < stop:
                try:
                    ce.value_and_grad(ce.cross_entropy)(x, t)
                    ok += 1
                except ce.TargetIndexError:
                    raised += 1
            worker.join()
            print(ok + raised)
            """,
            timeout=60,
        )
        assert int(out) > 0


# -- out= and overwrite_input ------------------------------------------------------------


class TestGradientBuffers:
    def test_out_aliasing_the_target_is_refused(self, rng):
        # once: 2.90 instead of 4.63, the gradient written over the targets being read
        x = _logits(rng, (4, 4))
        p = ce.softmax(_logits(rng, (4, 4)), axis=1)
        with pytest.raises(ValueError, match="out shares memory with target"):
            kernels.cross_entropy_value_and_grad(x, p, out=p.T)
        loss, g = kernels.cross_entropy_value_and_grad(x, p, out=np.empty((4, 4)))
        assert_close(loss, torch_oracle("cross_entropy", x, p))

    def test_out_partly_overlapping_input_is_refused(self, rng):
        buf = _logits(rng, (5, 4))
        x = buf[:4]
        with pytest.raises(ValueError, match="out overlaps input without being input itself"):
            kernels.cross_entropy_value_and_grad(x, np.array([0, 1, 2, 3]), out=buf[1:])

    def test_out_overlapping_the_weight_is_refused(self, rng):
        buf = np.ones((5, 4))
        with pytest.raises(ValueError, match="out shares memory with weight"):
            kernels.cross_entropy_value_and_grad(
                _logits(rng, (4, 4)), np.array([0, 1, 2, 3]), buf[2], out=buf[1:]
            )

    def test_expanded_tensor_is_refused(self):
        # once: overwrite_input on an expanded (zero-stride) tensor gave a wrong loss
        x = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64).expand(4, 3)
        t = torch.tensor([0, 1, 2, 0])
        with pytest.raises(ValueError, match="input, with overwrite_input=True has a zero stride"):
            kernels.cross_entropy_value_and_grad(x, t, overwrite_input=True)
        out = torch.zeros(1, 3, dtype=torch.float64).expand(4, 3)
        with pytest.raises(ValueError, match="out has a zero stride"):
            kernels.cross_entropy_value_and_grad(x.contiguous(), t, out=out)

    def test_self_overlapping_buffer_is_refused(self, rng):
        # once accepted: rows 400 elements apart in a (4, 5000) out wrote over each other,
        # the last row (or, with threads, whichever came last) winning
        x, y = _logits(rng, (4, 5000)), np.array([0, 1, 2, 3])
        buf = np.zeros(4 * 5000)
        out = np.lib.stride_tricks.as_strided(buf, (4, 5000), (400 * 8, 8))
        shared = r"out has elements that share memory \(shape \(4, 5000\), strides \(400, 1\)\)"
        with pytest.raises(ValueError, match=shared):
            kernels.cross_entropy_value_and_grad(x, y, out=out)
        assert not buf.any()
        tout = torch.zeros(4 * 5000, dtype=torch.float64).as_strided((4, 5000), (400, 1))
        with pytest.raises(ValueError, match="out has elements that share memory"):
            kernels.cross_entropy_value_and_grad(torch.tensor(x), torch.tensor(y), out=tout)
        tx = torch.tensor(x.ravel()).as_strided((4, 5000), (400, 1))
        with pytest.raises(ValueError, match="overwrite_input=True has elements that share"):
            kernels.cross_entropy_value_and_grad(tx, torch.tensor(y), overwrite_input=True)

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(
        st.lists(st.tuples(st.integers(1, 4), st.integers(-7, 7)), min_size=1, max_size=3)
    )
    def test_overlap_test_never_misses_shared_memory(self, dims):
        shape = tuple(n for n, _ in dims)
        strides = tuple(s for _, s in dims)
        offsets = {sum(i * s for i, s in zip(index, strides)) for index in np.ndindex(*shape)}
        shares = len(offsets) < math.prod(shape)
        assert not shares or _self_overlapping(strides, shape)
        # C order and its permutations never share: never refused
        c_order = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
        assert not _self_overlapping(c_order, shape)
        assert not _self_overlapping(c_order[::-1], shape[::-1])

    @pytest.mark.parametrize(
        "make",
        [
            lambda: np.empty((5000, 4)).T,
            lambda: np.empty((4, 10000))[:, ::2],
            lambda: np.empty((8, 5000))[::2],
            lambda: np.empty((4, 5000))[::-1],
            lambda: np.asfortranarray(np.empty((4, 5000))),
        ],
    )
    def test_strided_buffers_of_their_own_are_written(self, rng, make):
        x, y = _logits(rng, (4, 5000)), np.array([0, 1, 2, 3])
        out = make()
        loss, g = kernels.cross_entropy_value_and_grad(x, y, out=out)
        xt = torch.tensor(x, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(xt, torch.tensor(y))
        ref.backward()
        assert np.shares_memory(g, out)
        assert_close(loss, ref.detach().numpy())
        assert_close(out, xt.grad.numpy())

    def test_input_that_is_the_target_cannot_be_overwritten(self, rng):
        p = ce.softmax(_logits(rng, (3, 4)), axis=1)
        with pytest.raises(ValueError, match="overwrite_input=True, shares memory with target"):
            kernels.cross_entropy_value_and_grad(p, p, overwrite_input=True)

    @pytest.mark.parametrize("kernel", [True, False])
    def test_non_finite_logits_warn_nothing(self, kernel):
        # the portable path of out= once leaked NumPy's RuntimeWarnings (errors under -W error)
        x = np.array([[np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf], [1.0, 2.0, 3.0]])
        t = np.array([0, 1, 2])
        with kernels.disabled() if not kernel else contextlib.nullcontext():
            loss, g = kernels.cross_entropy_value_and_grad(
                x, t, out=np.empty((3, 3)), reduction="none"
            )
        ref, ref_g = ce.value_and_grad(ce.cross_entropy)(x, t, reduction="none")
        assert_close(loss, ref)
        assert_close(g, ref_g)
        assert np.isnan(loss[0]) and np.isnan(loss[1]) and np.isfinite(loss[2])

    @pytest.mark.parametrize("out", [[[0.0, 0.0, 0.0]], (0.0,), "buffer"])
    def test_out_that_is_not_an_array(self, out):
        with pytest.raises(TypeError, match="out must be an array of input's library"):
            kernels.cross_entropy_value_and_grad(np.zeros((1, 3)), np.array([0]), out=out)
        with pytest.raises(TypeError, match=r"out must be an array of input's library \(Tensor\)"):
            kernels.cross_entropy_value_and_grad(
                torch.zeros(1, 3), torch.tensor([0]), out=np.zeros((1, 3), np.float32)
            )


# -- unclear errors made clear ---------------------------------------------------------


class TestClearErrors:
    def test_unaligned_int64_target_is_computed(self, rng):
        # valid data, which the portable path computes; the kernel once raised AttributeError
        raw = np.zeros(8 * 6 + 1, np.uint8)[1:]
        t = raw.view(np.int64)
        t[:] = [0, 3, 1, 2, 2, 0]
        assert not t.flags.aligned
        x = _logits(rng, (6, 4))
        w = np.zeros(8 * 4 + 1, np.uint8)[1:].view(np.float64)
        w[:] = [1.0, 0.5, 2.0, 1.5]
        expected = torch_oracle("cross_entropy", x, t.copy(), w.copy())
        assert_close(ce.cross_entropy(x, t, w), expected)
        loss, g = ce.value_and_grad(ce.cross_entropy)(x, t, w)
        assert_close(loss, expected)

    @pytest.mark.parametrize("where", ["target", "weight"])
    @pytest.mark.parametrize("fn", [ce.cross_entropy, ce.nll_loss])
    def test_argument_on_another_device(self, where, fn):
        args = {"input": torch.zeros(2, 3), "target": torch.tensor([0, 1]), "weight": None}
        args[where] = (
            torch.tensor([0, 1], device="meta")
            if where == "target"
            else torch.ones(3, device="meta")
        )
        with pytest.raises(ValueError, match=f"{where} is on device meta but input is on cpu"):
            fn(**args)

    def test_set_num_threads_out_of_range(self, monkeypatch):
        with pytest.raises(
            ValueError, match=r"number of threads must be in \[1, 65536\], got 2147483648"
        ):
            kernels.set_num_threads(2**31)
        with pytest.raises(
            TypeError, match="number of threads must be an integer or None, got 2.5"
        ):
            kernels.set_num_threads(2.5)
        with pytest.raises(TypeError, match="got True"):
            kernels.set_num_threads(True)
        # every call still works after the refused settings, and with a huge environment value
        monkeypatch.setenv("CROSSENTROPY_NUM_THREADS", str(2**40))
        assert kernels.get_num_threads() == 65536
        x, t = np.zeros((2, 3)), np.array([0, 1])
        assert_close(ce.cross_entropy(x, t), np.log(3.0))

    def test_axis_that_is_not_an_integer(self):
        x, t = np.zeros((2, 3)), np.array([0, 1])
        with pytest.raises(
            TypeError, match="axis must be an integer or None, got 1.0 of type float"
        ):
            ce.cross_entropy(x, t, axis=1.0)
        with pytest.raises(TypeError, match="axis must be an integer or None, got 1.0"):
            ce.nll_loss(x, t, axis=1.0)
        with pytest.raises(
            TypeError, match="axis must be an integer or a tuple of integers, got 1.0"
        ):
            ce.logsumexp(x, axis=1.0)
        with pytest.raises(
            TypeError, match="axis must be an integer or a tuple of integers, got '1'"
        ):
            ce.softmax(x, axis="1")
        with pytest.raises(TypeError, match="axis must be an integer, got 0.0"):
            ce.entropy(np.array([0.5, 0.5]), axis=0.0)

    @pytest.mark.parametrize(
        ("call", "name"),
        [
            (lambda: ce.cross_entropy(None, np.array([0])), "input"),
            (lambda: ce.cross_entropy(np.zeros((1, 3)), None), "target"),
            (lambda: ce.nll_loss(None, np.array([0])), "input"),
            (lambda: ce.binary_cross_entropy(np.array([0.5]), None), "target"),
            (lambda: ce.mse_loss(None, np.array([0.5])), "input"),
            (lambda: ce.softmax(None), "x"),
            (lambda: ce.sigmoid(None), "x"),
            (lambda: ce.entropy(None), "p"),
            (
                lambda: ce.linear_cross_entropy(np.zeros((1, 2)), None, np.array([0])),
                "linear_weight",
            ),
        ],
    )
    def test_none_where_an_array_is_needed(self, call, name):
        with pytest.raises(TypeError, match=f"^{name} must be an array, got None$"):
            call()

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_no_classes_every_target_ignored(self, reduction):
        # C = 0 with every target ignored: PyTorch's NaN mean, 0 sum, per-row zeros
        x, t = np.zeros((2, 0)), np.array([-100, -100])
        expected = torch_oracle("cross_entropy", x, t, reduction=reduction)
        for kernel in (True, False):
            with kernels.disabled() if not kernel else contextlib.nullcontext():
                assert_close(ce.cross_entropy(x, t, reduction=reduction), expected)
                loss, g = ce.value_and_grad(ce.cross_entropy)(x, t, reduction=reduction)
                assert g.shape == (2, 0)

    def test_no_classes_with_a_counted_target(self):
        with pytest.raises(
            ce.TargetIndexError, match="C=0 classes: every target must equal ignore_index"
        ):
            ce.cross_entropy(np.zeros((2, 0)), np.array([0, -100]))

    def test_linear_cross_entropy_without_features(self):
        # D = 0: every logit is the bias (0 without one), as in PyTorch
        h, w, t = np.zeros((2, 0)), np.zeros((3, 0)), np.array([0, 2])
        assert_close(ce.linear_cross_entropy(h, w, t), np.log(3.0))
        b = np.array([1.0, 2.0, 0.5])
        value, (dh, dw) = ce.value_and_grad(ce.linear_cross_entropy, (0, 1))(h, w, t, linear_bias=b)
        assert_close(value, torch_oracle("cross_entropy", np.tile(b, (2, 1)), t))
        assert dh.shape == (2, 0) and dw.shape == (3, 0)
        ht, wt = torch.zeros(2, 0, requires_grad=True), torch.zeros(3, 0, requires_grad=True)
        ce.linear_cross_entropy(ht, wt, torch.from_numpy(t)).backward()
        assert ht.grad.shape == (2, 0)

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_bfloat16_numpy_arrays(self, rng, reduction):
        # ml_dtypes' bfloat16 (JAX's and TensorFlow's tests use it): computed in float32
        ml_dtypes = pytest.importorskip("ml_dtypes")
        x = _logits(rng, (4, 5)).astype(ml_dtypes.bfloat16)
        t = np.array([0, 4, 1, 3])
        out = ce.cross_entropy(x, t, reduction=reduction)
        assert out.dtype == ml_dtypes.bfloat16
        xt = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
        ref = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), reduction=reduction)
        assert_close(out.astype(np.float64), ref.double().numpy(), rtol=1e-2)
        assert ce.softmax(x).dtype == ml_dtypes.bfloat16
        loss, g = ce.value_and_grad(ce.cross_entropy)(x, t)
        assert g.dtype == ml_dtypes.bfloat16 and g.shape == (4, 5)
        with pytest.raises(ce.DTypeError, match="got float8_e4m3fn"):
            ce.cross_entropy(x.astype(ml_dtypes.float8_e4m3fn), t)

    @pytest.mark.parametrize("kernel", [True, False])
    @pytest.mark.parametrize("layout", ["rows", "columns"])
    def test_a_single_plus_inf_logit(self, kernel, layout):
        # PyTorch (and TensorFlow): NaN loss, gradient NaN in the whole row
        n = 40 if layout == "rows" else 2
        x = np.zeros((2, n))
        x[0, 0] = np.inf
        x[1, 1] = 1.0
        for target in (0, 1):
            t = np.array([target, 0])
            xt = torch.tensor(x, requires_grad=True)
            torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), reduction="sum").backward()
            with kernels.disabled() if not kernel else contextlib.nullcontext():
                loss, g = ce.value_and_grad(ce.cross_entropy)(x, t, reduction="none")
            assert np.isnan(loss[0]) and np.all(np.isnan(g[0]))
            assert_close(g, xt.grad.numpy())
