"""``crossentropy entropy``, ``kl`` and ``ce``: information theory on typed distributions.

``entropy P [/ P2 ...]`` prints :math:`H(P)`; ``kl P -- Q`` prints
:math:`D_{KL}(P \\| Q)` and ``ce P -- Q`` the cross-entropy :math:`H(P, Q)`, each
with the identity :math:`H(P, Q) = H(P) + D_{KL}(P \\| Q)` spelled out.  The
numbers come from :mod:`crossentropy.info`.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np

import crossentropy as ce
from crossentropy import info

from ._util import (
    SUM_TOLERANCE,
    CLIError,
    UsageError,
    add_help_example,
    check_base,
    fmt,
    to_json,
)
from .readers import parse_rows

__all__ = ["check_distribution", "register"]

_ENTROPY_EXAMPLES = """\
  crossentropy entropy 0.1 0.1 0.1 0.7 --base 2           # 1.3568 bits
  crossentropy entropy 0.25 0.25 0.25 0.25 / 0.001 0.001 0.001 0.999 --base 2
  crossentropy entropy 3 1 --normalize                     # [0.75, 0.25]
  echo 0.2,0.8 | crossentropy entropy - --json            # from standard input
"""
_KL_EXAMPLES = """\
  crossentropy kl 0.5 0.5 -- 0.9 0.1                       # 0.5108 nats
  crossentropy kl 1 0 0 0 0 -- 0.4 0.3 0.05 0.05 0.2 --base 2
"""
_CE_EXAMPLES = """\
  crossentropy ce 1 0 0 0 0 -- 0.4 0.3 0.05 0.05 0.2        # -log 0.4 = 0.9163 nats
  crossentropy ce 0 0 1 -- 0.1 0.1 0.8                      # 0.2231 nats
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", type=float, default=None, help="2 for bits (default: e, nats)")
    p.add_argument(
        "--normalize",
        action="store_true",
        help="divide each vector by its sum instead of requiring it to sum to 1",
    )
    p.add_argument("--digits", type=int, default=4, help="decimals printed (%(default)s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def register(sub: Any) -> None:
    e = sub.add_parser(
        "entropy",
        help="Shannon entropy H(P) of a distribution",
        **add_help_example(
            "Shannon entropy H(P) = -sum_i P_i log P_i of one or more probability vectors\n"
            "(separated by '/'), in nats, or in bits with --base 2.  Entries must be >= 0\n"
            f"and each vector must sum to 1 (within {SUM_TOLERANCE}); --normalize divides by the sum.",
            _ENTROPY_EXAMPLES,
        ),
    )
    e.add_argument(
        "p", nargs="+", metavar="P", help="probabilities ('/' starts another vector), a file or -"
    )
    _common(e)
    e.set_defaults(run=_run_entropy)

    for name, helptext, examples in (
        ("kl", "Kullback-Leibler divergence KL(P || Q)", _KL_EXAMPLES),
        ("ce", "cross-entropy H(P, Q) between two distributions", _CE_EXAMPLES),
    ):
        s = sub.add_parser(
            name,
            help=helptext,
            **add_help_example(
                f"{helptext[0].upper() + helptext[1:]}, with H(P, Q) = H(P) + KL(P || Q)\n"
                "spelled out.  P (the true distribution) and Q (the model's) are\n"
                "separated by '--' (or '/').  Entries must be >= 0 and each vector must\n"
                f"sum to 1 (within {SUM_TOLERANCE}); --normalize divides by the sum.",
                examples,
            ),
        )
        s.add_argument("vectors", nargs="+", metavar="P -- Q", help="two probability vectors")
        _common(s)
        s.set_defaults(run=_run_pair, which=name)


def check_distribution(v: np.ndarray, name: str, normalize: bool) -> tuple[np.ndarray, str]:
    """``v`` as a probability vector, or a :class:`CLIError` saying why it is not one.

    Returns the vector (divided by its sum if ``normalize``) and a note for
    stderr ('' if none) when it is accepted although its sum is not exactly 1.
    """
    if not np.all(np.isfinite(v)):
        i = int(np.argmax(~np.isfinite(v)))
        raise CLIError(f"{name} has a non-finite entry {float(v[i]):g} at index {i}")
    if (v < 0).any():
        i = int(np.argmax(v < 0))
        raise CLIError(
            f"{name} has a negative entry {v[i]:g} at index {i}; probabilities must be >= 0"
        )
    if normalize:
        top = float(v.max())
        if top == 0:
            raise CLIError(f"{name} sums to 0 and cannot be normalised")
        scaled = v / top  # in [0, 1] first, so that the sum of [1e308, 1e308] does not overflow
        return scaled / scaled.sum(), ""
    total = _sum(v)
    if abs(total - 1) > SUM_TOLERANCE:
        raise CLIError(
            f"{name} sums to {total:.6g}, not 1; pass --normalize to divide it by its sum"
        )
    if (v > 1).any():  # only possible within the tolerance, e.g. [1.005]
        i = int(np.argmax(v > 1))
        raise CLIError(f"{name} has an entry {v[i]:g} > 1 at index {i}")
    note = ""
    if abs(total - 1) > 1e-9:
        note = f"note: {name} sums to {total:.6g}; used as given (--normalize divides by the sum)"
    return v, note


def _sum(v: np.ndarray) -> float:
    """The sum of ``v`` (entries >= 0), ``inf`` past the largest float without a warning."""
    top = float(v.max())
    return top * float((v / top).sum()) if top > 0 and math.isfinite(top) else float(v.sum())


def _unit(base: float | None) -> str:
    if base is None:
        return "nats"
    if base == 2:
        return "bits"
    return "dits" if base == 10 else f"(log base {base:g})"


def _check_options(args: argparse.Namespace) -> None:
    check_base(args.base)
    if not 0 <= args.digits <= 17:
        raise UsageError(f"--digits must be between 0 and 17, got {args.digits}")


def _run_entropy(args: argparse.Namespace) -> int:
    _check_options(args)
    rows = parse_rows(args.p, "P")
    unit, d = _unit(args.base), args.digits
    results = []
    for i, row in enumerate(rows):
        name = "P" if len(rows) == 1 else f"P{i + 1}"
        p, note = check_distribution(row, name, args.normalize)
        if note:
            print(note, file=sys.stderr)
        results.append({"name": name, "p": p, "entropy": float(ce.entropy(p, base=args.base))})
    if args.json:
        print(to_json({"unit": unit, "base": args.base, "distributions": results}))
        return 0
    for r in results:
        label = f"H({r['name']})" if len(rows) == 1 else f"H({r['name']}) for {_vec(r['p'], d)}"
        print(f"{label} = {fmt(r['entropy'], d)} {unit}")
    return 0


def _run_pair(args: argparse.Namespace) -> int:
    _check_options(args)
    groups = _split(args.vectors)
    if len(groups) != 2:
        raise UsageError(
            f"expected two vectors separated by '--' (P -- Q), got {len(groups)}: "
            f"e.g. crossentropy {args.which} 0.5 0.5 -- 0.9 0.1"
        )
    p_rows, q_rows = (parse_rows(g, n) for g, n in zip(groups, "PQ"))
    if p_rows.shape[0] != 1 or q_rows.shape[0] != 1:
        raise UsageError("P and Q must be one vector each")
    p_row, q_row = p_rows[0], q_rows[0]
    if p_row.shape != q_row.shape:
        raise CLIError(
            f"P has {p_row.size} entries but Q has {q_row.size}; both must cover the same outcomes"
        )
    p, note_p = check_distribution(p_row, "P", args.normalize)
    q, note_q = check_distribution(q_row, "Q", args.normalize)
    for note in (note_p, note_q):
        if note:
            print(note, file=sys.stderr)
    b, unit, d = args.base, _unit(args.base), args.digits
    h_p = float(info.entropy(p, base=b))
    h_pq = float(info.cross_entropy(p, q, base=b))
    kl = float(info.kl_divergence(p, q, base=b))
    if args.json:
        out = {"unit": unit, "base": b, "p": p, "q": q, "entropy_p": h_p}
        print(to_json({**out, "cross_entropy": h_pq, "kl_divergence": kl}))
    elif args.which == "kl":
        print(f"KL(P || Q) = {fmt(kl, d)} {unit}")
        print(f"  = H(P, Q) - H(P) = {fmt(h_pq, d)} - {fmt(h_p, d)}")
    else:
        print(f"H(P, Q) = {fmt(h_pq, d)} {unit}")
        print(f"  = H(P) + KL(P || Q) = {fmt(h_p, d)} + {fmt(kl, d)}")
    if math.isinf(h_pq):
        i = int(np.argmax((q == 0) & (p > 0)))
        print(
            f"  (infinite: Q gives probability 0 to outcome {i}, which P gives {p[i]:g})",
            file=sys.stderr,
        )
    return 0


def _split(tokens: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for t in tokens:
        if t == "/":
            groups.append([])
        else:
            groups[-1].append(t)
    return groups


def _vec(v: np.ndarray, digits: int) -> str:
    return "[" + ", ".join(f"{x:.{digits}g}" for x in v) + "]"
