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
 *   scale   () a factor of the gradients, x's dtype
 * Results:
 *   loss    the per-row losses, x's shape without the class axis (reduction 0,
 *           'none'), or their sum (1) or weighted mean (2): () per batch element;
 *           or each row's share of the mean (3, x's shape without the class axis)
 *   grad    scale * d loss / d x, x's shape, or (0,) when not asked for
 *   tgrad   scale * d loss / d target (probabilities), or (0,)
 *
 * The 'mean' denominator is computed here, from the class indices and weights
 * read once before the kernel runs (the number of rows for probabilities), so
 * that the kernel writes the gradient of the mean directly: no XLA operation
 * runs around the call.
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

/* the loss output: per-row losses, their sum, their mean, or each row's share of
   the mean (its loss over the denominator, NaN when that is 0: XLA sums them) */
enum { REDUCE_NONE = 0, REDUCE_SUM = 1, REDUCE_MEAN = 2, REDUCE_MEAN_ROWS = 3 };

/* outputs this large get huge pages; smaller ones are not worth a system call */
const size_t HUGE_MIN = (size_t)4 << 20;

struct Geometry {
    int64_t batches = 1, O = 1, C = 1, D = 1;
};

/* One batch element's class indices, read once: the rows whose index lies outside
   [0, C) and is not ignore_index (`bad`, as indices into the R rows; `clean` then
   holds the indices with those replaced by `sentinel`), and the 'mean'
   denominator `counted`, the summed weights of the counted rows' classes (their
   number without weights), NaN when there is a bad row (as on the portable path). */
struct Targets {
    std::vector<int64_t> bad;
    double counted = 0;
};

template <typename I>
void scan_targets(const I *y, int64_t R, int64_t C, int has_ignore, int64_t ignore,
                  const void *weight, int dtype, int64_t sentinel, std::vector<int64_t> *clean,
                  Targets *t) {
    double counted = 0;
    t->bad.clear();
    for (int64_t r = 0; r < R; r++) {
        const int64_t v = (int64_t)y[r];
        if (has_ignore && v == ignore) continue;
        if (v < 0 || v >= C) {
            t->bad.push_back(r);
        } else if (!weight) {
            counted += 1;
        } else {
            counted += dtype ? ((const double *)weight)[v] : (double)((const float *)weight)[v];
        }
    }
    t->counted = t->bad.empty() ? counted : std::numeric_limits<double>::quiet_NaN();
    if (!t->bad.empty()) {
        clean->assign(y, y + R);
        for (int64_t r : t->bad) (*clean)[r] = sentinel;
    }
}

/* The reduced loss of R per-row losses: their sum ('sum'), or their sum over the
   denominator ('mean'; NaN when the denominator is 0, as PyTorch's mean of nothing). */
double reduce_rows(const char *rows, int dtype, int64_t R, int64_t reduction, double counted) {
    double sum = 0;
    for (int64_t r = 0; r < R; r++)
        sum += dtype ? ((const double *)rows)[r] : (double)((const float *)rows)[r];
    if (reduction != REDUCE_MEAN) return sum;
    return counted == 0 ? std::numeric_limits<double>::quiet_NaN() : sum / counted;
}

/* Ask for huge pages on a large output buffer before it is first written, as NumPy
   does for its own allocations: XLA hands over freshly mapped memory, whose 4 KiB
   page faults would otherwise cost more than the kernel (a 512 MiB gradient: 131072
   faults).  A hint only; memory already in use is unaffected. */
void prefer_huge_pages(void *data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t page = 4096, lo = ((uintptr_t)data + page - 1) & ~(page - 1),
                    hi = ((uintptr_t)data + bytes) & ~(page - 1);
    if (bytes >= HUGE_MIN && hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
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

/* Each of R per-row losses divided by the mean's denominator: their sum is the
   mean (NaN when the denominator is 0, as PyTorch's mean of nothing). */
void share_rows(char *rows, int dtype, int64_t R, double counted) {
    const double f = counted == 0 ? std::numeric_limits<double>::quiet_NaN() : 1.0 / counted;
    for (int64_t r = 0; r < R; r++) {
        if (dtype)
            ((double *)rows)[r] *= f;
        else
            ((float *)rows)[r] = (float)(((float *)rows)[r] * f);
    }
}

/* One call's settings and buffers, shared by its batch elements. */
struct Call {
    Geometry k;
    int dtype = 0, y32 = 0, columns = 0, stream = 0, probabilities = 0, has_ignore = 0;
    int64_t ignore = 0, reduction = REDUCE_NONE, threads = 1;
    double eps = 0, z_loss = 0, softcap = 0;
    size_t width = 4, ywidth = 4;
    const char *x = nullptr, *t = nullptr, *w = nullptr, *s = nullptr;
    char *loss = nullptr, *g = nullptr, *dt = nullptr;
};

/* The kernel on batch element b: its losses (per row, or reduced), its gradients
   scaled by the scale operand times the reduction's factor.  `rows` holds the
   per-row losses of a reduced call, `clean` the checked class indices. */
ffi::Error run_batch(const Call &c, int64_t b, std::vector<char> *rows,
                     std::vector<int64_t> *clean, Targets *targets) {
    const Geometry &k = c.k;
    const int64_t R = k.O * k.D, n = R * k.C;
    const int64_t xs[3] = {k.C * k.D, 1, k.D == 1 ? 1 : k.D}, ys[2] = {k.D, 1};
    const int64_t none[3] = {0, 0, 0};
    const void *y = c.probabilities ? nullptr : c.t + b * R * c.ywidth;
    const void *weight = c.w ? c.w + b * k.C * c.width : nullptr;
    int ignore_on = c.has_ignore, y32 = c.y32;
    int64_t ignore = c.ignore;
    targets->bad.clear();
    targets->counted = (double)R;  // probabilities: every row counts
    if (!c.probabilities) {
        const int64_t sentinel = c.has_ignore ? c.ignore : -1;
        if (c.y32)
            scan_targets((const int32_t *)y, R, k.C, c.has_ignore, c.ignore, weight, c.dtype,
                         sentinel, clean, targets);
        else
            scan_targets((const int64_t *)y, R, k.C, c.has_ignore, c.ignore, weight, c.dtype,
                         sentinel, clean, targets);
        if (!targets->bad.empty()) {  // read as ignored, then made NaN
            y = clean->data();
            ignore_on = 1;
            ignore = sentinel;
            y32 = 0;
        }
    }
    double scale = c.dtype ? ((const double *)c.s)[b] : ((const float *)c.s)[b];
    const int mean = c.reduction == REDUCE_MEAN || c.reduction == REDUCE_MEAN_ROWS;
    if (mean)  // 1 / denominator, 0 for a mean of nothing
        scale *= targets->counted == 0 ? 0.0 : 1.0 / targets->counted;
    const int reduced = c.reduction == REDUCE_SUM || c.reduction == REDUCE_MEAN;
    char *per_row = reduced ? rows->data() : c.loss + b * R * c.width;
    void *g = c.g ? c.g + b * n * c.width : nullptr;
    const int failed = ce_capi_cross_entropy(
        c.dtype, k.O, k.D, k.C, c.x + b * n * c.width, xs, g, g ? xs : none,
        c.probabilities ? c.t + b * n * c.width : nullptr, c.probabilities ? xs : none, y, ys,
        y32, ignore, ignore_on, weight, per_row, c.eps, c.z_loss, c.softcap, scale, c.columns,
        (int)c.threads, c.dt ? c.dt + b * n * c.width : nullptr, c.stream);
    if (failed) return ffi::Error::Internal("crossentropy: out of memory in the kernel");
    if (!targets->bad.empty()) {
        if (c.dtype)
            poison(targets->bad, k, (double *)per_row, (double *)g);
        else
            poison(targets->bad, k, (float *)per_row, (float *)g);
    }
    if (c.reduction == REDUCE_MEAN_ROWS) {
        share_rows(per_row, c.dtype, R, targets->counted);
    } else if (reduced) {
        const double v = reduce_rows(per_row, c.dtype, R, c.reduction, targets->counted);
        if (c.dtype)
            ((double *)c.loss)[b] = v;
        else
            ((float *)c.loss)[b] = (float)v;
    }
    return ffi::Error::Success();
}

ffi::Error CrossEntropyImpl(ffi::AnyBuffer x, ffi::AnyBuffer target, ffi::AnyBuffer weight,
                            ffi::AnyBuffer scale, ffi::Result<ffi::AnyBuffer> loss,
                            ffi::Result<ffi::AnyBuffer> grad,
                            ffi::Result<ffi::AnyBuffer> tgrad, int64_t axis,
                            int64_t ignore_index, bool has_ignore, bool probabilities,
                            double label_smoothing, double z_loss, double softcap,
                            int64_t threads, int64_t reduction) {
    const ffi::DataType type = x.element_type();
    if (type != ffi::DataType::F32 && type != ffi::DataType::F64)
        return ffi::Error::InvalidArgument("crossentropy: logits must be float32 or float64");
    if (reduction < REDUCE_NONE || reduction > REDUCE_MEAN_ROWS)
        return ffi::Error::InvalidArgument("crossentropy: reduction must be 0, 1, 2 or 3");
    Call c;
    c.dtype = type == ffi::DataType::F64;
    c.width = c.dtype ? 8 : 4;
    const auto dims = x.dimensions();
    const int64_t nbatch = scale.dimensions().size(), rank = (int64_t)dims.size() - nbatch;
    if (axis < 0 || axis >= rank)
        return ffi::Error::InvalidArgument("crossentropy: class axis out of range");
    Geometry &k = c.k;
    for (int64_t i = 0; i < nbatch; i++) k.batches *= dims[i];
    for (int64_t i = 0; i < axis; i++) k.O *= dims[nbatch + i];
    k.C = dims[nbatch + axis];
    for (int64_t i = axis + 1; i < rank; i++) k.D *= dims[nbatch + i];
    c.columns = k.C <= 32 || k.D > 1;
    const ffi::DataType ytype = target.element_type();
    if (!probabilities && ytype != ffi::DataType::S32 && ytype != ffi::DataType::S64)
        return ffi::Error::InvalidArgument("crossentropy: class indices must be int32 or int64");
    c.y32 = ytype == ffi::DataType::S32;
    c.ywidth = probabilities ? c.width * k.C : (c.y32 ? 4 : 8);
    c.probabilities = probabilities;
    c.has_ignore = has_ignore;
    c.ignore = ignore_index;
    c.reduction = reduction;
    c.threads = threads;
    c.eps = label_smoothing;
    c.z_loss = z_loss;
    c.softcap = softcap;
    c.x = (const char *)x.untyped_data();
    c.t = (const char *)target.untyped_data();
    c.w = weight.element_count() > 0 ? (const char *)weight.untyped_data() : nullptr;
    c.s = (const char *)scale.untyped_data();
    c.loss = (char *)loss->untyped_data();
    c.g = grad->element_count() > 0 ? (char *)grad->untyped_data() : nullptr;
    c.dt = tgrad->element_count() > 0 ? (char *)tgrad->untyped_data() : nullptr;
    /* non-temporal stores into a reused gradient only; fresh buffers on huge pages */
    c.stream = c.g && grad->size_bytes() >= HUGE_MIN && written_before(c.g, grad->size_bytes());
    if (c.g) prefer_huge_pages(c.g, grad->size_bytes());
    if (c.dt) prefer_huge_pages(c.dt, tgrad->size_bytes());
    const int reduced = reduction == REDUCE_SUM || reduction == REDUCE_MEAN;
    std::vector<char> rows(reduced ? k.O * k.D * c.width : 0);
    std::vector<int64_t> clean;
    Targets targets;
    for (int64_t b = 0; b < k.batches; b++) {
        const ffi::Error e = run_batch(c, b, &rows, &clean, &targets);
        if (e.failure()) return e;
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
                                  .Attr<int64_t>("threads")
                                  .Attr<int64_t>("reduction"));

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
