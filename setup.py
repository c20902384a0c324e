"""Build the optional C extensions: ``crossentropy.kernels._ce`` (fused CPU kernels)
and ``crossentropy.kernels._ce_xla`` (the same kernel as an XLA FFI handler for
``jax.jit``).

Everything else is declared in ``pyproject.toml``.  Both extensions are optional:
if no compiler works, ``pip install`` still succeeds and the library runs on its
portable Array API path.  ``_ce_xla`` is built only when JAX is importable at
build time (its headers ship with jaxlib: ``jax.ffi.include_dir()``), e.g.
``pip install --no-build-isolation .`` in an environment that has JAX, or
``python setup.py build_ext --inplace``; JAX is never a build requirement.  Set ``CROSSENTROPY_NATIVE=1`` to compile for this
machine's CPU only (``-march=native``) instead of the default build, which
carries x86-64-v4 / v3 / baseline versions of the hot loops and picks one at
load time.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_UNIX_FLAGS = [
    # -Wno-psabi: the short-row kernel's 64-byte vectors pass only between inlined functions
    ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno", "-Wno-psabi", "-pthread"],
    ["-O3", "-pthread", "-DCE_NO_CLONES"],
    ["-O2", "-DCE_NO_CLONES"],
]
if os.environ.get("CROSSENTROPY_NATIVE") == "1":
    _UNIX_FLAGS.insert(
        0,
        [
            "-O3",
            "-march=native",
            "-fopenmp-simd",
            "-fno-trapping-math",
            "-pthread",
            "-DCE_NO_CLONES",
        ],
    )


class _BuildExt(build_ext):
    """Try flag sets from the fastest to the most portable; the last error propagates
    (and ``optional=True`` turns it into a warning)."""

    def build_extension(self, ext):
        if self.compiler.compiler_type == "msvc":
            ext.extra_compile_args = ["/O2"]
            return super().build_extension(ext)
        error = None
        own = list(ext.extra_compile_args or [])  # the extension's own, kept
        for flags in _UNIX_FLAGS:
            ext.extra_compile_args = flags + own
            ext.extra_link_args = ["-pthread"] if "-pthread" in flags else []
            try:
                return super().build_extension(ext)
            except Exception as e:  # a compiler that rejects a flag: try the next set
                error = e
        raise error


def _xla_extension() -> list[Extension]:
    """The XLA FFI handler, when jaxlib's headers are at hand (else nothing)."""
    try:
        import jax.ffi
    except Exception:  # no JAX here: the library runs JAX calls on the portable path
        return []
    return [
        Extension(
            "crossentropy.kernels._ce_xla",
            sources=[
                "src/crossentropy/kernels/_ce_xla_kernel.c",  # includes _ce.c
                "src/crossentropy/kernels/_ce_xla.cc",
            ],
            depends=["src/crossentropy/kernels/_ce.c"],
            include_dirs=[jax.ffi.include_dir()],
            # also a system directory (gcc, clang): its headers' warnings are not ours
            extra_compile_args=["-isystem", jax.ffi.include_dir()],
            language="c++",
            optional=True,
        )
    ]


setup(
    ext_modules=[
        Extension(
            "crossentropy.kernels._ce",
            sources=["src/crossentropy/kernels/_ce.c"],
            optional=True,
        ),
        *_xla_extension(),
    ],
    cmdclass={"build_ext": _BuildExt},
)
