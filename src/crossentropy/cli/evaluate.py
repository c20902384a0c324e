"""``crossentropy eval``: metrics of a classifier's saved outputs, in bounded memory.

The predictions are read in blocks of rows (see :mod:`crossentropy.cli.readers`),
so a file larger than memory evaluates in a few tens of megabytes.  Every
metric comes from :mod:`crossentropy.metrics`, whose accumulators keep float64
sums over rows, so the result does not depend on the block size: cross-entropy
(nats and bits), perplexity, accuracy, top-k accuracy, mean predictive entropy,
Brier score, expected calibration error with its reliability diagram, and with
``--per-class`` each true class's count, mean loss and accuracy.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

import crossentropy as ce
from crossentropy import metrics

from ._progress import Progress
from ._util import SUM_TOLERANCE, CLIError, UsageError, add_help_example, to_json
from .hidden import HIDDEN_BLOCK_ELEMENTS, check_labels, hidden_names, open_hidden
from .readers import Source, display_name, format_label, open_predictions, read_targets
from .report import plot_reliability, report

__all__ = ["evaluate", "register", "result"]

KINDS = ("logits", "probs", "log-probs")
DEFAULT_TOP_K = 5
# float64 elements per block (2 MiB, cache-friendly); a block's temporaries are a few
# times this, so memory stays under about 100 MiB whatever the file's size
BLOCK_ELEMENTS = 1 << 18

_EXAMPLES = """\
  crossentropy eval logits.npy labels.npy
  crossentropy eval probs.csv labels.csv --from probs --per-class
  crossentropy eval outputs.npz:logits outputs.npz:labels --top-k 3 --json
  python predict.py | crossentropy eval - labels.npy        # .npy or text on standard input
  crossentropy eval crossentropy-demo/test_logits_mlp_cross-entropy.npy \\
      crossentropy-demo/test_labels.npy --reliability --plot reliability.png
  crossentropy eval --hidden hidden.npy --head lm_head.npy --labels next_tokens.npy \\
      --ignore-index -100
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate saved predictions: cross-entropy, accuracy, calibration",
        **add_help_example(
            "Evaluate a classifier's saved outputs against integer labels: cross-entropy\n"
            "(nats and bits), perplexity, accuracy, top-k accuracy, mean predictive\n"
            "entropy, Brier score, expected calibration error, and per-class loss,\n"
            "all from crossentropy.metrics.  PREDICTIONS is a (rows, classes) matrix in\n"
            ".npy (memory-mapped), .npz (NAME.npz:KEY picks an array), .csv or\n"
            "whitespace .txt, or '-' for standard input; TARGETS holds one class index\n"
            "per row.  The file is read in blocks of rows, so its size is not limited\n"
            "by memory.  A language model can be evaluated from its hidden states\n"
            "instead: --hidden H (tokens, D), --head W (vocabulary, D), --labels y and\n"
            "optionally --bias b; the logits H @ W.T + b are made a block at a time.",
            _EXAMPLES,
        ),
    )
    p.add_argument(
        "predictions", metavar="PREDICTIONS", nargs="?", help="(rows, classes) outputs, or -"
    )
    p.add_argument(
        "targets", metavar="TARGETS", nargs="?", help="(rows,) integer class labels, or -"
    )
    p.add_argument("--hidden", metavar="H", help="(tokens, D) hidden states, instead of PREDICTIONS")
    p.add_argument("--head", metavar="W", help="with --hidden: the (vocabulary, D) output layer")
    p.add_argument("--bias", metavar="B", help="with --hidden: the (vocabulary,) output bias")
    p.add_argument("--labels", metavar="Y", help="with --hidden: the (tokens,) labels, for TARGETS")
    p.add_argument(
        "--from",
        dest="kind",
        choices=KINDS,
        default="logits",
        help="what PREDICTIONS holds (%(default)s)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="K",
        help=f"for top-k accuracy, at most the number of classes ({DEFAULT_TOP_K}, or the "
        "number of classes if fewer)",
    )
    p.add_argument(
        "--ignore-index",
        type=int,
        default=None,
        metavar="N",
        help="leave out the rows whose label is N (padding, e.g. -100) from every metric",
    )
    p.add_argument("--bins", type=int, default=15, help="confidence bins of the ECE (%(default)s)")
    p.add_argument("--per-class", action="store_true", help="also print each class's loss")
    p.add_argument(
        "--reliability",
        action="store_true",
        help="also print each confidence bin's rows, confidence and accuracy",
    )
    p.add_argument(
        "--plot", type=Path, metavar="PNG", help="draw the reliability diagram into this file"
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--block-rows", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=_run)


@dataclass
class Accumulators:
    """The metrics ``eval`` reports, each a :mod:`crossentropy.metrics` accumulator."""

    log_loss: metrics.LogLoss
    perplexity: metrics.Perplexity
    accuracy: metrics.Accuracy
    top_k: metrics.TopKAccuracy
    entropy: metrics.MeanEntropy
    brier: metrics.BrierScore
    ece: metrics.ExpectedCalibrationError
    per_class: metrics.PerClass

    @classmethod
    def new(cls, top_k: int, bins: int) -> Accumulators:
        return cls(
            metrics.LogLoss(),
            metrics.Perplexity(),
            metrics.Accuracy(),
            metrics.TopKAccuracy(top_k),
            metrics.MeanEntropy(),
            metrics.BrierScore(),
            metrics.ExpectedCalibrationError(bins),
            metrics.PerClass(),
        )

    def add(self, batch: metrics.Predictions) -> None:
        for f in fields(self):
            getattr(self, f.name).add(batch)


def _check_shapes(
    source: Source, targets: np.ndarray, top_k: int, ignore_index: int | None, ignored: np.ndarray
) -> None:
    n, C = source.n_rows, source.n_classes
    if n == 0 or C == 0:
        raise CLIError(f"PREDICTIONS: {display_name(source.path)} is empty (shape ({n}, {C}))")
    if top_k > C:
        raise UsageError(
            f"--top-k {top_k} is larger than the number of classes ({C}) of PREDICTIONS"
        )
    if len(targets) != n:
        raise CLIError(
            f"shape mismatch: PREDICTIONS has {n} rows ({n} x {C}) but TARGETS has "
            f"{len(targets)} labels; they must have one label per row"
        )
    bad = ((targets < 0) | (targets >= C)) & ~ignored
    if bad.any():
        i = int(np.argmax(bad))
        also = "" if ignore_index is None else f" or --ignore-index {ignore_index}"
        raise CLIError(
            f"{int(bad.sum())} label(s) out of range for {C} classes (valid: 0..{C - 1}{also}); "
            f"first: {format_label(targets[i])} at row {i}"
        )
    if ignored.all():
        raise CLIError(
            f"every one of the {n} labels is --ignore-index {ignore_index}: no row to evaluate"
        )


def _ignored(targets: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """The rows whose label is ``ignore_index`` (none if it is ``None``), compared
    exactly whatever the labels' integer dtype."""
    if ignore_index is None:
        return np.zeros(len(targets), dtype=bool)
    info = np.iinfo(targets.dtype)
    if not info.min <= ignore_index <= info.max:
        return np.zeros(len(targets), dtype=bool)  # no label can equal it
    return targets == targets.dtype.type(ignore_index)


# --from on the command line: the metrics' from_
_FROM: dict[str, metrics.PredictionKind] = {
    "logits": "logits",
    "probs": "probs",
    "log-probs": "log_probs",
}

_LOOKS_LIKE_PROBABILITIES = (
    "warning: the first rows of PREDICTIONS lie in [0, 1] and sum to 1: they look like "
    "probabilities, evaluated here as logits (softmax applied again, which flattens them); "
    "pass --from probs if they are probabilities"
)


def evaluate(
    source: Source,
    targets: np.ndarray,
    *,
    kind: str = "logits",
    top_k: int = DEFAULT_TOP_K,
    bins: int = 15,
    block_rows: int | None = None,
    progress: bool = False,
    ignore_index: int | None = None,
) -> tuple[Accumulators, str]:
    """Stream ``source`` in blocks into the accumulators; also return a warning ('' if none).
    Rows whose label is ``ignore_index`` are left out of every metric."""
    ignored = _ignored(targets, ignore_index)
    _check_shapes(source, targets, top_k, ignore_index, ignored)
    scored = ~ignored
    targets = np.where(scored, targets, 0).astype(np.int64)  # in range: the cast is exact
    n, C = source.n_rows, source.n_classes
    rows = block_rows or max(1, BLOCK_ELEMENTS // C)
    acc = Accumulators.new(top_k, bins)
    bad: dict[str, list[int]] = {}  # reason -> [count, first row]
    warning, start = "", 0
    from_ = _FROM[kind]
    with Progress(n, "eval", unit="rows", enabled=progress) as bar:
        for block in source.blocks(rows):
            x = np.asarray(block, dtype=np.float64)
            if start == 0 and kind == "logits" and ce.looks_like_probabilities(x, axis=1):
                warning = _LOOKS_LIKE_PROBABILITIES
            y = targets[start : start + len(x)]
            where = None if ignore_index is None else scored[start : start + len(x)]
            batch = metrics.Predictions(
                x, y, from_=from_, where=where, sum_tolerance=SUM_TOLERANCE, invalid="skip"
            )
            for reason, mask in batch.invalid.items():
                if mask.any():
                    bad.setdefault(reason, [0, start + int(np.argmax(mask))])[0] += int(mask.sum())
            acc.add(batch)
            start += len(x)
            bar.update(len(x))
    if bad:
        parts = [f"{c} row(s) with {reason} (first: row {i})" for reason, (c, i) in bad.items()]
        hint = "" if kind == "logits" else "; if they are logits, pass --from logits"
        raise CLIError(f"PREDICTIONS ({kind}) has {'; '.join(parts)}{hint}")
    return acc, warning


def result(acc: Accumulators, n_classes: int, ignored: int = 0) -> dict[str, Any]:
    """The metrics of the accumulators as a JSON-ready dictionary (``ignored``: the
    rows left out by ``--ignore-index``)."""
    nats, entropy = acc.log_loss.compute(), acc.entropy.compute()
    per_class = acc.per_class.compute()
    reliability = acc.ece.reliability()
    return {
        "rows": acc.log_loss.rows,
        "ignored_rows": ignored,
        "classes": n_classes,
        "cross_entropy_nats": nats,
        "cross_entropy_bits": nats / math.log(2),
        "perplexity": acc.perplexity.compute(),
        "accuracy": acc.accuracy.compute(),
        "correct": acc.accuracy.correct,
        "top_k": acc.top_k.k,
        "top_k_accuracy": acc.top_k.compute(),
        "mean_entropy_nats": entropy,
        "mean_entropy_bits": entropy / math.log(2),
        "brier_score": acc.brier.compute(),
        "ece": reliability.ece,
        "ece_bins": acc.ece.bins,
        "per_class": [
            {
                "class": c,
                "count": int(per_class["count"][c]),
                "cross_entropy_nats": float(per_class["log_loss"][c]),
                "accuracy": float(per_class["accuracy"][c]),
            }
            for c in range(n_classes)
        ],
        "reliability": [
            {
                "bin": [float(reliability.edges[b]), float(reliability.edges[b + 1])],
                "count": int(reliability.count[b]),
                "confidence": float(reliability.confidence[b]),
                "accuracy": float(reliability.accuracy[b]),
            }
            for b in range(acc.ece.bins)
        ],
    }


def _check_options(args: argparse.Namespace) -> None:
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.bins < 1:
        raise UsageError(f"--bins must be at least 1, got {args.bins}")
    if args.block_rows is not None and args.block_rows < 1:
        raise UsageError(f"--block-rows must be at least 1, got {args.block_rows}")


def _inputs(args: argparse.Namespace) -> tuple[Source, np.ndarray, int | None]:
    """``(predictions, targets, block rows)``: a predictions file, or the logits of
    ``--hidden`` states through ``--head``; ``UsageError`` for a mixed command line."""
    if args.hidden is None:
        if args.head is not None or args.bias is not None or args.labels is not None:
            raise UsageError("--head, --bias and --labels go with --hidden")
        if args.predictions is None or args.targets is None:
            raise UsageError("PREDICTIONS and TARGETS are required (or --hidden, --head, --labels)")
        targets = read_targets(args.targets)
        return open_predictions(args.predictions), targets, args.block_rows
    if args.predictions is not None or args.targets is not None:
        raise UsageError("--hidden replaces PREDICTIONS and TARGETS: give --labels instead")
    if args.head is None or args.labels is None:
        raise UsageError("--hidden needs --head (the output layer) and --labels")
    if args.kind != "logits":
        raise UsageError(f"--hidden makes logits: --from {args.kind} does not apply")
    with hidden_names():
        targets = read_targets(args.labels)
        source = open_hidden(args.hidden, args.head, args.bias)
        try:
            check_labels(source, targets)
        except CLIError:
            source.close()
            raise
    rows = args.block_rows or max(1, HIDDEN_BLOCK_ELEMENTS // source.n_classes)
    return source, targets, rows


def _names(args: argparse.Namespace) -> dict[str, Any]:
    """What was evaluated, for the report and the JSON."""
    if args.hidden is None:
        return {"predictions": args.predictions, "targets": args.targets, "from": args.kind}
    return {"hidden": args.hidden, "head": args.head, "bias": args.bias, "targets": args.labels,
            "from": "logits"}  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    _check_options(args)
    source, targets, block_rows = _inputs(args)
    top_k = args.top_k if args.top_k is not None else min(DEFAULT_TOP_K, source.n_classes)
    with hidden_names(args.hidden is not None):  # the messages name --hidden's inputs
        try:
            acc, warning = evaluate(
                source,
                targets,
                kind=args.kind,
                top_k=top_k,
                bins=args.bins,
                block_rows=block_rows,
                progress=not (args.quiet or args.json),
                ignore_index=args.ignore_index,
            )
        finally:
            source.close()
    if warning and args.hidden is None:  # its advice, --from probs, is not for a head's logits
        print(warning, file=sys.stderr)
    r = result(acc, source.n_classes, int(_ignored(targets, args.ignore_index).sum()))
    if args.plot is not None:
        plot_reliability(acc.ece.reliability(), args.plot, args.predictions or args.hidden)
    if args.json:
        out = {**_names(args), **r}
        if args.plot is not None:
            out["plot"] = str(args.plot)
        wanted_keys = (
            ("per_class", args.per_class),
            ("reliability", args.reliability),
            ("ignored_rows", args.ignore_index is not None),
        )
        for key, wanted in wanted_keys:
            if not wanted:
                del out[key]
        print(to_json(out))
        return 0
    if args.hidden is None:
        what = f"{args.predictions}: {r['rows']} rows x {r['classes']} classes of {args.kind} "
        what += f"({source.dtype}); labels from {args.targets}\n"
    else:
        what = f"{args.hidden}: {r['rows']} tokens, logits over {r['classes']} classes through "
        what += f"{args.head}{'' if args.bias is None else ' + ' + args.bias}; labels from "
        what += f"{args.labels}\n"
    if r["ignored_rows"]:
        what += f"{r['ignored_rows']} rows with label {args.ignore_index} left out "
        what += "(--ignore-index)\n"
    print(what)
    print(report(r, per_class=args.per_class, reliability=args.reliability))
    if args.plot is not None:
        print(f"\nwrote the reliability diagram to {args.plot}")
    return 0
