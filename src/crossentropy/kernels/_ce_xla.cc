/*
 * The fused cross-entropy kernel as an XLA FFI custom call on CPU (module
 * crossentropy.kernels._ce_xla), for jax.jit.
 *
 * Built only when jaxlib's headers are present (jax.ffi.include_dir()); the
 * kernel itself is _ce.c, compiled into this module too (_ce_xla_kernel.c) and
 * called through its Python-free entry ce_capi_cross_entropy.  crossentropy/kernels/xla.py
 * registers the handler with jax.ffi.register_ffi_target and calls it with
 * jax.ffi.ffi_call.
 *
 * Operands (row-major, as XLA hands them over), with any leading batch
 * dimensions that vmap adds (vmap_method="broadcast_all": every operand has
 * them; their number is the rank of `scale`):
 *   x       (..., O..., C, D...) float32 or float64 logits, class axis `axis`
 *   target  class indices int32/int64 of x's shape without the class axis, or
 *           probabilities of x's shape and dtype (`probabilities`)
 *   weight  (C,) class weights of x's dtype, or (0,) for none
 *   scale   () the factor of the gradient (the reduction's), x's dtype
 * Results:
 *   loss    per-row losses, x's shape without the class axis
 *   grad    scale * d loss / d x, x's shape, or (0,) when not asked for
 *   tgrad   scale * d loss / d target (probabilities), or (0,)
 *
 * A class index outside [0, C) that is not ignore_index (jit cannot check the
 * values beforehand) is never read: its row's loss and gradient are NaN.
 */
#include <Python.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

extern "C" {
void ce_capi_init(void);
int ce_capi_cross_entropy(int dtype, int64_t O, int64_t D, int64_t C, const void *x,
                          const int64_t *xs, void *g, const int64_t *gs, const void *t,
                          const int64_t *ts, const void *y, const int64_t *ys, int y32,
                          int64_t ignore, int has_ignore, const void *weight, void *loss,
                          double eps, double z_loss, double softcap, double scale, int columns,
                          int nthreads, void *dt, int stream);
}

namespace {

struct Geometry {
    int64_t batches = 1, O = 1, C = 1, D = 1;
};

/* Rows with a class index outside [0, C) (not ignore_index), as indices into the
   batch's R rows; `clean` receives the indices with those replaced by `sentinel`. */
template <typename I>
std::vector<int64_t> bad_rows(const I *y, int64_t R, int64_t C, int has_ignore, int64_t ignore,
                              int64_t sentinel, std::vector<int64_t> *clean) {
    std::vector<int64_t> bad;
    for (int64_t r = 0; r < R; r++) {
        const int64_t v = (int64_t)y[r];
        if ((v < 0 || v >= C) && !(has_ignore && v == ignore)) bad.push_back(r);
    }
    if (!bad.empty()) {
        clean->assign(y, y + R);
        for (int64_t r : bad) (*clean)[r] = sentinel;
    }
    return bad;
}

/* Ask for huge pages on a large output buffer before it is first written, as NumPy
   does for its own allocations: XLA hands over freshly mapped memory, whose 4 KiB
   page faults would otherwise cost more than the kernel (a 512 MiB gradient: 131072
   faults).  A hint only; memory already in use is unaffected. */
void prefer_huge_pages(void *data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t page = 4096, lo = ((uintptr_t)data + page - 1) & ~(page - 1),
                    hi = ((uintptr_t)data + bytes) & ~(page - 1);
    if (bytes >= ((size_t)4 << 20) && hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)data;
    (void)bytes;
#endif
}

/* Whether the memory at `data` has been written before (its page is resident).  A
   result buffer that XLA has just mapped has not: the page faults that zero it
   leave each page in cache, where the kernel's plain stores find it; non-temporal
   stores (which bypass the caches) are faster only into memory already in use,
   a buffer that XLA reuses.  Measured on a 512 MiB float32 gradient: plain stores
   into fresh memory 20% faster than non-temporal ones. */
bool written_before(const void *data, size_t bytes) {
#if defined(__linux__)
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    unsigned char resident = 0;
    void *mid = (void *)(((uintptr_t)data + bytes / 2) & ~(page - 1));
    return bytes == 0 || mincore(mid, page, &resident) != 0 || (resident & 1);
#else
    (void)data;
    (void)bytes;
    return true;
#endif
}

template <typename T>
void poison(const std::vector<int64_t> &rows, const Geometry &k, T *loss, T *g) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (int64_t r : rows) {
        loss[r] = nan;
        if (!g) continue;
        T *row = g + (r / k.D) * k.C * k.D + r % k.D;
        for (int64_t c = 0; c < k.C; c++) row[c * k.D] = nan;
    }
}

ffi::Error CrossEntropyImpl(ffi::AnyBuffer x, ffi::AnyBuffer target, ffi::AnyBuffer weight,
                            ffi::AnyBuffer scale, ffi::Result<ffi::AnyBuffer> loss,
                            ffi::Result<ffi::AnyBuffer> grad,
                            ffi::Result<ffi::AnyBuffer> tgrad, int64_t axis,
                            int64_t ignore_index, bool has_ignore, bool probabilities,
                            double label_smoothing, double z_loss, double softcap,
                            int64_t threads) {
    const ffi::DataType type = x.element_type();
    if (type != ffi::DataType::F32 && type != ffi::DataType::F64)
        return ffi::Error::InvalidArgument("crossentropy: logits must be float32 or float64");
    const int dtype = type == ffi::DataType::F64;
    const size_t width = dtype ? 8 : 4;
    const auto dims = x.dimensions();
    const int64_t nbatch = scale.dimensions().size(), rank = (int64_t)dims.size() - nbatch;
    if (axis < 0 || axis >= rank)
        return ffi::Error::InvalidArgument("crossentropy: class axis out of range");
    Geometry k;
    for (int64_t i = 0; i < nbatch; i++) k.batches *= dims[i];
    for (int64_t i = 0; i < axis; i++) k.O *= dims[nbatch + i];
    k.C = dims[nbatch + axis];
    for (int64_t i = axis + 1; i < rank; i++) k.D *= dims[nbatch + i];
    const int64_t R = k.O * k.D, n = R * k.C;
    const int columns = k.C <= 32 || k.D > 1;
    const int64_t xs[3] = {k.C * k.D, 1, k.D == 1 ? 1 : k.D}, ys[2] = {k.D, 1};
    const int64_t none[3] = {0, 0, 0};
    const ffi::DataType ytype = target.element_type();
    if (!probabilities && ytype != ffi::DataType::S32 && ytype != ffi::DataType::S64)
        return ffi::Error::InvalidArgument("crossentropy: class indices must be int32 or int64");
    const int y32 = ytype == ffi::DataType::S32;
    const size_t ywidth = probabilities ? width * k.C : (y32 ? 4 : 8);
    const bool has_weight = weight.element_count() > 0, want_g = grad->element_count() > 0,
               want_dt = tgrad->element_count() > 0;
    const char *xp = (const char *)x.untyped_data(), *tp = (const char *)target.untyped_data();
    const char *wp = (const char *)weight.untyped_data(), *sp = (const char *)scale.untyped_data();
    char *lp = (char *)loss->untyped_data(), *gp = (char *)grad->untyped_data();
    char *dp = (char *)tgrad->untyped_data();
    /* non-temporal stores into a reused gradient only; fresh buffers on huge pages */
    const int stream = want_g && written_before(gp, grad->size_bytes());
    if (want_g) prefer_huge_pages(gp, grad->size_bytes());
    if (want_dt) prefer_huge_pages(dp, tgrad->size_bytes());
    std::vector<int64_t> clean;
    for (int64_t b = 0; b < k.batches; b++) {
        const double s = dtype ? ((const double *)sp)[b] : ((const float *)sp)[b];
        const void *y = probabilities ? nullptr : tp + b * R * ywidth;
        int ignore_on = has_ignore;
        int64_t ignore = ignore_index;
        std::vector<int64_t> bad;
        if (!probabilities) {
            const int64_t sentinel = has_ignore ? ignore_index : -1;
            bad = y32 ? bad_rows((const int32_t *)y, R, k.C, has_ignore, ignore_index, sentinel,
                                 &clean)
                      : bad_rows((const int64_t *)y, R, k.C, has_ignore, ignore_index, sentinel,
                                 &clean);
            if (!bad.empty()) {
                y = clean.data();
                ignore_on = 1;
                ignore = sentinel;
            }
        }
        void *g = want_g ? gp + b * n * width : nullptr;
        const int failed = ce_capi_cross_entropy(
            dtype, k.O, k.D, k.C, xp + b * n * width, xs, g, want_g ? xs : none,
            probabilities ? tp + b * n * width : nullptr, probabilities ? xs : none, y, ys,
            bad.empty() ? y32 : 0, ignore, ignore_on, has_weight ? wp + b * k.C * width : nullptr,
            lp + b * R * width, label_smoothing, z_loss, softcap, s, columns, (int)threads,
            want_dt ? dp + b * n * width : nullptr, stream);
        if (failed) return ffi::Error::Internal("crossentropy: out of memory in the kernel");
        if (!bad.empty()) {
            if (dtype)
                poison(bad, k, (double *)(lp + b * R * width), (double *)g);
            else
                poison(bad, k, (float *)(lp + b * R * width), (float *)g);
        }
    }
    return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CeCrossEntropy, CrossEntropyImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // x
                                  .Arg<ffi::AnyBuffer>()  // target
                                  .Arg<ffi::AnyBuffer>()  // weight
                                  .Arg<ffi::AnyBuffer>()  // scale
                                  .Ret<ffi::AnyBuffer>()  // loss
                                  .Ret<ffi::AnyBuffer>()  // grad
                                  .Ret<ffi::AnyBuffer>()  // tgrad
                                  .Attr<int64_t>("axis")
                                  .Attr<int64_t>("ignore_index")
                                  .Attr<bool>("has_ignore")
                                  .Attr<bool>("probabilities")
                                  .Attr<double>("label_smoothing")
                                  .Attr<double>("z_loss")
                                  .Attr<double>("softcap")
                                  .Attr<int64_t>("threads"));

static struct PyModuleDef ce_xla_module = {
    PyModuleDef_HEAD_INIT, "_ce_xla",
    "The fused cross-entropy kernel as an XLA FFI handler (attribute cross_entropy).", -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__ce_xla(void) {
    ce_capi_init();
    PyObject *m = PyModule_Create(&ce_xla_module);
    if (!m) return nullptr;
    PyObject *handler = PyCapsule_New(reinterpret_cast<void *>(CeCrossEntropy), nullptr, nullptr);
    if (!handler || PyModule_AddObject(m, "cross_entropy", handler) < 0) {
        Py_XDECREF(handler);
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
