"""``crossentropy eval``'s report: the metrics as a text table or as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from ._util import fmt, table

__all__ = ["json_safe", "report", "to_json"]


def json_safe(v: Any) -> Any:
    """``v`` with every infinite or NaN float replaced by ``None`` (JSON's ``null``)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def to_json(obj: dict[str, Any]) -> str:
    """``obj`` as indented JSON, with infinities and NaN as ``null``."""
    return json.dumps(json_safe(obj), indent=2)


def report(r: dict[str, Any], per_class: bool) -> str:
    """The metrics of ``r`` (``eval``'s result) as aligned text lines."""
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
