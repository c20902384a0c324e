"""The portable reference beneath every public function; imports nothing above it.

Its modules, from the bottom up:

* :mod:`.namespace` -- array-library detection, dtypes, compute precision;
* :mod:`.errors` and :mod:`.validate` -- the exception types and every argument check;
* :mod:`.reduction` -- the only place ``'none' | 'mean' | 'sum'`` happens;
* :mod:`.mathops` -- numerically stable helpers on validated arrays (max shift,
  logsumexp, softmax, sigmoid, picking the target entry, one-hot);
* :mod:`.options` -- option sets as frozen dataclasses, checked once;
* :mod:`.shard` -- a vocabulary shard and its collectives, as the per-row math sees it;
* :mod:`.prepared` -- the validated calls (one type and one ``prepare_*`` per kind of call);
* :mod:`.softmax_ce` -- the per-row softmax cross-entropy and its gradient, the
  reference every faster path must reproduce;
* :mod:`.rules` -- the registry of analytic gradient rules.

Nothing here imports PyTorch or JAX; arrays are handled through the Array API.
"""
