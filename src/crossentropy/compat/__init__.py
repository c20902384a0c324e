"""Other ecosystems' loss names and signatures over this library's functions.

One import ports code from TensorFlow, Keras, optax or scikit-learn::

    from crossentropy.compat import tf        # tf.nn names: labels=, logits=, per-example output
    from crossentropy.compat import keras     # keras.losses functions and classes
    from crossentropy.compat import optax     # optax.losses names, where=, axis tuples
    from crossentropy.compat import sklearn   # sklearn.metrics log_loss and hinge_loss

Each name is a thin layer: it renames arguments, moves axes, converts
probabilities the way its peer does (clipping included) and reduces as its peer
reduces, then calls the one implementation in :mod:`crossentropy`.  None of the
peer libraries is imported.
"""

__all__ = ["keras", "optax", "sklearn", "tf"]


def __getattr__(name: str):  # the submodules are imported on first use
    if name in __all__:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
