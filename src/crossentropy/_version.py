"""The package's version, the one place it is written.

``pyproject.toml`` reads it at build time (``[tool.setuptools.dynamic]``) and
``crossentropy.__version__`` re-exports it.
"""

__version__ = "0.1.0"
