"""``python -m crossentropy``: the same as the ``crossentropy`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
