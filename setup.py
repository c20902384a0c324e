"""Build the optional C extension ``crossentropy.kernels._ce`` (fused CPU kernels).

Everything else is declared in ``pyproject.toml``.  The extension is optional:
if no compiler works, ``pip install`` still succeeds and the library runs on its
portable Array API path.  Set ``CROSSENTROPY_NATIVE=1`` to compile for this
machine's CPU only (``-march=native``) instead of the default build, which
carries x86-64-v4 / v3 / baseline versions of the hot loops and picks one at
load time.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_UNIX_FLAGS = [
    ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno", "-pthread"],
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
        for flags in _UNIX_FLAGS:
            ext.extra_compile_args = flags
            ext.extra_link_args = ["-pthread"] if "-pthread" in flags else []
            try:
                return super().build_extension(ext)
            except Exception as e:  # a compiler that rejects a flag: try the next set
                error = e
        raise error


setup(
    ext_modules=[
        Extension(
            "crossentropy.kernels._ce",
            sources=["src/crossentropy/kernels/_ce.c"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": _BuildExt},
)
