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
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import crossentropy as ce

from ._progress import Progress
from ._util import SUM_TOLERANCE, CLIError, UsageError, add_help_example
from .readers import Source, open_predictions, read_targets
from .report import report, to_json

__all__ = ["Metrics", "evaluate", "register"]

KINDS = ("logits", "probs", "log-probs")
# float64 elements per block (2 MiB, cache-friendly); a block's temporaries are a few
# times this, so memory stays under about 100 MiB whatever the file's size
BLOCK_ELEMENTS = 1 << 18

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
    source: Source,
    targets: np.ndarray,
    *,
    kind: str = "logits",
    top_k: int = 5,
    bins: int = 15,
    block_rows: int | None = None,
    progress: bool = False,
) -> tuple[Metrics, str]:
    """Stream ``source`` in blocks and accumulate the metrics; also return a warning ('' if none)."""
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


# -- command --------------------------------------------------------------------------


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
        print(to_json(out))
        return 0
    print(
        f"{args.predictions}: {r['rows']} rows x {r['classes']} classes of {args.kind} "
        f"({source.dtype}); labels from {args.targets}\n"
    )
    print(report(r, args.per_class))
    return 0
