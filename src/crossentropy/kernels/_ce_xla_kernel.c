/* The fused kernels (_ce.c) once more, for the XLA handler's module
 * crossentropy.kernels._ce_xla (_ce_xla.cc calls their Python-free entry).  A file of
 * its own so that its object file is not _ce's: setup.py builds both extensions. */
#include "_ce.c"
