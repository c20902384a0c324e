"""Reading numbers: typed on the command line, or from ``.npy``, ``.npz``, CSV and text files.

Two kinds of readers live here:

* :func:`parse_rows` and :func:`load_matrix` read the small matrices that
  ``explain``, ``entropy``, ``kl`` and ``ce`` take (typed rows separated by
  ``/``, or a whole small file);
* :func:`open_predictions` and :func:`read_targets` read ``eval``'s inputs.
  The predictions are read in blocks of rows (``.npy`` memory-mapped one block
  at a time, ``.npz`` members and text files streamed), so that a file larger
  than memory is evaluated in a few tens of megabytes.
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._util import CLIError, UsageError

__all__ = [
    "STDIN",
    "Source",
    "display_name",
    "format_label",
    "is_number",
    "load_matrix",
    "open_predictions",
    "parse_rows",
    "read_targets",
    "standard_input",
    "stdin_path",
]

TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
# UTF-8, with the byte-order mark that spreadsheet programs write skipped
TEXT_ENCODING = "utf-8-sig"


# -- standard input ----------------------------------------------------------------------

STDIN = "-"
_STDIN_DIR: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "stdin_dir", default=None
)
_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


@contextlib.contextmanager
def standard_input() -> Iterator[None]:
    """Within this context, ``-`` names a copy of standard input (see :func:`stdin_path`);
    the copy is removed at the end."""
    with tempfile.TemporaryDirectory(prefix="crossentropy-stdin-") as d:
        token = _STDIN_DIR.set({"dir": Path(d), "path": None})
        try:
            yield
        finally:
            _STDIN_DIR.reset(token)


def stdin_path(what: str) -> Path:
    """Standard input copied to a file named by its content: ``.npy``, ``.npz``, ``.csv``
    (a comma in the first line) or ``.txt`` (whitespace-separated numbers).

    The copy goes to disk in chunks, so that ``eval`` reads a large stream in
    blocks as it reads a file.  Standard input can be read once per command.
    """
    state = _STDIN_DIR.get()
    if state is None:  # pragma: no cover - every command runs inside standard_input()
        raise RuntimeError("stdin_path() outside standard_input()")
    if state["path"] is not None:
        raise UsageError(f"{what}: standard input ('-') is already read for {state['what']}")
    raw = state["dir"] / "stdin"
    with raw.open("wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    with raw.open("rb") as f:
        head = f.read(4096)
    if head.startswith(_NPY_MAGIC):
        suffix = ".npy"
    elif head.startswith(_ZIP_MAGIC):
        suffix = ".npz"
    else:
        suffix = ".csv" if b"," in head.split(b"\n", 1)[0] else ".txt"
    path = raw.rename(raw.with_suffix(suffix))
    state.update(path=path, what=what)
    return path


def display_name(path: str | Path) -> str:
    """How a message names a file: its path, or ``standard input`` for ``-``'s copy."""
    state = _STDIN_DIR.get()
    if state is not None and state["path"] is not None and Path(path) == state["path"]:
        return "standard input"
    return str(path)


def _quoted(path: str | Path) -> str:
    name = display_name(path)
    return name if name == "standard input" else repr(name)


def _local(spec: str, what: str) -> str:
    """``spec``, or the copy of standard input when it is ``-``."""
    return str(stdin_path(what)) if spec == STDIN else spec


# -- numbers typed on the command line, and small files ---------------------------------


def is_number(token: str) -> bool:
    """True if ``token`` reads as a float (``-1e-5``, ``-inf`` and ``nan`` included)."""
    try:
        float(token)
    except ValueError:
        return False
    return True


def _float(token: str, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise UsageError(f"{what}: {token!r} is not a number") from None


def parse_rows(tokens: Sequence[str], what: str) -> np.ndarray:
    """Numbers typed on the command line as a float64 ``(rows, C)`` matrix.

    Rows are separated by ``/`` (``2 1 0.1 / 0.5 2.5 0.3``); a single token
    that is not a number is read as a file (see :func:`load_matrix`).
    """
    tokens = list(tokens)
    if len(tokens) == 1 and not is_number(tokens[0]):
        return load_matrix(tokens[0], what)
    rows: list[list[float]] = [[]]
    for tok in tokens:
        if tok == "/":
            rows.append([])
        else:
            rows[-1].extend(_float(t, what) for t in tok.replace(",", " ").split())
    if any(len(r) == 0 for r in rows):
        raise UsageError(f"{what}: empty row (check the '/' separators)")
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise UsageError(
            f"{what}: every row needs the same number of classes, got rows of lengths "
            f"{[len(r) for r in rows]}"
        )
    return np.array(rows, dtype=np.float64)


def load_matrix(path: str, what: str) -> np.ndarray:
    """A small ``(rows, C)`` float64 matrix from ``.npy``, ``.npz`` (first array) or text/CSV;
    ``-`` reads standard input."""
    path = _local(path, what)
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what}: {_quoted(path)} is neither a list of numbers nor a file")
    try:
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if not z.files:
                    raise CLIError(f"{what}: {_quoted(path)} holds no arrays")
                a = z[z.files[0]]
        else:
            lines = _data_lines(p, "," if p.suffix == ".csv" else None, what)
            a = np.loadtxt(lines, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise CLIError(f"{what}: cannot read {_quoted(path)}: {e}") from None
    if a.dtype.kind not in "biuf":
        raise CLIError(f"{what}: {_quoted(path)} holds {a.dtype} values, not real numbers")
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise CLIError(
            f"{what}: {_quoted(path)} must hold a (rows, classes) matrix, got shape {a.shape}"
        )
    return a


# -- eval's predictions, in blocks of rows ----------------------------------------------


def _split_key(spec: str) -> tuple[Path, str | None]:
    """``NAME.npz:KEY`` -> (path, key); anything else -> (path, None)."""
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key:
        return Path(head), key
    return Path(spec), None


def _pick_key(files: list[str], key: str | None, preferred: tuple[str, ...], what: str) -> str:
    if not files:
        raise CLIError(f"{what}: the .npz holds no arrays")
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


class Source:
    """A (rows, classes) matrix read in blocks of rows."""

    def __init__(self, path: Path, n_rows: int, n_classes: int, dtype: Any) -> None:
        self.path, self.n_rows, self.n_classes, self.dtype = path, n_rows, n_classes, dtype

    def blocks(self, rows: int) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class ArraySource(Source):
    """An array in memory or memory-mapped (``.npy``)."""

    def __init__(self, path: Path, a: Any) -> None:
        super().__init__(path, a.shape[0], a.shape[1], a.dtype)
        self.a = a

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        for start in range(0, self.n_rows, rows):
            yield np.asarray(self.a[start : start + rows])


class NpySource(Source):
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


class FortranNpySource(Source):
    """A column-major (Fortran-order) ``.npy`` file, read one block of rows at a time.

    The file holds the columns one after another: a block of rows is one read
    of a stretch of each column.  Plain reads rather than a memory map, whose
    faults can map far more of the file than the block (the whole file, for
    columns a few hundred kilobytes apart).
    """

    def __init__(self, path: Path, offset: int, shape: tuple, dtype: Any) -> None:
        super().__init__(path, shape[0], shape[1], dtype)
        self.offset = offset

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        size = self.dtype.itemsize
        with self.path.open("rb") as fh:
            for start in range(0, self.n_rows, rows):
                k = min(rows, self.n_rows - start)
                columns = np.empty((self.n_classes, k), dtype=self.dtype)
                for c in range(self.n_classes):
                    fh.seek(self.offset + (c * self.n_rows + start) * size)
                    if fh.readinto(memoryview(columns[c]).cast("B")) != k * size:
                        raise CLIError(f"PREDICTIONS: {display_name(self.path)} is truncated")
                yield np.ascontiguousarray(columns.T)


class NpzMemberSource(Source):
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
                raise CLIError(f"PREDICTIONS: {display_name(self.path)} is truncated")
            yield np.frombuffer(buf, dtype=self.dtype).reshape(k, self.n_classes)
            left -= k

    def close(self) -> None:
        self.fh.close()
        self.zf.close()


class TextSource(Source):
    """A CSV (comma) or whitespace-separated text file, parsed block by block."""

    def __init__(self, path: Path, delimiter: str | None) -> None:
        self.delimiter = delimiter
        self.header = False
        n_rows, first = 0, None
        with path.open(encoding=TEXT_ENCODING) as f:
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
            raise CLIError(f"PREDICTIONS: {display_name(path)} holds no rows")
        data_line = first if not self.header else None
        if data_line is None:
            with path.open(encoding=TEXT_ENCODING) as f:
                lines = (ln for ln in f if ln.strip())
                next(lines)
                data_line = next(lines)
        n_classes = len(_fields(data_line, delimiter))
        super().__init__(path, n_rows, n_classes, np.dtype(np.float64))

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        with self.path.open(encoding=TEXT_ENCODING) as f:
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
                f"{display_name(self.path)}: {e}"
            ) from None
        if a.shape[1] != self.n_classes:
            raise CLIError(
                f"PREDICTIONS: rows of {display_name(self.path)} have different numbers of columns "
                f"({self.n_classes} in the first row, {a.shape[1]} near row {start})"
            )
        return a


def _fields(line: str, delimiter: str | None) -> list[str]:
    return [t for t in line.strip().split(delimiter)]


def _numeric_line(line: str, delimiter: str | None) -> bool:
    return all(is_number(t) for t in _fields(line, delimiter))


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
            f"PREDICTIONS: {display_name(path)} must hold a 2-D (rows, classes) array, got shape {shape}"
        )
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise CLIError(f"PREDICTIONS: {display_name(path)} holds {dtype} values, not real numbers")


def open_predictions(spec: str) -> Source:
    """Open a predictions file (``-``: standard input) for block reading (nothing large is
    loaded)."""
    path, key = _split_key(_local(spec, "PREDICTIONS"))
    if not path.is_file():
        raise CLIError(f"PREDICTIONS: no such file {_quoted(path)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _open_npy(path)
        if suffix == ".npz":
            return _open_npz_member(path, key)
        if suffix in TEXT_SUFFIXES:
            return TextSource(path, "," if suffix == ".csv" else None)
    except (ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CLIError(f"PREDICTIONS: cannot read {_quoted(path)}: {e}") from None
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


def _open_npy(path: Path) -> Source:
    with path.open("rb") as fh:
        shape, fortran, dtype = _read_header(fh)
        offset = fh.tell()
    if dtype is None or dtype.hasobject:
        # a format version this reader does not parse: one mapping of the whole file
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_matrix_dtype(a.dtype, a.shape, path)
        return ArraySource(path, a)
    _check_matrix_dtype(dtype, shape, path)
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < expected:
        raise CLIError(
            f"PREDICTIONS: {display_name(path)} is truncated ({path.stat().st_size} of {expected} bytes)"
        )
    if fortran and shape[0] > 1 and shape[1] > 1:
        return FortranNpySource(path, offset, shape, dtype)
    return NpySource(path, offset, shape, dtype)


def _open_npz_member(path: Path, key: str | None) -> Source:
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
        return ArraySource(path, a)
    _check_matrix_dtype(dtype, shape, path)
    return NpzMemberSource(path, zf, fh, shape, dtype)


def format_label(v: Any) -> str:
    """A label as typed: ``3``, ``18446744073709551615`` or ``1e+30``."""
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(int(v))


# -- eval's targets ----------------------------------------------------------------------


def read_targets(spec: str) -> np.ndarray:
    """Class labels, shape (rows,): integers, or floats holding whole numbers (``-``:
    standard input)."""
    path, key = _split_key(_local(spec, "TARGETS"))
    if not path.is_file():
        raise CLIError(f"TARGETS: no such file {_quoted(path)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            t = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                t = z[_pick_key(z.files, key, ("labels", "targets", "target", "y"), "TARGETS")]
        elif suffix in TEXT_SUFFIXES:
            t = _read_text_labels(path, "," if suffix == ".csv" else None)
        else:
            raise CLIError(
                f"TARGETS: unsupported file type {suffix!r}; use .npy, .npz, .csv or .txt"
            )
    except (ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CLIError(f"TARGETS: cannot read {_quoted(path)}: {e}") from None
    return _as_labels(t)


def _as_labels(t: np.ndarray) -> np.ndarray:
    """One integer class index per row: an integer array, or floats that are all whole
    numbers (kept as floats: 1e30 or 2**64 - 1 would wrap in an int64 before the range
    check sees them)."""
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        hint = " (one-hot? save the argmax of each row)" if t.ndim == 2 else ""
        raise CLIError(
            f"TARGETS: expected one class index per row, shape (rows,), got {t.shape}{hint}"
        )
    if t.dtype == np.bool_:
        return np.asarray(t, dtype=np.int64)
    if np.issubdtype(t.dtype, np.integer):
        return np.asarray(t)
    if not np.issubdtype(t.dtype, np.floating):
        raise CLIError(f"TARGETS: expected integer class labels, got dtype {t.dtype}")
    t = np.asarray(t, dtype=np.float64)
    bad = ~(np.isfinite(t) & (t == np.round(t)))
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(
            f"TARGETS: labels must be integers; {int(bad.sum())} are not (first: {float(t[i]):g} at row {i})"
        )
    return t


def _data_lines(path: Path, delimiter: str | None, what: str) -> list[str]:
    """The non-blank lines of a text file, without a header line (one that is not numbers)."""
    with path.open(encoding=TEXT_ENCODING) as f:
        lines = [ln for ln in f if ln.strip()]
    if lines and not _numeric_line(lines[0], delimiter):
        lines = lines[1:]
    if not lines:
        raise CLIError(f"{what}: {display_name(path)} holds no numbers")
    return lines


def _read_text_labels(path: Path, delimiter: str | None) -> np.ndarray:
    lines = _data_lines(path, delimiter, "TARGETS")
    return np.loadtxt(lines, delimiter=delimiter, ndmin=1, dtype=np.float64)
