"""``crossentropy eval``'s report: the metrics as text, and the reliability diagram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crossentropy import metrics

from ._util import CLIError, fmt, need, table

__all__ = ["plot_reliability", "report"]


def report(r: dict[str, Any], *, per_class: bool = False, reliability: bool = False) -> str:
    """The metrics of ``r`` (``eval``'s result) as aligned text lines and tables."""
    lines = [
        f"{'cross-entropy':<18}{fmt(r['cross_entropy_nats']):>10} nats  "
        f"({fmt(r['cross_entropy_bits'])} bits)",
        f"{'perplexity':<18}{fmt(r['perplexity']):>10}",
        f"{'accuracy':<18}{100 * r['accuracy']:>9.2f}%  ({r['correct']} / {r['rows']})",
        f"{'top-' + str(r['top_k']) + ' accuracy':<18}{100 * r['top_k_accuracy']:>9.2f}%"
        + ("  (k = classes)" if r["top_k"] >= r["classes"] else ""),
        f"{'mean entropy':<18}{fmt(r['mean_entropy_nats']):>10} nats  "
        f"({fmt(r['mean_entropy_bits'])} bits)",
        f"{'Brier score':<18}{fmt(r['brier_score']):>10}",
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
    if reliability:
        lines += ["", _reliability_table(r["reliability"])]
    return "\n".join(lines)


def _reliability_table(bins: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"({b['bin'][0]:.3f}, {b['bin'][1]:.3f}]",
            str(b["count"]),
            fmt(b["confidence"]) if b["count"] else "-",
            f"{100 * b['accuracy']:.2f}%" if b["count"] else "-",
            fmt(b["accuracy"] - b["confidence"]) if b["count"] else "-",
        ]
        for b in bins
    ]
    header = ["confidence bin", "rows", "mean confidence", "accuracy", "accuracy - confidence"]
    return table(header, rows, align="l")


def plot_reliability(r: metrics.Reliability, path: Path, name: str) -> None:
    """The reliability diagram of ``r`` as a PNG (Agg, no display): accuracy against
    confidence per bin above, the rows per bin below."""
    need("matplotlib", "--plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax_n = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    centers, width = (r.edges[:-1] + r.edges[1:]) / 2, np.diff(r.edges)
    filled = r.count > 0
    c, acc, conf, w = centers[filled], r.accuracy[filled], r.confidence[filled], width[filled]
    ax.bar(c, acc, width=w * 0.95, color="tab:blue", alpha=0.8, label="accuracy")
    # the gap: hatched from the accuracy to the mean confidence, above or below it
    ax.bar(c, conf - acc, bottom=acc, width=w * 0.95, facecolor="none", edgecolor="tab:red",
           hatch="///", lw=0.8, label="gap to the mean confidence")  # fmt: skip
    ax.scatter(c, conf, marker="_", s=250, color="tab:red", zorder=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    fig.suptitle(f"Reliability diagram of {Path(name).name}\nECE = {r.ece:.4f} "
                 f"({len(r.count)} bins, {int(r.count.sum())} rows)", fontsize=10)  # fmt: skip
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.grid(True, alpha=0.3)
    ax_n.bar(centers, r.count, width=width * 0.95, color="gray", edgecolor="black", lw=0.5)
    ax_n.set(xlabel="confidence (highest probability)", ylabel="rows")
    ax_n.grid(True, alpha=0.3)
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise CLIError(f"--plot: cannot write {str(path)!r}: {e}") from None
