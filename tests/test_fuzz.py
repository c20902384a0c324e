"""The fuzz suite: random calls on every path, against PyTorch in float64.

:mod:`tests.fuzz_driver` draws the calls (hypothesis: layouts, dtypes, target
values, ``ignore_index`` and every option) and checks each one on the kernels
and on the portable path.  It runs here in subprocess shards, so that a crash
of the interpreter is reported with the case that caused it and the command
that replays it.

Profiles (environment variables):

* default: one shard of 40 cases (seed 0), a few seconds;
* ``CROSSENTROPY_FUZZ=deep``: shards of 200 cases with consecutive seeds for
  ``CROSSENTROPY_FUZZ_SECONDS`` seconds (default 600), starting at
  ``CROSSENTROPY_FUZZ_SEED`` (default: from the clock, printed).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import pytest

from tests.support import run_python

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

PROFILE = os.environ.get("CROSSENTROPY_FUZZ", "")
DEEP = PROFILE == "deep"
QUICK_CASES = 40
DEEP_CASES = 200
SHARD_TIMEOUT_S = 900


@dataclass
class Shard:
    """What one subprocess of the driver reported."""

    seed: int
    returncode: int
    cases: int = 0  # cases with a result
    failures: list = field(default_factory=list)  # (case, problems)
    unanswered: dict | None = None  # the case running when the shard died
    finished: bool = False
    stderr: str = ""

    def report(self) -> list[str]:
        """One line per problem, each with the command that replays its case."""
        lines = []
        for case, problems in self.failures:
            lines.append(
                f"seed {self.seed}: {'; '.join(problems)[:2000]}\n  replay: {_replay(case)}"
            )
        if not self.finished:
            what = f"exit status {self.returncode} (-11: segmentation fault)"
            if self.unanswered is not None:
                lines.append(f"seed {self.seed}: {what} while running a case\n"
                             f"  replay: {_replay(self.unanswered)}")  # fmt: skip
            else:
                lines.append(f"seed {self.seed}: {what} outside any case\n{self.stderr[-3000:]}")
        return lines


def _replay(case: dict) -> str:
    return f"python -m tests.fuzz_driver --case '{json.dumps(case)}'"


def run_shard(seed: int, count: int, *extra: str) -> Shard:
    """Run the driver on ``count`` cases from ``seed`` and parse its JSON lines."""
    done = run_python(
        "-m", "tests.fuzz_driver", "--seed", str(seed), "--count", str(count), *extra,
        timeout=SHARD_TIMEOUT_S,
    )  # fmt: skip
    shard = Shard(seed, done.returncode, stderr=done.stderr)
    pending = None
    for line in done.stdout.splitlines():
        record = json.loads(line)
        if "case" in record:
            pending = record["case"]
        elif "result" in record:
            shard.cases += 1
            if record["result"]["status"] != "ok":
                shard.failures.append((pending, record["result"]["problems"]))
            pending = None
        elif "done" in record:
            shard.finished = done.returncode == 0
    shard.unanswered = pending
    return shard


def test_fuzz() -> None:
    """Every drawn case matches PyTorch (or raises what it should) on every path,
    and no case kills the interpreter."""
    if DEEP:
        budget = float(os.environ.get("CROSSENTROPY_FUZZ_SECONDS", "600"))
        seed = int(os.environ.get("CROSSENTROPY_FUZZ_SEED", str(int(time.time()) % 10**6)))
        count = DEEP_CASES
    else:
        budget, seed, count = 0.0, 0, QUICK_CASES
    start, shards = time.monotonic(), []
    while not shards or time.monotonic() - start < budget:
        shards.append(run_shard(seed + len(shards), count))
    problems = [line for shard in shards for line in shard.report()]
    total = sum(s.cases for s in shards)
    print(f"fuzz: {total} cases in {len(shards)} shards (seeds {seed}..{seed + len(shards) - 1}), "
          f"{time.monotonic() - start:.0f} s, {len(problems)} problems")  # fmt: skip
    assert not problems, "\n".join(problems)
    assert total == count * len(shards)


def test_a_crash_is_reported_with_its_case() -> None:
    """The runner itself: a shard that dies names the case it was running."""
    shard = run_shard(0, 1, "--crash")
    assert shard.returncode < 0 and not shard.finished
    assert shard.unanswered == {"crash": True}
    (line,) = shard.report()
    assert "segmentation fault" in line
    assert """replay: python -m tests.fuzz_driver --case '{"crash": true}'""" in line


def test_a_case_replays_from_its_json() -> None:
    """A failing case's replay command runs that case alone."""
    case = {
        "fn": "cross_entropy", "backend": "numpy", "mode": "grad", "dtype": "float32",
        "n_classes": 5, "batch": [4], "class_axis": 1, "layout": "f", "probs": False,
        "target_dtype": "uint64", "target_layout": "negative", "specials": [[1, "ignore"]],
        "ignore_index": 2**64 - 1, "weight": True, "reduction": "sum", "label_smoothing": 0.2,
        "z_loss": 0.01, "softcap": None, "values": "padding", "chunk_size": None, "seed": 3,
    }  # fmt: skip
    done = run_python("-m", "tests.fuzz_driver", "--case", json.dumps(case), timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"result": {"status": "ok", "problems": []}}
