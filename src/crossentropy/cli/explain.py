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
from typing import Any

import numpy as np

from ._util import CLIError, UsageError, add_help_example, fmt, load_matrix, parse_rows, table

__all__ = ["explain", "register"]

_EXAMPLES = """\
  crossentropy explain --logits 2.0 1.0 0.1 --target 0
  crossentropy explain --logits 2 1 0.1 / 0.5 2.5 0.3 --target 0 1 --label-smoothing 0.1
  crossentropy explain --probs 0.1 0.1 0.8 --target 2 --base 2
  crossentropy explain --log-probs -2.3026 -2.3026 -0.2231 --target 2
  crossentropy explain --logits scores.csv --target labels.txt --weight 1 2 1
"""

# how far from 1 a typed row of probabilities may sum (hand-typed numbers are rounded)
SUM_TOLERANCE = 0.01


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="show a cross-entropy loss and its gradient step by step",
        **add_help_example(
            "Print, for each row, the steps of cross_entropy: logits, minus the row max,\n"
            "exp, softmax, log, the target's log-probability and the loss, with the\n"
            "gradient softmax - one-hot.  Rows are separated by '/', or read from a\n"
            "file (.npy, .npz, .csv, whitespace text).  Warns when logits look like\n"
            "probabilities.",
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
    p.set_defaults(run=_run)


def _targets(tokens: list[str], n_rows: int) -> np.ndarray:
    if len(tokens) == 1 and not tokens[0].lstrip("-").isdigit():
        t = load_matrix(tokens[0], "--target").reshape(-1)
    else:
        try:
            t = np.array([float(tok) for tok in tokens])
        except ValueError:
            raise UsageError(f"--target: expected integer class indices, got {tokens}") from None
    if not np.all(t == np.round(t)):
        raise CLIError(f"--target: class indices must be integers, got {t.tolist()}")
    if t.size != n_rows:
        raise UsageError(f"--target: got {t.size} target(s) for {n_rows} row(s); give one per row")
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


def explain(
    kind: str,
    rows: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    base: float | None = None,
) -> tuple[str, str]:
    """The step-by-step report as text, and a warning ('' if none).

    ``kind`` is ``'logits'``, ``'probs'`` or ``'log-probs'``; ``rows`` is
    ``(N, C)`` float64 and ``target`` ``(N,)`` class indices.
    """
    import crossentropy as ce

    n, C = rows.shape
    if C < 1:
        raise UsageError("each row needs at least one class")
    bad_t = (target < 0) | (target >= C)
    if bad_t.any():
        i = int(np.argmax(bad_t))
        raise CLIError(
            f"--target: class {target[i]} (row {i}) is out of range for {C} classes; "
            f"valid indices are 0..{C - 1}"
        )
    if weight is not None and weight.shape != (C,):
        raise UsageError(
            f"--weight: got {weight.size} weight(s) for {C} classes; give one per class"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise UsageError(f"--label-smoothing must be in [0, 1], got {label_smoothing}")
    if base is not None and (not base > 0 or base == 1):
        raise UsageError(f"--base must be positive and not 1, got {base}")
    if np.isnan(rows).any():
        r = int(np.argmax(np.isnan(rows).any(axis=1)))
        raise CLIError(f"--{kind}: row {r} contains NaN")

    # --- the intermediate steps, in float64 NumPy --------------------------------
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "probs":
            _check_probs(rows)
            logits = np.log(rows)  # softmax(log q) = q: log-probabilities are logits
        elif kind == "log-probs":
            _check_log_probs(rows)
            logits = rows
        else:
            logits = rows
        m = np.max(logits, axis=1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        shifted = logits - m
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        logp = shifted - np.log(s)

    # --- the loss and its gradient, from the library -----------------------------
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    kw = {"weight": w, "label_smoothing": label_smoothing}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row_loss = np.asarray(ce.cross_entropy(logits, target, reduction="none", **kw))
        total = float(ce.cross_entropy(logits, target, reduction=reduction, **kw).sum())
    _, row_grad = ce.value_and_grad(ce.cross_entropy)(logits, target, reduction="none", **kw)
    warned = any(issubclass(c.category, ce.ProbabilitiesAsLogitsWarning) for c in caught)

    scale = 1.0 if base is None else 1.0 / math.log(base)
    unit = "nats" if base is None else ("bits" if base == 2 else f"log base {base:g}")
    log_name = "log p" if base is None else ("log2 p" if base == 2 else f"log_{base:g} p")
    eps = label_smoothing
    wts = np.ones(C) if w is None else w
    denom = float(wts[target].sum()) if reduction == "mean" else 1.0

    out: list[str] = []
    options = [f"reduction={reduction!r}"]
    if w is not None:
        options.append(f"weight={_vec(w)}")
    if eps:
        options.append(f"label_smoothing={eps:g}")
    out.append(
        f"cross_entropy on {n} row(s) of {kind}, C = {C} classes, {', '.join(options)}; "
        f"losses in {unit}"
    )
    for i in range(n):
        y = int(target[i])
        out.append("")
        out.append(f"row {i}: target class {y}")
        header = ["class"]
        if kind == "logits":
            header += ["logit x", "x - max", "exp(x - max)", "softmax p", log_name]
            cols = [rows[i], shifted[i], e[i], p[i], logp[i] * scale]
        elif kind == "probs":
            header += ["p", log_name]
            cols = [rows[i], logp[i] * scale]
        else:
            header += ["log p" if base is None else "log p (nats)", "p = exp", log_name]
            cols = [rows[i], p[i], logp[i] * scale]
            if base is None:
                header.pop()
                cols.pop()
        q = (1 - eps) * np.eye(C)[y] + eps / C
        if eps:
            header.append("target dist")
            cols.append(q)
        if w is not None:
            header.append("weight")
            cols.append(w)
        header.append("dloss/dx" if w is not None or eps else "p - onehot")
        cols.append(row_grad[i] * scale)
        body = []
        for c in range(C):
            body.append(
                [str(c)] + [fmt(col[c]) for col in cols] + (["<- target"] if c == y else [""])
            )
        header.append("")
        out.append(_indent(table(header, body)))
        if kind == "logits":
            lse = float(m[i, 0] + np.log(s[i, 0]))
            out.append(
                f"  max x = {fmt(m[i, 0])}; sum exp(x - max) = {fmt(s[i, 0])}; "
                f"logsumexp(x) = max + log(sum) = {fmt(lse)}"
            )
        picked = -logp[i, y] * scale
        log_word = log_name.split(" ")[0]
        loss_i = row_loss[i] * scale
        wy = float(wts[y])
        if not eps and w is None:
            out.append(f"  loss = -{log_word} p[{y}] = {fmt(picked)} {unit}")
        elif not eps:
            out.append(
                f"  loss = w[{y}] * -{log_word} p[{y}] = {fmt(wy)} * {fmt(picked)} = {fmt(loss_i)} {unit}"
            )
        else:
            smooth = float(-(wts * logp[i]).sum() * scale)
            out.append(
                f"  loss = (1 - {eps:g}) * w[{y}] * -{log_word} p[{y}] + {eps:g}/{C} * "
                f"sum_c w[c] * -{log_word} p[c]"
            )
            out.append(
                f"       = {fmt(1 - eps)} * {fmt(wy)} * {fmt(picked)} + {fmt(eps / C)} * "
                f"{fmt(smooth)} = {fmt(loss_i)} {unit}"
            )

    out.append("")
    if kind != "logits":
        out.append(
            "the gradient is with respect to the logits: log p, or any x with softmax(x) = p"
        )
    value = total * scale
    if reduction == "mean":
        what = "the summed weight of the targets" if w is not None else "the number of rows"
        out.append(
            f"mean over rows: sum of row losses / {what} = {fmt(row_loss.sum() * scale)} / "
            f"{fmt(denom) if w is not None else n} = {fmt(value)} {unit}"
        )
        out.append(
            "gradient of the mean: each row's gradient divided by "
            + (fmt(denom) if w is not None else str(n))
        )
    elif reduction == "sum":
        out.append(f"sum over rows = {fmt(value)} {unit}")
    call = [{"logits": "logits", "probs": "log(p)", "log-probs": "log_p"}[kind], "target"]
    if w is not None:
        call.append("weight=w")
    if eps:
        call.append(f"label_smoothing={eps:g}")
    if reduction != "mean":
        call.append(f"reduction={reduction!r}")
    args = ", ".join(call)
    conv = "" if base is None else f" / ln({base:g})"
    result = fmt(value) if reduction != "none" else _vec(row_loss * scale)
    out.append(f"crossentropy.cross_entropy({args}){conv} = {result}")

    warning = ""
    if warned and kind == "logits":
        i, y = 0, int(target[0])
        as_probs = -math.log(rows[0, y]) * scale if rows[0, y] > 0 else math.inf
        warning = (
            "warning: every row of --logits lies in [0, 1] and sums to 1, so these look like "
            "probabilities, not logits.\n"
            "  cross_entropy applies softmax itself; softmax of probabilities squashes them "
            f"towards uniform (row 0 becomes {_vec(p[0])}):\n"
            f"  with inputs in [0, 1] the loss can never fall below log(e + {C - 1}) - 1 = "
            f"{fmt((math.log(math.e + C - 1) - 1) * scale)}, even for a one-hot row, so "
            f"training stalls.\n"
            f"  If they are probabilities, use --probs: row 0's loss would be "
            f"-{log_name.split(' ')[0]} {rows[0, y]:g} = {fmt(as_probs)} {unit}."
        )
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
    target = _targets(args.target, rows.shape[0])
    weight = None if args.weight is None else np.array(args.weight, dtype=np.float64)
    report, warning = explain(
        kind,
        rows,
        target,
        weight=weight,
        label_smoothing=args.label_smoothing,
        reduction=args.reduction,
        base=args.base,
    )
    if warning:
        print(warning, file=sys.stderr)
    print(report)
    return 0
