"""``crossentropy eval``: metrics of a classifier's saved outputs, in bounded memory.

The predictions are read in blocks of rows (``.npy`` memory-mapped, ``.npz``
members and ``.csv``/``.txt`` files streamed), so a file larger than memory
evaluates in a few tens of megabytes.  Every metric is a sum over rows
accumulated block by block in float64, so the result does not depend on the
block size:

* cross-entropy :math:`\\frac1N \\sum_n -\\log p_{n, y_n}` in nats and bits, and
  perplexity :math:`e^{\\text{cross-entropy}}`;
* accuracy, and top-k accuracy (the target's probability is exceeded by fewer
  than k classes: ties count in the target's favour);
* mean predictive entropy :math:`\\frac1N \\sum_n H(p_n)`;
* expected calibration error over equal-width confidence bins
  :math:`(\\frac{b}{B}, \\frac{b+1}{B}]` (Guo et al., 2017):
  :math:`\\sum_b \\frac{n_b}{N} |\\text{acc}_b - \\text{conf}_b|`;
* with ``--per-class``, the count, mean loss and accuracy of each true class.

Log-probabilities of logits come from :func:`crossentropy.log_softmax`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import Progress
from ._util import CLIError, UsageError, add_help_example, fmt, table

__all__ = ["Metrics", "evaluate", "open_predictions", "read_targets", "register"]

KINDS = ("logits", "probs", "log-probs")
# float64 elements per block (2 MiB, cache-friendly); a block's temporaries are a few
# times this, so memory stays under about 100 MiB whatever the file's size
BLOCK_ELEMENTS = 1 << 18
SUM_TOLERANCE = 0.01

_EXAMPLES = """\
  crossentropy eval logits.npy labels.npy
  crossentropy eval probs.csv labels.csv --from probs --per-class
  crossentropy eval outputs.npz:logits outputs.npz:labels --top-k 3 --json
  crossentropy eval crossentropy-demo/test_logits_mlp_cross-entropy.npy \\
      crossentropy-demo/test_labels.npy --per-class
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate saved predictions: cross-entropy, accuracy, calibration",
        **add_help_example(
            "Evaluate a classifier's saved outputs against integer labels: cross-entropy\n"
            "(nats and bits), perplexity, accuracy, top-k accuracy, mean predictive\n"
            "entropy, expected calibration error, and per-class loss.  PREDICTIONS is a\n"
            "(rows, classes) matrix in .npy (memory-mapped), .npz (NAME.npz:KEY picks an\n"
            "array), .csv or whitespace .txt; TARGETS holds one class index per row.\n"
            "The file is read in blocks of rows, so its size is not limited by memory.",
            _EXAMPLES,
        ),
    )
    p.add_argument("predictions", metavar="PREDICTIONS", help="(rows, classes) outputs")
    p.add_argument("targets", metavar="TARGETS", help="(rows,) integer class labels")
    p.add_argument(
        "--from",
        dest="kind",
        choices=KINDS,
        default="logits",
        help="what PREDICTIONS holds (%(default)s)",
    )
    p.add_argument(
        "--top-k", type=int, default=5, metavar="K", help="for top-k accuracy (%(default)s)"
    )
    p.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE (%(default)s)")
    p.add_argument("--per-class", action="store_true", help="also print each class's loss")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--block-rows", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=_run)


# -- reading --------------------------------------------------------------------------


def _split_key(spec: str) -> tuple[Path, str | None]:
    """``NAME.npz:KEY`` -> (path, key); anything else -> (path, None)."""
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key:
        return Path(head), key
    return Path(spec), None


def _pick_key(files: list[str], key: str | None, preferred: tuple[str, ...], what: str) -> str:
    if key is not None:
        if key not in files:
            raise CLIError(f"{what}: the .npz has no array {key!r}; it holds {files}")
        return key
    if len(files) == 1:
        return files[0]
    for name in preferred:
        if name in files:
            return name
    raise CLIError(f"{what}: the .npz holds several arrays {files}; pick one with FILE.npz:KEY")


class _Source:
    """A (rows, classes) matrix read in blocks of rows."""

    def __init__(self, path: Path, n_rows: int, n_classes: int, dtype: Any) -> None:
        self.path, self.n_rows, self.n_classes, self.dtype = path, n_rows, n_classes, dtype

    def blocks(self, rows: int) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ArraySource(_Source):
    """An array in memory or memory-mapped (``.npy``)."""

    def __init__(self, path: Path, a: Any) -> None:
        super().__init__(path, a.shape[0], a.shape[1], a.dtype)
        self.a = a

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        for start in range(0, self.n_rows, rows):
            yield np.asarray(self.a[start : start + rows])


class _NpySource(_Source):
    """An ``.npy`` file, memory-mapped one block of rows at a time.

    Each block is its own small mapping, unmapped once read, so that the
    pages of a file larger than memory never accumulate in the process.
    """

    def __init__(self, path: Path, offset: int, shape: tuple, dtype: Any) -> None:
        super().__init__(path, shape[0], shape[1], dtype)
        self.offset = offset

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        row_bytes = self.n_classes * self.dtype.itemsize
        for start in range(0, self.n_rows, rows):
            k = min(rows, self.n_rows - start)
            mm = np.memmap(
                self.path,
                dtype=self.dtype,
                mode="r",
                offset=self.offset + start * row_bytes,
                shape=(k, self.n_classes),
            )
            block = np.array(mm)
            del mm
            yield block


class _NpyStreamSource(_Source):
    """An ``.npy`` member of an ``.npz`` archive, read sequentially from the zip."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, fh: Any, shape: tuple, dtype: Any) -> None:
        super().__init__(path, shape[0], shape[1], dtype)
        self.zf, self.fh = zf, fh

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        row_bytes = self.n_classes * self.dtype.itemsize
        left = self.n_rows
        while left > 0:
            k = min(rows, left)
            buf = _read_exact(self.fh, k * row_bytes)
            if len(buf) < k * row_bytes:
                raise CLIError(f"PREDICTIONS: {self.path} is truncated")
            yield np.frombuffer(buf, dtype=self.dtype).reshape(k, self.n_classes)
            left -= k

    def close(self) -> None:
        self.fh.close()
        self.zf.close()


class _TextSource(_Source):
    """A CSV (comma) or whitespace-separated text file, parsed block by block."""

    def __init__(self, path: Path, delimiter: str | None) -> None:
        self.delimiter = delimiter
        self.header = False
        n_rows, first = 0, None
        with path.open() as f:
            for line in f:
                if not line.strip():
                    continue
                if first is None:
                    first = line
                    if not _numeric_line(line, delimiter):
                        self.header = True
                        continue
                n_rows += 1
        if first is None or n_rows == 0:
            raise CLIError(f"PREDICTIONS: {path} holds no rows")
        data_line = first if not self.header else None
        if data_line is None:
            with path.open() as f:
                lines = (ln for ln in f if ln.strip())
                next(lines)
                data_line = next(lines)
        n_classes = len(_fields(data_line, delimiter))
        super().__init__(path, n_rows, n_classes, np.dtype(np.float64))

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        with self.path.open() as f:
            lines = (ln for ln in f if ln.strip())
            if self.header:
                next(lines)
            start, chunk = 0, []
            for line in lines:
                chunk.append(line)
                if len(chunk) == rows:
                    yield self._parse(chunk, start)
                    start += len(chunk)
                    chunk = []
            if chunk:
                yield self._parse(chunk, start)

    def _parse(self, chunk: list[str], start: int) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = np.loadtxt(chunk, delimiter=self.delimiter, ndmin=2, dtype=np.float64)
        except ValueError as e:
            raise CLIError(
                f"PREDICTIONS: cannot parse data rows {start}..{start + len(chunk) - 1} of "
                f"{self.path}: {e}"
            ) from None
        if a.shape[1] != self.n_classes:
            raise CLIError(
                f"PREDICTIONS: rows of {self.path} have different numbers of columns "
                f"({self.n_classes} in the first row, {a.shape[1]} near row {start})"
            )
        return a


def _fields(line: str, delimiter: str | None) -> list[str]:
    return [t for t in line.strip().split(delimiter)]


def _numeric_line(line: str, delimiter: str | None) -> bool:
    try:
        [float(t) for t in _fields(line, delimiter)]
    except ValueError:
        return False
    return True


def _read_exact(fh: Any, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        b = fh.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _check_matrix_dtype(dtype: Any, shape: tuple, path: Path) -> None:
    if len(shape) != 2:
        raise CLIError(
            f"PREDICTIONS: {path} must hold a 2-D (rows, classes) array, got shape {shape}"
        )
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise CLIError(f"PREDICTIONS: {path} holds {dtype} values, not numbers")


def open_predictions(spec: str) -> _Source:
    """Open a predictions file for block reading (nothing large is loaded)."""
    path, key = _split_key(spec)
    if not path.is_file():
        raise CLIError(f"PREDICTIONS: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _open_npy(path)
        if suffix == ".npz":
            return _open_npz_member(path, key)
        if suffix in (".csv", ".txt", ".tsv", ".dat"):
            return _TextSource(path, "," if suffix == ".csv" else None)
    except (ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CLIError(f"PREDICTIONS: cannot read {str(path)!r}: {e}") from None
    raise CLIError(f"PREDICTIONS: unsupported file type {suffix!r}; use .npy, .npz, .csv or .txt")


def _read_header(fh: Any) -> tuple[tuple | None, bool, Any]:
    """``(shape, fortran_order, dtype)`` of an ``.npy`` stream positioned at its start;
    ``(None, True, None)`` for a format version this reader does not stream."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    return None, True, None


def _open_npy(path: Path) -> _Source:
    with path.open("rb") as fh:
        shape, fortran, dtype = _read_header(fh)
        offset = fh.tell()
    if fortran or dtype is None or dtype.hasobject:
        # column-major (or unusual) layout: one mapping of the whole file
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_matrix_dtype(a.dtype, a.shape, path)
        return _ArraySource(path, a)
    _check_matrix_dtype(dtype, shape, path)
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < expected:
        raise CLIError(
            f"PREDICTIONS: {path} is truncated ({path.stat().st_size} of {expected} bytes)"
        )
    return _NpySource(path, offset, shape, dtype)


def _open_npz_member(path: Path, key: str | None) -> _Source:
    with zipfile.ZipFile(path) as z:
        files = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    name = _pick_key(
        files, key, ("logits", "probs", "log_probs", "predictions", "preds"), "PREDICTIONS"
    )
    zf = zipfile.ZipFile(path)
    fh = zf.open(name + ".npy")
    shape, fortran, dtype = _read_header(fh)
    if fortran or dtype is None or dtype.hasobject:
        # not streamable in row order: load the one array
        fh.close()
        zf.close()
        with np.load(path, allow_pickle=False) as z:
            a = z[name]
        _check_matrix_dtype(a.dtype, a.shape, path)
        return _ArraySource(path, a)
    _check_matrix_dtype(dtype, shape, path)
    return _NpyStreamSource(path, zf, fh, shape, dtype)


def read_targets(spec: str) -> np.ndarray:
    """Integer class labels, shape (rows,), as int64."""
    path, key = _split_key(spec)
    if not path.is_file():
        raise CLIError(f"TARGETS: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            t = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                t = z[_pick_key(z.files, key, ("labels", "targets", "target", "y"), "TARGETS")]
        elif suffix in (".csv", ".txt", ".tsv", ".dat"):
            t = _read_text_labels(path, "," if suffix == ".csv" else None)
        else:
            raise CLIError(
                f"TARGETS: unsupported file type {suffix!r}; use .npy, .npz, .csv or .txt"
            )
    except (ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CLIError(f"TARGETS: cannot read {str(path)!r}: {e}") from None
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        hint = " (one-hot? save the argmax of each row)" if t.ndim == 2 else ""
        raise CLIError(
            f"TARGETS: expected one class index per row, shape (rows,), got {t.shape}{hint}"
        )
    if np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_:
        return np.asarray(t, dtype=np.int64)
    if not np.issubdtype(t.dtype, np.floating):
        raise CLIError(f"TARGETS: expected integer class labels, got dtype {t.dtype}")
    t = np.asarray(t)
    bad = ~(np.isfinite(t) & (t == np.round(t)))
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(
            f"TARGETS: labels must be integers; {int(bad.sum())} are not (first: {float(t[i]):g} at row {i})"
        )
    return t.astype(np.int64)


def _read_text_labels(path: Path, delimiter: str | None) -> np.ndarray:
    with path.open() as f:
        lines = [ln for ln in f if ln.strip()]
    if lines and not _numeric_line(lines[0], delimiter):
        lines = lines[1:]
    if not lines:
        raise CLIError(f"TARGETS: {path} holds no labels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.loadtxt(lines, delimiter=delimiter, ndmin=1, dtype=np.float64)


# -- metrics --------------------------------------------------------------------------


@dataclass
class Metrics:
    """Sums over rows, accumulated block by block; :meth:`result` turns them into metrics."""

    n_classes: int
    top_k: int = 5
    bins: int = 15
    rows: int = 0
    nll: float = 0.0
    correct: int = 0
    top_k_hits: int = 0
    entropy: float = 0.0
    bin_count: np.ndarray = field(init=False)
    bin_conf: np.ndarray = field(init=False)
    bin_correct: np.ndarray = field(init=False)
    class_count: np.ndarray = field(init=False)
    class_nll: np.ndarray = field(init=False)
    class_correct: np.ndarray = field(init=False)
    bad: dict[str, list[int]] = field(default_factory=dict)  # reason -> [count, first row]

    def __post_init__(self) -> None:
        self.bin_count = np.zeros(self.bins, dtype=np.int64)
        self.bin_conf = np.zeros(self.bins)
        self.bin_correct = np.zeros(self.bins, dtype=np.int64)
        self.class_count = np.zeros(self.n_classes, dtype=np.int64)
        self.class_nll = np.zeros(self.n_classes)
        self.class_correct = np.zeros(self.n_classes, dtype=np.int64)

    def flag(self, reason: str, mask: np.ndarray, start: int) -> None:
        """Record the rows of ``mask`` (within a block starting at row ``start``) as bad."""
        count = int(mask.sum())
        if count:
            entry = self.bad.setdefault(reason, [0, start + int(np.argmax(mask))])
            entry[0] += count

    def add(self, logp: np.ndarray, y: np.ndarray) -> None:
        """Accumulate a block of valid rows: ``(B, C)`` log-probabilities and labels."""
        idx = np.arange(len(y))
        picked = logp[idx, y]
        nll = -picked
        pred = np.argmax(logp, axis=1)
        hit = pred == y
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(logp)
            plogp = np.where(p > 0, p * logp, 0.0)
        conf = p[idx, pred]
        b = np.clip(np.ceil(conf * self.bins).astype(np.int64) - 1, 0, self.bins - 1)

        self.rows += len(y)
        self.nll += float(nll.sum())
        self.correct += int(hit.sum())
        self.top_k_hits += int((np.sum(logp > picked[:, None], axis=1) < self.top_k).sum())
        self.entropy += float(-plogp.sum())
        self.bin_count += np.bincount(b, minlength=self.bins)
        self.bin_conf += np.bincount(b, weights=conf, minlength=self.bins)
        self.bin_correct += np.bincount(b, weights=hit, minlength=self.bins).astype(np.int64)
        self.class_count += np.bincount(y, minlength=self.n_classes)
        self.class_nll += np.bincount(y, weights=nll, minlength=self.n_classes)
        self.class_correct += np.bincount(y, weights=hit, minlength=self.n_classes).astype(np.int64)

    def result(self) -> dict[str, Any]:
        n = self.rows
        mean_nll = self.nll / n if n else math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = np.abs(self.bin_correct - self.bin_conf)  # n_b * |acc_b - conf_b|
            class_loss = self.class_nll / self.class_count
            class_acc = self.class_correct / self.class_count
        return {
            "rows": n,
            "classes": self.n_classes,
            "cross_entropy_nats": mean_nll,
            "cross_entropy_bits": mean_nll / math.log(2),
            "perplexity": math.exp(mean_nll) if mean_nll < 709 else math.inf,
            "accuracy": self.correct / n if n else math.nan,
            "correct": self.correct,
            "top_k": self.top_k,
            "top_k_accuracy": self.top_k_hits / n if n else math.nan,
            "mean_entropy_nats": self.entropy / n if n else math.nan,
            "mean_entropy_bits": self.entropy / n / math.log(2) if n else math.nan,
            "ece": float(gap.sum() / n) if n else math.nan,
            "ece_bins": self.bins,
            "per_class": [
                {
                    "class": c,
                    "count": int(self.class_count[c]),
                    "cross_entropy_nats": float(class_loss[c]),
                    "accuracy": float(class_acc[c]),
                }
                for c in range(self.n_classes)
            ],
        }


def _log_probs(
    kind: str, block: np.ndarray, start: int, m: Metrics
) -> tuple[np.ndarray, np.ndarray]:
    """``(log-probabilities, valid-row mask)`` of a float64 block; flags invalid rows."""
    import crossentropy as ce

    nan = np.isnan(block).any(axis=1)
    m.flag("NaN", nan, start)
    valid = ~nan
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "logits":
            pinf = np.isposinf(block).any(axis=1) & valid
            m.flag("+inf", pinf, start)
            ninf = np.isneginf(block).all(axis=1) & valid
            m.flag("only -inf", ninf, start)
            valid &= ~(pinf | ninf)
            x = np.where(valid[:, None], block, 0.0)
            logp = np.asarray(ce.log_softmax(x, axis=1))
        elif kind == "probs":
            outside = ((block < 0) | (block > 1)).any(axis=1) & valid
            m.flag("entries outside [0, 1]", outside, start)
            valid &= ~outside
            off = (np.abs(block.sum(axis=1) - 1) > SUM_TOLERANCE) & valid
            m.flag("probabilities not summing to 1", off, start)
            valid &= ~off
            logp = np.log(block)
        else:
            positive = (block > 1e-6).any(axis=1) & valid
            m.flag("positive log-probabilities", positive, start)
            valid &= ~positive
            lse = np.asarray(ce.logsumexp(np.where(valid[:, None], block, 0.0), axis=1))
            off = (np.abs(lse) > SUM_TOLERANCE) & valid
            m.flag("log-probabilities not summing to 1", off, start)
            valid &= ~off
            logp = block
    return logp, valid


def evaluate(
    source: _Source,
    targets: np.ndarray,
    *,
    kind: str = "logits",
    top_k: int = 5,
    bins: int = 15,
    block_rows: int | None = None,
    progress: bool = False,
) -> tuple[Metrics, str]:
    """Stream ``source`` in blocks and accumulate the metrics; also return a warning ('' if none)."""
    import crossentropy as ce

    n, C = source.n_rows, source.n_classes
    if n == 0 or C == 0:
        raise CLIError(f"PREDICTIONS: {source.path} is empty (shape ({n}, {C}))")
    if len(targets) != n:
        raise CLIError(
            f"shape mismatch: PREDICTIONS has {n} rows ({n} x {C}) but TARGETS has "
            f"{len(targets)} labels; they must have one label per row"
        )
    bad = (targets < 0) | (targets >= C)
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(
            f"{int(bad.sum())} label(s) out of range for {C} classes (valid: 0..{C - 1}); "
            f"first: {int(targets[i])} at row {i}"
        )
    rows = block_rows or max(1, BLOCK_ELEMENTS // max(C, 1))
    m = Metrics(C, top_k=top_k, bins=bins)
    warning = ""
    start = 0
    with Progress(n, "eval", unit="rows", enabled=progress) as bar:
        for block in source.blocks(rows):
            x = np.asarray(block, dtype=np.float64)
            if start == 0 and kind == "logits" and ce.looks_like_probabilities(x, axis=1):
                warning = (
                    "warning: the first rows of PREDICTIONS lie in [0, 1] and sum to 1: they "
                    "look like probabilities, evaluated here as logits (softmax applied "
                    "again, which flattens them); pass --from probs if they are probabilities"
                )
            y = targets[start : start + len(x)]
            logp, valid = _log_probs(kind, x, start, m)
            if valid.all():
                m.add(logp, y)
            elif valid.any():
                m.add(logp[valid], y[valid])
            start += len(x)
            bar.update(len(x))
    if m.bad:
        parts = [
            f"{count} row(s) with {reason} (first: row {first})"
            for reason, (count, first) in m.bad.items()
        ]
        hint = {
            "logits": "",
            "probs": "; if they are logits, pass --from logits",
            "log-probs": "; if they are logits, pass --from logits",
        }[kind]
        raise CLIError(f"PREDICTIONS ({kind}) has {'; '.join(parts)}{hint}")
    return m, warning


# -- output ---------------------------------------------------------------------------


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def report(r: dict[str, Any], per_class: bool) -> str:
    lines = [
        f"{'cross-entropy':<18}{fmt(r['cross_entropy_nats']):>10} nats  "
        f"({fmt(r['cross_entropy_bits'])} bits)",
        f"{'perplexity':<18}{fmt(r['perplexity']):>10}",
        f"{'accuracy':<18}{100 * r['accuracy']:>9.2f}%  ({r['correct']} / {r['rows']})",
        f"{'top-' + str(r['top_k']) + ' accuracy':<18}{100 * r['top_k_accuracy']:>9.2f}%"
        + ("  (k >= classes)" if r["top_k"] >= r["classes"] else ""),
        f"{'mean entropy':<18}{fmt(r['mean_entropy_nats']):>10} nats  "
        f"({fmt(r['mean_entropy_bits'])} bits)",
        f"{'ECE (' + str(r['ece_bins']) + ' bins)':<18}{fmt(r['ece']):>10}",
    ]
    if per_class:
        rows = [
            [
                str(c["class"]),
                str(c["count"]),
                fmt(c["cross_entropy_nats"]) if c["count"] else "-",
                f"{100 * c['accuracy']:.2f}%" if c["count"] else "-",
            ]
            for c in r["per_class"]
        ]
        lines += ["", table(["class", "rows", "cross-entropy (nats)", "accuracy"], rows)]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.bins < 1:
        raise UsageError(f"--bins must be at least 1, got {args.bins}")
    if args.block_rows is not None and args.block_rows < 1:
        raise UsageError(f"--block-rows must be at least 1, got {args.block_rows}")
    targets = read_targets(args.targets)
    source = open_predictions(args.predictions)
    try:
        m, warning = evaluate(
            source,
            targets,
            kind=args.kind,
            top_k=args.top_k,
            bins=args.bins,
            block_rows=args.block_rows,
            progress=not args.quiet,
        )
    finally:
        source.close()
    if warning:
        print(warning, file=sys.stderr)
    r = m.result()
    if args.json:
        out = {"predictions": args.predictions, "targets": args.targets, "from": args.kind, **r}
        if not args.per_class:
            del out["per_class"]
        print(json.dumps(_json_safe(out), indent=2))
        return 0
    print(
        f"{args.predictions}: {r['rows']} rows x {r['classes']} classes of {args.kind} "
        f"({source.dtype}); labels from {args.targets}\n"
    )
    print(report(r, args.per_class))
    return 0
