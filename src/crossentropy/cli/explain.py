"""``crossentropy explain``: a cross-entropy loss computed step by step.

For each row the table follows the computation that ``cross_entropy`` makes:
logits -> minus the row max -> exp -> softmax -> log -> the target's
log-probability -> loss, and the gradient with respect to the logits
(``softmax - one-hot``).  The intermediate columns are computed here with NumPy
in float64; the loss and the gradient come from the library
(``crossentropy.cross_entropy`` and ``crossentropy.value_and_grad``), and the
two agree.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import crossentropy as ce

from ._util import (
    SUM_TOLERANCE,
    CLIError,
    UsageError,
    add_help_example,
    check_base,
    fmt,
    table,
    to_json,
)
from .readers import is_number, load_matrix, parse_rows

__all__ = ["explain", "register"]

_EXAMPLES = """\
  crossentropy explain --logits 2.0 1.0 0.1 --target 0
  crossentropy explain --logits 2 1 0.1 / 0.5 2.5 0.3 --target 0 1 --label-smoothing 0.1
  crossentropy explain --probs 0.1 0.1 0.8 --target 2 --base 2
  crossentropy explain --log-probs -2.3026 -2.3026 -0.2231 --target 2
  crossentropy explain --logits scores.csv --target labels.txt --weight 1 2 1 --rows 3
  python make_scores.py | crossentropy explain --logits - --target labels.txt --json
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="show a cross-entropy loss and its gradient step by step",
        **add_help_example(
            "Print, for each row, the steps of cross_entropy: logits, minus the row max,\n"
            "exp, softmax, log, the target's log-probability and the loss, with the\n"
            "gradient softmax - one-hot.  Rows are separated by '/', or read from a\n"
            "file (.npy, .npz, .csv, whitespace text; '-' for standard input).  Warns\n"
            "when logits look like probabilities.",
            _EXAMPLES,
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--logits", nargs="+", metavar="X", help="raw scores, or a file")
    src.add_argument("--probs", nargs="+", metavar="P", help="probabilities (rows sum to 1)")
    src.add_argument("--log-probs", nargs="+", metavar="L", help="log-probabilities")
    p.add_argument(
        "--target",
        nargs="+",
        required=True,
        metavar="Y",
        help="class index of each row (0-based), or a file of them",
    )
    p.add_argument("--weight", nargs="+", type=float, metavar="W", help="one weight per class")
    p.add_argument(
        "--label-smoothing", type=float, default=0.0, metavar="EPS", help="in [0, 1] (%(default)s)"
    )
    p.add_argument(
        "--reduction", choices=("mean", "sum", "none"), default="mean", help="(%(default)s)"
    )
    p.add_argument(
        "--base", type=float, default=None, help="logarithm base: 2 for bits (default: e, nats)"
    )
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        metavar="N",
        help="show the steps of the first N rows only (the totals still cover every row)",
    )
    p.add_argument("--json", action="store_true", help="print the steps and the loss as JSON")
    p.set_defaults(run=_run)


def _check_target_range(target: np.ndarray, C: int) -> None:
    bad = (target < 0) | (target >= C)
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(
            f"--target: class {target[i]:g} (row {i}) is out of range for {C} classes; "
            f"valid indices are 0..{C - 1}"
        )


def _targets(tokens: list[str], rows: np.ndarray) -> np.ndarray:
    """The class index of each row, typed or from a file, checked before the int64 cast."""
    n_rows = rows.shape[0]
    if len(tokens) == 1 and not is_number(tokens[0]):
        t = load_matrix(tokens[0], "--target").reshape(-1)
    else:
        try:
            t = np.array([float(tok) for tok in tokens])
        except ValueError:
            raise UsageError(f"--target: expected integer class indices, got {tokens}") from None
    bad = ~(np.isfinite(t) & (t == np.round(t)))
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(f"--target: class indices must be integers, got {t[i]:g} (row {i})")
    if t.size != n_rows:
        raise UsageError(f"--target: got {t.size} target(s) for {n_rows} row(s); give one per row")
    _check_target_range(t, rows.shape[1])  # on the floats: 1e30 would wrap as an int64
    return t.astype(np.int64)


def _check_probs(q: np.ndarray) -> None:
    bad = ~((q >= 0) & (q <= 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise CLIError(f"--probs: entry {float(q[r, c]):g} (row {r}, class {c}) is not in [0, 1]")
    sums = q.sum(axis=1)
    off = np.abs(sums - 1) > SUM_TOLERANCE
    if off.any():
        r = int(np.argmax(off))
        raise CLIError(
            f"--probs: row {r} sums to {sums[r]:.6g}, not 1; pass logits with --logits, "
            f"or log-probabilities with --log-probs"
        )


def _check_log_probs(lp: np.ndarray) -> None:
    if np.isnan(lp).any() or (lp > 1e-9).any():
        r, c = np.argwhere(np.isnan(lp) | (lp > 1e-9))[0]
        raise CLIError(f"--log-probs: entry {float(lp[r, c]):g} (row {r}, class {c}) is not <= 0")
    with np.errstate(divide="ignore"):
        lse = np.log(np.sum(np.exp(lp), axis=1))
    off = np.abs(lse) > SUM_TOLERANCE
    if off.any():
        r = int(np.argmax(off))
        raise CLIError(
            f"--log-probs: row {r} is not normalised (exp sums to {math.exp(lse[r]):.6g}, "
            f"not 1); pass raw scores with --logits"
        )


@dataclass
class _Units:
    """How losses and logs are printed: natural logs (nats) or logs in ``base``."""

    base: float | None

    @property
    def scale(self) -> float:
        return 1.0 if self.base is None else 1.0 / math.log(self.base)

    @property
    def unit(self) -> str:
        if self.base is None:
            return "nats"
        return "bits" if self.base == 2 else f"log base {self.base:g}"

    @property
    def log_name(self) -> str:
        if self.base is None:
            return "log p"
        return "log2 p" if self.base == 2 else f"log_{self.base:g} p"

    @property
    def log_word(self) -> str:
        return self.log_name.split(" ")[0]


@dataclass
class _Call:
    """One explained call: the inputs, the intermediate steps and the library's answers."""

    kind: str
    rows: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    eps: float
    reduction: str
    units: _Units
    # the steps, in float64 NumPy
    logits: np.ndarray = field(init=False)
    row_max: np.ndarray = field(init=False)
    shifted: np.ndarray = field(init=False)
    e: np.ndarray = field(init=False)
    s: np.ndarray = field(init=False)
    p: np.ndarray = field(init=False)
    logp: np.ndarray = field(init=False)
    # from the library
    row_loss: np.ndarray = field(init=False)
    total: float = field(init=False)
    row_grad: np.ndarray = field(init=False)

    @property
    def n_classes(self) -> int:
        return self.rows.shape[1]

    @property
    def weights(self) -> np.ndarray:
        return np.ones(self.n_classes) if self.weight is None else self.weight


def _validate(
    kind: str,
    rows: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None,
    label_smoothing: float,
    base: float | None,
) -> None:
    n, C = rows.shape
    if C < 1:
        raise UsageError("each row needs at least one class")
    _check_target_range(target, C)
    if weight is not None and weight.shape != (C,):
        raise UsageError(
            f"--weight: got {weight.size} weight(s) for {C} classes; give one per class"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise UsageError(f"--label-smoothing must be in [0, 1], got {label_smoothing}")
    check_base(base)
    if weight is not None and not np.isfinite(weight).all():
        i = int(np.argmax(~np.isfinite(weight)))
        raise UsageError(f"--weight: weight {weight[i]:g} of class {i} is not a finite number")
    _check_rows(kind, rows)


def _check_rows(kind: str, rows: np.ndarray) -> None:
    """Rows without a loss: NaN anywhere, or logits with +inf or with no finite entry."""
    problems = [(np.isnan(rows).any(axis=1), "contains NaN")]
    if kind == "logits":
        problems += [
            (np.isposinf(rows).any(axis=1), "contains +inf (its softmax is undefined)"),
            (np.isneginf(rows).all(axis=1), "has only -inf (no class is possible)"),
        ]
    for mask, what in problems:
        if mask.any():
            raise CLIError(f"--{kind}: row {int(np.argmax(mask))} {what}")


def _compute_steps(c: _Call) -> None:
    """The intermediate columns: logits, minus the row max, exp, softmax, log."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if c.kind == "probs":
            _check_probs(c.rows)
            c.logits = np.log(c.rows)  # softmax(log q) = q: log-probabilities are logits
        else:
            if c.kind == "log-probs":
                _check_log_probs(c.rows)
            c.logits = c.rows
        m = np.max(c.logits, axis=1, keepdims=True)
        c.row_max = np.where(np.isfinite(m), m, 0.0)
        c.shifted = c.logits - c.row_max
        c.e = np.exp(c.shifted)
        c.s = c.e.sum(axis=1, keepdims=True)
        c.p = c.e / c.s
        c.logp = c.shifted - np.log(c.s)


def _compute_library(c: _Call) -> None:
    """The loss and its gradient, from ``crossentropy``."""
    kw = {"weight": c.weight, "label_smoothing": c.eps}
    with warnings.catch_warnings():  # explain() words its own warning
        warnings.simplefilter("ignore", ce.ProbabilitiesAsLogitsWarning)
        c.row_loss = np.asarray(ce.cross_entropy(c.logits, c.target, reduction="none", **kw))
        total = ce.cross_entropy(c.logits, c.target, reduction=c.reduction, **kw)
        c.total = float(np.asarray(total).sum())
        _, c.row_grad = ce.value_and_grad(ce.cross_entropy)(
            c.logits, c.target, reduction="none", **kw
        )


def _title(c: _Call) -> str:
    options = [f"reduction={c.reduction!r}"]
    if c.weight is not None:
        options.append(f"weight={_vec(c.weight)}")
    if c.eps:
        options.append(f"label_smoothing={c.eps:g}")
    n, C = c.rows.shape
    return (
        f"cross_entropy on {n} row(s) of {c.kind}, C = {C} classes, {', '.join(options)}; "
        f"losses in {c.units.unit}"
    )


def _columns(c: _Call, i: int) -> tuple[list[str], list[np.ndarray]]:
    """The header and the columns of row ``i``'s table (the class column aside)."""
    scale, y = c.units.scale, int(c.target[i])
    if c.kind == "logits":
        header = ["logit x", "x - max", "exp(x - max)", "softmax p", c.units.log_name]
        cols = [c.rows[i], c.shifted[i], c.e[i], c.p[i], c.logp[i] * scale]
    elif c.kind == "probs":
        header = ["p", c.units.log_name]
        cols = [c.rows[i], c.logp[i] * scale]
    elif c.units.base is None:
        header, cols = ["log p", "p = exp"], [c.rows[i], c.p[i]]
    else:
        header = ["log p (nats)", "p = exp", c.units.log_name]
        cols = [c.rows[i], c.p[i], c.logp[i] * scale]
    if c.eps:
        header.append("target dist")
        cols.append((1 - c.eps) * np.eye(c.n_classes)[y] + c.eps / c.n_classes)
    if c.weight is not None:
        header.append("weight")
        cols.append(c.weight)
    header.append("dloss/dx" if c.weight is not None or c.eps else "p - onehot")
    cols.append(c.row_grad[i] * scale)
    return header, cols


def _row_section(c: _Call, i: int) -> list[str]:
    """Row ``i``: its table of steps, then its loss."""
    y = int(c.target[i])
    header, cols = _columns(c, i)
    body = [
        [str(k)] + [fmt(col[k]) for col in cols] + (["<- target"] if k == y else [""])
        for k in range(c.n_classes)
    ]
    out = ["", f"row {i}: target class {y}", _indent(table(["class", *header, ""], body))]
    if c.kind == "logits":
        lse = float(c.row_max[i, 0] + np.log(c.s[i, 0]))
        out.append(
            f"  max x = {fmt(c.row_max[i, 0])}; sum exp(x - max) = {fmt(c.s[i, 0])}; "
            f"logsumexp(x) = max + log(sum) = {fmt(lse)}"
        )
    return out + _loss_lines(c, i)


def _loss_lines(c: _Call, i: int) -> list[str]:
    """Row ``i``'s loss, written out with its weight and label smoothing."""
    u, y, eps, C = c.units, int(c.target[i]), c.eps, c.n_classes
    picked = -c.logp[i, y] * u.scale
    loss_i = c.row_loss[i] * u.scale
    wy = float(c.weights[y])
    if not eps and c.weight is None:
        return [f"  loss = -{u.log_word} p[{y}] = {fmt(picked)} {u.unit}"]
    if not eps:
        return [
            f"  loss = w[{y}] * -{u.log_word} p[{y}] = {fmt(wy)} * {fmt(picked)} = "
            f"{fmt(loss_i)} {u.unit}"
        ]
    smooth = float(-(c.weights * c.logp[i]).sum() * u.scale)
    return [
        f"  loss = (1 - {eps:g}) * w[{y}] * -{u.log_word} p[{y}] + {eps:g}/{C} * "
        f"sum_c w[c] * -{u.log_word} p[c]",
        f"       = {fmt(1 - eps)} * {fmt(wy)} * {fmt(picked)} + {fmt(eps / C)} * "
        f"{fmt(smooth)} = {fmt(loss_i)} {u.unit}",
    ]


def _summary(c: _Call) -> list[str]:
    """The reduction over rows and the equivalent library call."""
    u, n = c.units, c.rows.shape[0]
    out = [""]
    if c.kind != "logits":
        out.append(
            "the gradient is with respect to the logits: log p, or any x with softmax(x) = p"
        )
    value = c.total * u.scale
    if c.reduction == "mean":
        weighted = c.weight is not None
        what = "the summed weight of the targets" if weighted else "the number of rows"
        denom = fmt(float(c.weights[c.target].sum())) if weighted else str(n)
        out.append(
            f"mean over rows: sum of row losses / {what} = {fmt(c.row_loss.sum() * u.scale)} / "
            f"{denom} = {fmt(value)} {u.unit}"
        )
        out.append(f"gradient of the mean: each row's gradient divided by {denom}")
    elif c.reduction == "sum":
        out.append(f"sum over rows = {fmt(value)} {u.unit}")
    call = [{"logits": "logits", "probs": "log(p)", "log-probs": "log_p"}[c.kind], "target"]
    if c.weight is not None:
        call.append("weight=w")
    if c.eps:
        call.append(f"label_smoothing={c.eps:g}")
    if c.reduction != "mean":
        call.append(f"reduction={c.reduction!r}")
    conv = "" if u.base is None else f" / ln({u.base:g})"
    result = fmt(value) if c.reduction != "none" else _vec(c.row_loss * u.scale)
    out.append(f"crossentropy.cross_entropy({', '.join(call)}){conv} = {result}")
    return out


def _probabilities_warning(c: _Call) -> str:
    """Why logits in [0, 1] that sum to 1 make a poor loss, with row 0's numbers."""
    u, C, y = c.units, c.n_classes, int(c.target[0])
    as_probs = -math.log(c.rows[0, y]) * u.scale if c.rows[0, y] > 0 else math.inf
    return (
        "warning: every row of --logits lies in [0, 1] and sums to 1, so these look like "
        "probabilities, not logits.\n"
        "  cross_entropy applies softmax itself; softmax of probabilities squashes them "
        f"towards uniform (row 0 becomes {_vec(c.p[0])}):\n"
        f"  with inputs in [0, 1] the loss can never fall below log(e + {C - 1}) - 1 = "
        f"{fmt((math.log(math.e + C - 1) - 1) * u.scale)}, even for a one-hot row, so "
        f"training stalls.\n"
        f"  If they are probabilities, use --probs: row 0's loss would be "
        f"-{u.log_word} {c.rows[0, y]:g} = {fmt(as_probs)} {u.unit}."
    )


def _as_json(c: _Call, shown: int) -> str:
    """The call, the first ``shown`` rows' steps and the loss, as JSON."""
    u, n = c.units, c.rows.shape[0]
    loss = c.row_loss * u.scale if c.reduction == "none" else c.total * u.scale
    per_row = [
        {
            "row": i,
            "target": int(c.target[i]),
            "input": c.rows[i],
            "softmax": c.p[i],
            "log_softmax": c.logp[i] * u.scale,
            "loss": c.row_loss[i] * u.scale,
            "gradient": c.row_grad[i] * u.scale,
        }
        for i in range(shown)
    ]
    call = {"input": c.kind, "rows": n, "classes": c.n_classes, "reduction": c.reduction}
    options = {"weight": c.weight, "label_smoothing": c.eps, "unit": u.unit, "base": u.base}
    shown_rows = {"rows_shown": shown, "rows_not_shown": n - shown, "per_row": per_row}
    return to_json({**call, **options, "loss": loss, **shown_rows})


def explain(
    kind: str,
    rows: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    base: float | None = None,
    max_rows: int | None = None,
    as_json: bool = False,
) -> tuple[str, str]:
    """The step-by-step report (text, or JSON with ``as_json``) and a warning ('' if none).

    ``kind`` is ``'logits'``, ``'probs'`` or ``'log-probs'``; ``rows`` is
    ``(N, C)`` float64 and ``target`` ``(N,)`` class indices.  ``max_rows``
    limits the rows whose steps are shown; the loss covers every row.
    """
    _validate(kind, rows, target, weight, label_smoothing, base)
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    c = _Call(kind, rows, target, w, label_smoothing, reduction, _Units(base))
    _compute_steps(c)
    _compute_library(c)
    n = rows.shape[0]
    shown = n if max_rows is None else min(max_rows, n)
    warned = kind == "logits" and ce.looks_like_probabilities(rows, axis=1)
    warning = _probabilities_warning(c) if warned else ""
    if as_json:
        return _as_json(c, shown), warning
    out = [_title(c)]
    for i in range(shown):
        out += _row_section(c, i)
    if shown < n:
        out += ["", f"... {n - shown} more row(s) not shown (--rows {shown}); the totals below "
                f"cover all {n} rows"]  # fmt: skip
    out += _summary(c)
    return "\n".join(out), warning


def _vec(v: np.ndarray) -> str:
    return "[" + ", ".join(fmt(x) for x in v) + "]"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _run(args: argparse.Namespace) -> int:
    kind, tokens = next(
        (k, v)
        for k, v in (("logits", args.logits), ("probs", args.probs), ("log-probs", args.log_probs))
        if v is not None
    )
    rows = parse_rows(tokens, f"--{kind}")
    target = _targets(args.target, rows)
    weight = None if args.weight is None else np.array(args.weight, dtype=np.float64)
    if args.rows is not None and args.rows < 0:
        raise UsageError(f"--rows must be at least 0, got {args.rows}")
    report, warning = explain(
        kind,
        rows,
        target,
        weight=weight,
        label_smoothing=args.label_smoothing,
        reduction=args.reduction,
        base=args.base,
        max_rows=args.rows,
        as_json=args.json,
    )
    if warning:
        print(warning, file=sys.stderr)
    print(report)
    return 0
