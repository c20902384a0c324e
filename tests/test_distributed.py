"""``crossentropy.distributed`` across real processes, against single-process float64 PyTorch.

The vocabulary-parallel losses only make sense with several processes, so the
tests start them: one spawn of 2 processes and one of 4 (gloo over loopback,
uneven shards ``[5, 11]`` and ``[3, 7, 1, 12]``), each running the whole list
of cases below once.  Every rank records, per case,
either its loss and gradients or the ``(exception type, message)`` it raised;
the tests then compare each rank's record with the oracle, computed here in
one process: ``F.cross_entropy`` on the whole float64 logits (plus the
explicit soft-capping and z-loss terms, and Megatron's smoothing written as
probability targets), gradients by autograd.

A spawn that does not finish within ``DEADLINE_S`` is killed and its tests
fail with the case each rank was running.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import socket
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from crossentropy.distributed import (
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)
from tests.support import assert_close

SIZES = {2: (5, 11), 4: (3, 7, 1, 12)}  # every rank's shard width: uneven on purpose
WORLDS = sorted(SIZES)
DEADLINE_S = 240  # for a whole spawn (start-up, every case, shutdown)
GROUP_TIMEOUT = datetime.timedelta(seconds=30)  # any collective left waiting fails after this
PROBE_TIMEOUT = datetime.timedelta(seconds=2)  # the groups of the cases that may hang
N_ROWS, EXTRA, N_FEATURES = 8, 3, 5  # batch, extra axis (K-dim / sequence), D
PARTITION_V = 13  # the vocabulary the partition cases split in different ways
# (rtol, atol as a fraction of the largest expected magnitude); the errors seen are about
# 3e-14, 2.5e-7 and 2.5e-3 (1.2e-2 for the linear one, whose logits are rounded to bfloat16)
TOLERANCE = {"float64": (1e-10, 1e-12), "float32": (1e-5, 1e-5), "bfloat16": (1e-2, 1e-2)}
LINEAR_TOLERANCE = {**TOLERANCE, "bfloat16": (3e-2, 3e-2)}


# -- the cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call of a vocab-parallel loss, made the same way on every rank."""

    id: str
    fn: str  # "ce" (vocab_parallel_cross_entropy) or "linear"
    options: tuple = ()  # keyword arguments as they are, as (name, value) pairs
    shape: str = "2d"  # ce: 2d (N, C_r), kdim (N, C_r, d1), last (N, T, C_r) axis=-1, 1d (C_r,)
    # linear: 2d input (N, D) or 3d (B, T, D)
    dtype: str = "float64"
    ignore: str = "some"  # none, some or all of the targets are ignore_index
    weight: bool = False  # class weights
    bias: bool = True  # linear_bias (linear only)
    shard_sizes: bool = False  # pass shard_sizes=
    validate: bool = True
    groups: bool = False  # the loss runs on group= (ranks split by parity), not the world
    partition: int | None = None  # split PARTITION_V classes at random (seed) over the ranks

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    @property
    def reduction(self) -> str:
        return self.kwargs.get("reduction", "mean")


def _opts(**kwargs: Any) -> tuple:
    return tuple(sorted(kwargs.items()))


# option sets crossed with every reduction, for both functions
OPTION_SETS = {
    "plain": ({}, False),
    "weight": ({}, True),
    "smooth": ({"label_smoothing": 0.2}, False),
    "smooth-weight": ({"label_smoothing": 0.15}, True),
    "megatron": ({"label_smoothing": 0.2, "label_smoothing_mode": "megatron"}, False),
    "megatron-weight": ({"label_smoothing": 0.1, "label_smoothing_mode": "megatron"}, True),
    "zloss": ({"z_loss": 0.01}, False),
    "softcap": ({"softcap": 2.5}, False),
    "all": (
        {
            "label_smoothing": 0.1,
            "label_smoothing_mode": "megatron",
            "z_loss": 0.02,
            "softcap": 4.0,
        },
        True,
    ),
}
REDUCTIONS = ("mean", "sum", "none")
EVERYTHING = {"label_smoothing": 0.1, "z_loss": 0.01, "softcap": 3.0}


def _option_cases(fn: str) -> list[Case]:
    return [
        Case(f"{fn}-{name}-{red}", fn, _opts(reduction=red, **opts), weight=weight)
        for name, (opts, weight) in OPTION_SETS.items()
        for red in REDUCTIONS
    ]


CE_CASES = [
    *_option_cases("ce"),
    Case("ce-no-ignored", "ce", ignore="none"),
    Case(
        "ce-ignore-index-is-a-class", "ce", _opts(ignore_index=3, label_smoothing=0.1), weight=True
    ),
    *[
        Case(
            f"ce-all-ignored-{red}",
            "ce",
            _opts(reduction=red, **EVERYTHING),
            ignore="all",
            weight=True,
        )
        for red in REDUCTIONS
    ],
    Case("ce-kdim-mean", "ce", _opts(**EVERYTHING), shape="kdim", weight=True),
    Case("ce-kdim-none", "ce", _opts(reduction="none", **EVERYTHING), shape="kdim"),
    Case("ce-axis-last-mean", "ce", _opts(**EVERYTHING), shape="last", weight=True),
    Case("ce-axis-last-sum", "ce", _opts(reduction="sum", label_smoothing=0.2), shape="last"),
    Case("ce-axis-last-none", "ce", _opts(reduction="none", z_loss=0.05), shape="last"),
    Case("ce-unbatched", "ce", _opts(label_smoothing=0.1, z_loss=0.01), shape="1d", ignore="none"),
    Case("ce-float32", "ce", dtype="float32"),
    Case("ce-float32-everything", "ce", _opts(**EVERYTHING), dtype="float32", weight=True),
    Case("ce-bfloat16", "ce", dtype="bfloat16"),
    Case("ce-bfloat16-everything", "ce", _opts(**EVERYTHING), dtype="bfloat16", weight=True),
    Case("ce-bfloat16-kdim-none", "ce", _opts(reduction="none"), shape="kdim", dtype="bfloat16"),
    Case("ce-shard-sizes", "ce", _opts(label_smoothing=0.1), shard_sizes=True, weight=True),
    Case("ce-no-validate", "ce", _opts(z_loss=0.01), validate=False),
    Case("ce-no-validate-shard-sizes", "ce", _opts(**EVERYTHING), shard_sizes=True, validate=False),
    Case("ce-group", "ce", _opts(label_smoothing=0.1, z_loss=0.01), groups=True, weight=True),
    Case("ce-normalizer", "ce", _opts(normalizer=7.5, **EVERYTHING), weight=True),
    Case("ce-normalizer-kdim", "ce", _opts(normalizer=40, z_loss=0.01), shape="kdim"),
    *[
        Case(f"ce-partition-{k}", "ce", _opts(**EVERYTHING), weight=True, partition=k)
        for k in range(4)
    ],
]

LINEAR_CASES = [
    *_option_cases("linear"),
    Case("linear-no-bias", "linear", _opts(label_smoothing=0.1), bias=False),
    Case("linear-no-ignored", "linear", ignore="none"),
    Case("linear-ignore-index-is-a-class", "linear", _opts(ignore_index=3, z_loss=0.01)),
    *[
        Case(
            f"linear-all-ignored-{red}", "linear", _opts(reduction=red, **EVERYTHING), ignore="all"
        )
        for red in REDUCTIONS
    ],
    Case("linear-3d-mean", "linear", _opts(**EVERYTHING), shape="3d", weight=True),
    Case("linear-3d-none", "linear", _opts(reduction="none", **EVERYTHING), shape="3d"),
    Case("linear-chunk-rows", "linear", _opts(chunk_size=3, **EVERYTHING)),
    Case("linear-chunk-blocks", "linear", _opts(chunk_size=(4, 2), **EVERYTHING), weight=True),
    Case("linear-chunk-blocks-none", "linear", _opts(chunk_size=(2, 3), reduction="none")),
    Case("linear-float32", "linear", _opts(**EVERYTHING), dtype="float32"),
    Case("linear-bfloat16", "linear", dtype="bfloat16"),
    Case("linear-bfloat16-everything", "linear", _opts(**EVERYTHING), dtype="bfloat16"),
    Case("linear-shard-sizes", "linear", _opts(z_loss=0.01), shard_sizes=True),
    Case("linear-no-validate", "linear", _opts(label_smoothing=0.1), validate=False),
    Case("linear-no-validate-shard-sizes", "linear", shard_sizes=True, validate=False),
    Case("linear-group", "linear", _opts(label_smoothing=0.1), groups=True, weight=True),
    Case("linear-normalizer", "linear", _opts(normalizer=7.5, **EVERYTHING), weight=True),
    Case("linear-normalizer-3d", "linear", _opts(normalizer=20, chunk_size=3), shape="3d"),
    *[
        Case(f"linear-partition-{k}", "linear", _opts(**EVERYTHING), weight=True, partition=k)
        for k in range(3)
    ],
]

CASES = {c.id: c for c in CE_CASES + LINEAR_CASES}
assert len(CASES) == len(CE_CASES) + len(LINEAR_CASES), "duplicate case ids"


def _sizes(case: Case, world: int) -> tuple[int, ...]:
    if case.partition is None:
        return SIZES[world]
    rng = np.random.default_rng([case.partition, world])
    cuts = sorted(rng.choice(np.arange(1, PARTITION_V), size=world - 1, replace=False).tolist())
    return tuple(int(b - a) for a, b in zip([0, *cuts], [*cuts, PARTITION_V]))


def _members(case: Case, world: int, rank: int) -> tuple[int, ...]:
    """The ranks that share the vocabulary with ``rank`` in ``case``."""
    if not case.groups:
        return tuple(range(world))
    return tuple(r for r in range(world) if r % 2 == rank % 2)


def _placement(case: Case, world: int, rank: int) -> tuple[tuple[int, ...], int]:
    """``(the shard widths of rank's group, rank's index in it)``."""
    members = _members(case, world, rank)
    sizes = _sizes(case, world)
    return tuple(sizes[r] for r in members), members.index(rank)


def _data(case: Case, sizes: tuple[int, ...]) -> dict:
    """The whole problem in float64 NumPy: the same on every rank and in the parent."""
    # the partition cases share one problem, however they split it
    key = f"partition-{case.fn}" if case.partition is not None else f"{case.id}-{sizes}"
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    n_classes = sum(sizes)
    d: dict = {}
    if case.fn == "ce":
        batch = {"2d": (N_ROWS,), "kdim": (N_ROWS, EXTRA), "last": (N_ROWS, EXTRA), "1d": ()}
        batch = batch[case.shape]
        x = rng.normal(scale=3.0, size=batch + (n_classes,))  # class axis last for now
        if batch:
            x[0] += 300.0  # one row far beyond exp's range in every shard
        if case.shape in ("2d", "kdim"):
            x = np.moveaxis(x, -1, 1)
        d["logits"] = x
    else:
        batch = {"2d": (N_ROWS + 1,), "3d": (2, 4)}[case.shape]
        d["input"] = rng.normal(size=batch + (N_FEATURES,))
        d["linear_weight"] = rng.normal(scale=0.8, size=(n_classes, N_FEATURES))
        d["linear_bias"] = rng.normal(size=n_classes)
    ignore_index = case.kwargs.get("ignore_index", -100)
    flat = rng.integers(0, n_classes, size=int(np.prod(batch, dtype=np.int64)))
    ignored = np.zeros(flat.size, dtype=bool)
    if case.ignore == "some":
        ignored[2::3] = True
    elif case.ignore == "all":
        ignored[:] = True
    # the first and last class, and both sides of every shard edge (the first class of every
    # shard: a width-1 shard's only one), as targets of counted rows
    edges = [0, n_classes - 1]
    if case.partition is None:  # (the partition cases share their targets)
        offsets = np.cumsum(sizes)[:-1].tolist()
        edges += [sizes[0] - 1, *offsets]
    counted = np.flatnonzero(~ignored)[: len(edges)]
    flat[counted] = edges[: counted.size]
    flat[ignored] = ignore_index
    d["target"] = flat.reshape(batch)
    d["weight"] = rng.uniform(0.2, 2.0, size=n_classes)
    # the upstream gradient of backward(), exact in bfloat16
    out_shape = batch if case.reduction == "none" else ()
    d["grad_output"] = rng.choice([-1.5, -0.5, 0.25, 1.0, 1.75], size=out_shape)
    return d


# -- misuse: functions run on every rank, with rank-dependent arguments --------------

MISUSE: dict[str, Callable[[int, int, Any], Any]] = {}
PROBES: set[str] = set()  # cases that may hang: each runs on its own group (PROBE_TIMEOUT)


def misuse(case_id: str, *, probe: bool = False) -> Callable:
    """Register a misuse case; ``probe``: it may hang, so it gets a group of its own."""

    def register(fn: Callable) -> Callable:
        MISUSE[case_id] = fn
        if probe:
            PROBES.add(case_id)
        return fn

    return register


def _ce_problem(world: int, rank: int, n_rows: int = 4) -> tuple[Any, Any, tuple[int, ...]]:
    """A valid (this rank's logits shard, target, sizes) for the misuse cases."""
    sizes = SIZES[world]
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(n_rows, sum(sizes), generator=g, dtype=torch.float64)
    target = torch.arange(n_rows) % sum(sizes)
    off = sum(sizes[:rank])
    return logits[:, off : off + sizes[rank]].clone(), target, sizes


def _linear_problem(world: int, rank: int, n_rows: int = 4) -> tuple[Any, ...]:
    """A valid (input, weight shard, bias shard, target, sizes) for the misuse cases."""
    sizes = SIZES[world]
    g = torch.Generator().manual_seed(8)
    h = torch.randn(n_rows, N_FEATURES, generator=g, dtype=torch.float64)
    w = torch.randn(sum(sizes), N_FEATURES, generator=g, dtype=torch.float64)
    b = torch.randn(sum(sizes), generator=g, dtype=torch.float64)
    target = torch.arange(n_rows) % sum(sizes)
    off = sum(sizes[:rank])
    return h, w[off : off + sizes[rank]].clone(), b[off : off + sizes[rank]].clone(), target, sizes


@misuse("ce-mismatched-batch")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank, n_rows=4 if rank == 0 else 3)
    return vocab_parallel_cross_entropy(x, t)


@misuse("ce-mismatched-target")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    if rank == world - 1:
        t[1] = (t[1] + 1) % sum(SIZES[world])
    return vocab_parallel_cross_entropy(x, t)


@misuse("ce-mismatched-weight")
def _(rank, world, group):
    x, t, sizes = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, weight=torch.full((sum(sizes),), 1.0 + (rank == 1)))


@misuse("ce-mismatched-options")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, reduction="sum" if rank == 1 else "mean")


@misuse("ce-normalizer-differs")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, normalizer=3.0 if rank == 1 else 4.0)


@misuse("linear-normalizer-with-sum-on-rank-1")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    reduction = "sum" if rank == 1 else "mean"
    return vocab_parallel_linear_cross_entropy(
        h, w, t, linear_bias=b, normalizer=8, reduction=reduction
    )


@misuse("ce-width-contradicts-shard-sizes")
def _(rank, world, group):
    x, t, sizes = _ce_problem(world, rank)
    if rank == 1:
        x = torch.cat([x, x[:, :1]], dim=1)
    return vocab_parallel_cross_entropy(x, t, shard_sizes=sizes)


@misuse("ce-shard-sizes-differ")
def _(rank, world, group):
    x, t, sizes = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, shard_sizes=sizes if rank != 1 else sizes[::-1])


@misuse("ce-shard-sizes-wrong-length")
def _(rank, world, group):
    x, t, sizes = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, shard_sizes=(*sizes, 1))


@misuse("ce-empty-shard")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x[:, :0] if rank == 1 else x, t)


@misuse("ce-target-too-large")
def _(rank, world, group):
    x, t, sizes = _ce_problem(world, rank)
    t[2] = sum(sizes)  # one past the whole vocabulary: valid in no shard, not even the last
    return vocab_parallel_cross_entropy(x, t)


@misuse("ce-target-negative")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    t[0] = -3
    return vocab_parallel_cross_entropy(x, t)


@misuse("ce-logits-not-a-tensor")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x.numpy(), t)


@misuse("ce-target-not-a-tensor")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t.tolist())


@misuse("ce-integer-logits-everywhere")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x.long(), t)


@misuse("ce-megatron-smoothing-too-large")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, label_smoothing=0.99, label_smoothing_mode="megatron")


@misuse("ce-target-not-a-tensor-on-rank-1")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t.tolist() if rank == 1 else t)


@misuse("ce-bad-axis-on-rank-1")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, axis=2 if rank == 1 else 1)


@misuse("ce-integer-logits-on-rank-1")
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x.long() if rank == 1 else x, t)


@misuse("ce-bad-mode-on-rank-1", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    mode = "bogus" if rank == 1 else "pytorch"
    return vocab_parallel_cross_entropy(x, t, group=group, label_smoothing_mode=mode)


@misuse("ce-logits-not-a-tensor-on-rank-1", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x.numpy() if rank == 1 else x, t, group=group)


@misuse("linear-mismatched-batch")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    if rank == 1:
        h, t = h[:3], t[:3]
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b)


@misuse("linear-mismatched-target")
def _(rank, world, group):
    h, w, b, t, sizes = _linear_problem(world, rank)
    if rank == world - 1:
        t[1] = (t[1] + 1) % sum(sizes)
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b)


@misuse("linear-mismatched-features")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    if rank == 1:
        w = torch.cat([w, w[:, :1]], dim=1)
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b)


@misuse("linear-input-features-differ-from-weight")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    return vocab_parallel_linear_cross_entropy(h[:, :-1], w, t, linear_bias=b)


@misuse("linear-width-contradicts-shard-sizes")
def _(rank, world, group):
    h, w, b, t, sizes = _linear_problem(world, rank)
    if rank == 1:
        w, b = torch.cat([w, w[:1]]), torch.cat([b, b[:1]])
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b, shard_sizes=sizes)


@misuse("linear-shard-sizes-differ")
def _(rank, world, group):
    h, w, b, t, sizes = _linear_problem(world, rank)
    sizes = sizes if rank != 1 else sizes[::-1]
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b, shard_sizes=sizes)


@misuse("linear-target-too-large")
def _(rank, world, group):
    h, w, b, t, sizes = _linear_problem(world, rank)
    t[2] = sum(sizes)
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b)


@misuse("linear-input-not-a-tensor")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    return vocab_parallel_linear_cross_entropy(h.numpy(), w, t, linear_bias=b)


@misuse("linear-bias-wrong-shape-on-rank-1")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    return vocab_parallel_linear_cross_entropy(h, w, t, linear_bias=b[:-1] if rank == 1 else b)


@misuse("linear-integer-input-on-rank-1")
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    return vocab_parallel_linear_cross_entropy(h.long() if rank == 1 else h, w, t, linear_bias=b)


@misuse("linear-bad-mode-on-rank-1", probe=True)
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    mode = "bogus" if rank == 1 else "pytorch"
    return vocab_parallel_linear_cross_entropy(
        h, w, t, group=group, linear_bias=b, label_smoothing_mode=mode
    )


@misuse("linear-input-not-a-tensor-on-rank-1", probe=True)
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    h = h.numpy() if rank == 1 else h
    return vocab_parallel_linear_cross_entropy(h, w, t, group=group, linear_bias=b)


# disagreements that change the sequence of collectives: before the agreement covered
# them, a rank ran one collective more (or fewer) and the others waited for the
# process-group timeout; each runs on a group of its own with a short timeout


@misuse("ce-no-grad-on-rank-1", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    x.requires_grad_()
    with torch.no_grad() if rank == 1 else contextlib.nullcontext():
        return vocab_parallel_cross_entropy(x, t, group=group)


@misuse("ce-requires-grad-on-rank-1", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x.requires_grad_(rank == 1), t, group=group)


@misuse("ce-validate-on-rank-0-only", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(x, t, group=group, validate=rank == 0)


@misuse("ce-unvalidated-smoothing-on-rank-1", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)  # smoothing adds a row to the fused all-reduce
    eps = 0.1 if rank == 1 else 0.0
    return vocab_parallel_cross_entropy(x, t, group=group, validate=False, label_smoothing=eps)


@misuse("ce-float-ignore-index-on-rank-1", probe=True)
def _(rank, world, group):
    x, t, _ = _ce_problem(world, rank)
    return vocab_parallel_cross_entropy(
        x, t, group=group, ignore_index=-100.0 if rank == 1 else -100
    )


@misuse("linear-no-grad-on-rank-1", probe=True)
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    h.requires_grad_()  # its gradient is all-reduced: one collective more
    with torch.no_grad() if rank == 1 else contextlib.nullcontext():
        return vocab_parallel_linear_cross_entropy(h, w, t, group=group, linear_bias=b)


@misuse("linear-input-requires-grad-on-rank-1", probe=True)
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    h.requires_grad_(rank == 1)
    return vocab_parallel_linear_cross_entropy(h, w, t, group=group, linear_bias=b)


@misuse("linear-unvalidated-on-rank-1-with-shard-sizes", probe=True)
def _(rank, world, group):
    h, w, b, t, sizes = _linear_problem(world, rank)  # rank 1 would skip every exchange
    kw = {"validate": False, "shard_sizes": sizes} if rank == 1 else {}
    return vocab_parallel_linear_cross_entropy(h, w, t, group=group, linear_bias=b, **kw)


@misuse("linear-unvalidated-chunks-differ", probe=True)
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)  # one collective per chunk
    chunk = 1 if rank == 1 else 2
    return vocab_parallel_linear_cross_entropy(
        h, w, t, group=group, linear_bias=b, validate=False, chunk_size=chunk
    )


@misuse("linear-unvalidated-counted-rows-differ", probe=True)
def _(rank, world, group):
    h, w, b, t, _ = _linear_problem(world, rank)
    if rank == 1:
        t[0] = -100  # one row fewer: one chunk fewer at chunk_size=1
    return vocab_parallel_linear_cross_entropy(
        h, w, t, group=group, linear_bias=b, validate=False, chunk_size=1
    )


# -- the worker ----------------------------------------------------------------------


def _run_case(case: Case, world: int, rank: int, groups: dict) -> dict:
    """This rank's part of ``case``: the loss and the gradients of its leaves, float64."""
    sizes, index = _placement(case, world, rank)
    d = _data(case, sizes)
    off, width = sum(sizes[:index]), sizes[index]
    dtype = getattr(torch, case.dtype)
    kw = case.kwargs
    if case.weight:  # in the input's dtype (bfloat16 weights must work too)
        kw["weight"] = torch.from_numpy(d["weight"]).to(dtype)
    if case.shard_sizes:
        kw["shard_sizes"] = list(sizes)
    if not case.validate:
        kw["validate"] = False
    if case.groups:
        kw["group"] = groups[_members(case, world, rank)]
    target = torch.from_numpy(d["target"])
    if case.fn == "ce":
        axis = {"2d": 1, "kdim": 1, "last": -1, "1d": 0}[case.shape]
        if case.shape == "last":
            kw["axis"] = -1
        full = torch.from_numpy(d["logits"]).to(dtype)
        shard = full.narrow(axis, off, width).clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(shard, target, **kw)
        leaves = {"logits": shard}
    else:
        h = torch.from_numpy(d["input"]).to(dtype).requires_grad_()
        w = torch.from_numpy(d["linear_weight"][off : off + width]).to(dtype).requires_grad_()
        leaves = {"input": h, "linear_weight": w}
        if case.bias:
            b = torch.from_numpy(d["linear_bias"][off : off + width]).to(dtype).requires_grad_()
            kw["linear_bias"] = leaves["linear_bias"] = b
        loss = vocab_parallel_linear_cross_entropy(h, w, target, **kw)
    # backward(gradient) would import sympy (seconds); the product's backward hands the same over
    (loss * torch.from_numpy(d["grad_output"]).to(loss.dtype)).sum().backward()
    return {
        "loss": loss.detach().double().numpy(),
        "loss_dtype": str(loss.dtype),
        "grads": {
            k: None if v.grad is None else v.grad.double().numpy() for k, v in leaves.items()
        },
        "grad_dtypes": {
            k: None if v.grad is None else str(v.grad.dtype) for k, v in leaves.items()
        },
    }


def _misuse_call(case_id: str, world: int, rank: int, probe_groups: dict) -> None:
    MISUSE[case_id](rank, world, probe_groups.get(case_id))  # expected to raise


def _run_all(world: int, rank: int, note: Callable[[str], None]) -> dict:
    """Every case on this rank: ``{case id: {"ok": result} or {"error": (type, message)}}``."""
    # every group is made by every rank, in the same order, before any case
    groups = {}
    for parity in (0, 1):
        members = tuple(r for r in range(world) if r % 2 == parity)
        groups[members] = dist.new_group(list(members))
    probe_groups = {case_id: dist.new_group(timeout=PROBE_TIMEOUT) for case_id in sorted(PROBES)}
    jobs: list[tuple[str, Callable[[], Any]]] = [
        (c.id, lambda c=c: _run_case(c, world, rank, groups)) for c in CASES.values()
    ]
    ordered = sorted(MISUSE, key=lambda k: k in PROBES)  # those that may hang last
    jobs += [(k, lambda k=k: _misuse_call(k, world, rank, probe_groups)) for k in ordered]
    records: dict = {}
    for case_id, job in jobs:
        note(case_id)
        start = time.perf_counter()
        try:
            records[case_id] = {"ok": job()}
        except Exception as e:  # recorded: the tests assert on every rank's record
            records[case_id] = {
                "error": (type(e).__name__, str(e)),
                "traceback": traceback.format_exc(),
            }
        records[case_id]["seconds"] = time.perf_counter() - start
    return records


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Run every case on this rank; write the records to ``rank<r>.pkl`` and the
    progress (a time and the case started) to ``rank<r>.log``."""
    torch.set_num_threads(1)  # CI has 2 cores for up to 4 workers
    if os.path.exists("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with open(os.path.join(out_dir, f"rank{rank}.log"), "w") as log:

        def note(event: str) -> None:
            print(f"{time.time():.3f} {event}", file=log, flush=True)

        note("init_process_group")
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=GROUP_TIMEOUT,
        )
        try:
            records = _run_all(world, rank, note)
            with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
                pickle.dump(records, f)
            note("done")
        finally:
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the records are written: skip the interpreter's teardown (seconds with torch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    """Every rank's records of one spawn: ``records[rank][case id]``."""

    world: int
    records: list[dict]


def _spawn(world: int, out_dir: str) -> Run:
    """Start ``world`` workers, wait for them up to ``DEADLINE_S``, kill them on failure."""
    start = time.monotonic()
    context = mp.start_processes(
        _worker,
        args=(world, _free_port(), out_dir),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    problem = None
    try:
        while not context.join(timeout=0.1):
            if time.monotonic() - start > DEADLINE_S:
                problem = f"did not finish within {DEADLINE_S} s"
                break
    except Exception as e:  # a worker raised outside a case, or died
        problem = f"a worker failed: {e}"
    finally:
        for p in context.processes:
            if p.is_alive():
                p.kill()
            p.join(timeout=10)
    if problem is not None:
        where = []
        for rank in range(world):
            path = os.path.join(out_dir, f"rank{rank}.log")
            last = []
            if os.path.exists(path):
                with open(path) as f:
                    last = f.read().split()
            where.append(f"rank {rank}: {last[-1] if last else 'did not start'}")
        raise RuntimeError(f"the {world}-process run {problem} ({'; '.join(where)})")
    records = []
    for rank in range(world):
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "rb") as f:
            records.append(pickle.load(f))
    return Run(world, records)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], Run]:
    """``runs(world)``: the records of this module's one ``world``-process spawn, started
    on first use (a failed spawn is not retried: every test that needs it fails)."""
    done: dict[int, Run | BaseException] = {}

    def get(world: int) -> Run:
        if world not in done:
            try:
                done[world] = _spawn(world, str(tmp_path_factory.mktemp(f"world{world}")))
            except Exception as e:
                done[world] = e
        if isinstance(done[world], BaseException):
            pytest.fail(f"the {world}-process spawn failed: {done[world]}", pytrace=False)
        return done[world]

    return get


# -- the oracle ----------------------------------------------------------------------


def _reduce(rows: Any, w_t: Any, reduction: str) -> Any:
    """PyTorch's reduction of per-element losses: 'mean' divides by the summed target weight
    (NaN with a zero gradient when every target is ignored)."""
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    denom = float(w_t.sum())
    return total / denom if denom else total * 0.0 + float("nan")


def _ce_oracle(x: Any, target: Any, weight: Any, case: Case, class_axis: int) -> Any:
    """The loss of ``case`` on the whole float64 logits ``x`` (class axis ``class_axis``)."""
    kw = case.kwargs
    n_classes = x.shape[class_axis]
    ignore_index = kw.get("ignore_index", -100)
    eps = kw.get("label_smoothing", 0.0)
    # normalizer=Z: the sum of the weighted losses over Z
    reduction = "sum" if "normalizer" in kw else case.reduction
    if kw.get("softcap") is not None:
        c = kw["softcap"]
        x = c * torch.tanh(x / c)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    w_t = (weight[safe] if weight is not None else torch.ones(safe.shape, dtype=x.dtype)) * valid
    if kw.get("label_smoothing_mode", "pytorch") == "pytorch":
        loss = F.cross_entropy(
            x,
            target,
            weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=eps,
        )
    else:  # Megatron: 1 - eps on the target, eps / (V - 1) on every other class
        q = torch.full((*safe.shape, n_classes), eps / (n_classes - 1), dtype=x.dtype)
        q.scatter_(-1, safe[..., None], 1 - eps)
        rows = F.cross_entropy(x, q.movedim(-1, class_axis), weight, reduction="none")
        loss = _reduce(torch.where(valid, rows, 0.0), w_t, reduction)
    z_loss = kw.get("z_loss", 0.0)
    if z_loss:
        lse = torch.logsumexp(x, dim=class_axis)
        loss = loss + _reduce(torch.where(valid, z_loss * lse**2, 0.0), w_t, reduction)
    return loss / kw["normalizer"] if "normalizer" in kw else loss


def _oracle(case: Case, sizes: tuple[int, ...]) -> dict:
    """Loss and whole gradients of ``case`` with shard widths ``sizes``, one float64 process."""
    d = _data(case, sizes)
    dtype = getattr(torch, case.dtype)

    def leaf(a: np.ndarray) -> Any:  # rounded to the case's dtype like the workers' inputs
        return torch.from_numpy(a).to(dtype).double().requires_grad_()

    target = torch.from_numpy(d["target"])
    weight = torch.from_numpy(d["weight"]) if case.weight else None
    if case.fn == "ce":
        leaves = {"logits": leaf(d["logits"])}
        x = leaves["logits"]
        if case.shape == "last":
            x = x.movedim(-1, 1)
        loss = _ce_oracle(x, target, weight, case, 0 if case.shape == "1d" else 1)
    else:
        leaves = {"input": leaf(d["input"]), "linear_weight": leaf(d["linear_weight"])}
        logits = leaves["input"].reshape(-1, N_FEATURES) @ leaves["linear_weight"].T
        if case.bias:
            leaves["linear_bias"] = leaf(d["linear_bias"])
            logits = logits + leaves["linear_bias"]
        loss = _ce_oracle(logits, target.reshape(-1), weight, case, 1)
        if case.reduction == "none":
            loss = loss.reshape(target.shape)
    (loss * torch.from_numpy(d["grad_output"])).sum().backward()
    return {"loss": loss.detach().numpy(), "grads": {k: v.grad.numpy() for k, v in leaves.items()}}


def _shard_of(name: str, case: Case, grad: np.ndarray, off: int, width: int) -> np.ndarray:
    """The part of a whole gradient that the rank holding ``[off, off + width)`` gets."""
    if name == "input":
        return grad  # all-reduced: every rank has the whole gradient
    if name in ("linear_weight", "linear_bias"):
        return grad[off : off + width]
    axis = {"2d": 1, "kdim": 1, "last": -1, "1d": 0}[case.shape]
    return np.take(grad, np.arange(off, off + width), axis=axis)


def _records(run: Run, case_id: str) -> list[dict]:
    return [run.records[rank][case_id] for rank in range(run.world)]


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, what: str) -> None:
    try:
        assert_close(actual, expected, rtol=rtol, atol=atol)
    except AssertionError as e:
        raise AssertionError(f"{what}\n{e}") from None


def _check_against_oracle(run: Run, case: Case) -> None:
    records = _records(run, case.id)
    failed = [f"rank {r}: {rec['traceback']}" for r, rec in enumerate(records) if "error" in rec]
    assert not failed, "\n".join(failed)
    tolerance = (LINEAR_TOLERANCE if case.fn == "linear" else TOLERANCE)[case.dtype]
    oracles: dict = {}
    for rank, rec in enumerate(records):
        got = rec["ok"]
        sizes, index = _placement(case, run.world, rank)
        if sizes not in oracles:
            oracles[sizes] = (_oracle(case, sizes), got["loss"])
        expected, first_loss = oracles[sizes]
        off, width = sum(sizes[:index]), sizes[index]
        rtol, atol = tolerance
        where = f"rank {rank} of {run.world}, shards {sizes}"
        assert got["loss_dtype"] == f"torch.{case.dtype}", where
        finite = np.abs(expected["loss"][np.isfinite(expected["loss"])])
        scale = max(1.0, float(np.max(finite, initial=0.0)))
        _close(got["loss"], expected["loss"], rtol, atol * scale, f"{where}: loss")
        # the same loss on every rank of a group, to the last bit
        np.testing.assert_array_equal(got["loss"], first_loss, err_msg=where)
        assert set(got["grads"]) == set(expected["grads"]), where
        for name, whole in expected["grads"].items():
            want = _shard_of(name, case, whole, off, width)
            assert got["grads"][name] is not None, f"{where}: no gradient for {name}"
            assert got["grad_dtypes"][name] == f"torch.{case.dtype}", f"{where}: {name}"
            scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-3)
            _close(got["grads"][name], want, rtol, atol * scale, f"{where}: gradient of {name}")


def _errors(run: Run, case_id: str) -> list[tuple[str, str]]:
    """Every rank's (exception type, message); fails if a rank returned."""
    records = _records(run, case_id)
    returned = [r for r, rec in enumerate(records) if "error" not in rec]
    assert not returned, f"{case_id}: ranks {returned} of {run.world} returned without an error"
    return [rec["error"] for rec in records]


def _assert_every_rank(errors: list[tuple[str, str]], kind: str, *fragments: str) -> None:
    for rank, (name, message) in enumerate(errors):
        assert name == kind, f"rank {rank}: {name}: {message}"
        for fragment in fragments:
            assert fragment in message, f"rank {rank}: {fragment!r} not in {message!r}"


def _assert_one_rank_failed(errors: list[tuple[str, str]], fn: str, kind: str, own: str) -> None:
    """Rank 1 raised its own ``kind`` error; every other rank a RuntimeError naming rank 1."""
    world = len(errors)
    name, message = errors[1]
    assert name == kind and own in message, f"rank 1: {name}: {message}"
    for rank, (name, message) in enumerate(errors):
        if rank != 1:
            assert name == "RuntimeError", f"rank {rank}: {name}: {message}"
            assert f"{fn} failed on rank 1 of {world}" in message, f"rank {rank}: {message}"
            assert own in message, f"rank {rank}: rank 1's error not quoted: {message}"


def _assert_quick(run: Run, case_id: str, limit_s: float = 20.0) -> None:
    """Every rank stopped within ``limit_s`` (a hang would wait for the group's timeout)."""
    for rank, rec in enumerate(_records(run, case_id)):
        assert rec["seconds"] < limit_s, f"rank {rank} took {rec['seconds']:.1f} s"


WORLD = pytest.mark.parametrize("world", WORLDS, ids=[f"{w}proc" for w in WORLDS])


def _case_params(cases: list[Case]) -> list:
    return [
        pytest.param(world, case, id=f"{world}proc-{case.id}") for world in WORLDS for case in cases
    ]


def _by_id(rows: list[tuple]) -> list:
    """Parameter rows named by their first entry, the misuse case id."""
    return [pytest.param(*row, id=row[0]) for row in rows]


def _partition_losses(run: Run, prefix: str) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Per partition case: the loss (rank 0) and the ranks' gradients of the first leaf."""
    losses, grads = [], []
    for case in CASES.values():
        if case.partition is None or not case.id.startswith(prefix):
            continue
        records = _records(run, case.id)
        assert all("ok" in rec for rec in records), case.id
        losses.append(records[0]["ok"]["loss"])
        grads.append([next(iter(rec["ok"]["grads"].values())) for rec in records])
    return losses, grads


# -- vocab_parallel_cross_entropy ----------------------------------------------------


class TestVocabParallelCrossEntropy:
    @pytest.mark.parametrize(("world", "case"), _case_params(CE_CASES))
    def test_matches_float64_oracle(self, runs: Callable, world: int, case: Case) -> None:
        _check_against_oracle(runs(world), case)

    @WORLD
    def test_loss_and_gradient_independent_of_partition(self, runs: Callable, world: int) -> None:
        run = runs(world)
        losses, grads = _partition_losses(run, "ce-")
        partitions = {_sizes(c, world) for c in CE_CASES if c.partition is not None}
        assert len(partitions) > 1, partitions
        whole = [np.concatenate(g, axis=1) for g in grads]  # the shards side by side
        for loss, grad in zip(losses[1:], whole[1:]):
            np.testing.assert_allclose(loss, losses[0], rtol=1e-12)
            np.testing.assert_allclose(grad, whole[0], rtol=1e-10, atol=1e-14)
        assert whole[0].shape == (N_ROWS, PARTITION_V)

    @WORLD
    def test_mismatched_batch(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-mismatched-batch")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same batch shape")
        _assert_every_rank(errors, "ValueError", "rank 0: (4,)", "rank 1: (3,)")

    @WORLD
    def test_mismatched_target(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-mismatched-target")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same target")

    @WORLD
    def test_mismatched_class_weight(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-mismatched-weight")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same class weight")

    @WORLD
    def test_mismatched_options(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-mismatched-options")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same options", "'sum'")

    @WORLD
    def test_mismatched_normalizer(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-normalizer-differs")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same options", "3.0")

    @WORLD
    def test_normalizer_needs_mean(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-normalizer-with-sum-on-rank-1")
        _assert_one_rank_failed(
            errors, "vocab_parallel_linear_cross_entropy", "ValueError", "needs reduction='mean'"
        )

    @WORLD
    def test_width_contradicts_shard_sizes(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-width-contradicts-shard-sizes")
        sizes = SIZES[world]
        _assert_every_rank(
            errors, "ValueError", f"rank 1's shard has width {sizes[1] + 1}", f"says {sizes[1]}"
        )

    @WORLD
    def test_shard_sizes_differ_between_ranks(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-shard-sizes-differ")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same shard_sizes")

    @WORLD
    def test_shard_sizes_of_wrong_length(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-shard-sizes-wrong-length")
        _assert_every_rank(errors, "ValueError", f"shard_sizes has {world + 1} entries")

    @WORLD
    def test_empty_shard(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-empty-shard")
        _assert_every_rank(
            errors, "ValueError", "every shard needs at least one class", "rank 1: 0"
        )

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "value"), _by_id([("ce-target-too-large", None), ("ce-target-negative", -3)])
    )
    def test_target_out_of_range(
        self, runs: Callable, world: int, case_id: str, value: int | None
    ) -> None:
        errors = _errors(runs(world), case_id)
        n_classes = sum(SIZES[world])
        bad = n_classes if value is None else value
        _assert_every_rank(
            errors, "TargetIndexError", f"Target {bad} is out of bounds", f"C={n_classes}"
        )

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "name"),
        _by_id([("ce-logits-not-a-tensor", "logits_shard"), ("ce-target-not-a-tensor", "target")]),
    )
    def test_not_a_tensor(self, runs: Callable, world: int, case_id: str, name: str) -> None:
        errors = _errors(runs(world), case_id)
        _assert_every_rank(errors, "TypeError", f"{name} must be a torch.Tensor")

    @WORLD
    def test_integer_logits(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-integer-logits-everywhere")
        _assert_every_rank(errors, "DTypeError", "floating")

    @WORLD
    def test_megatron_smoothing_too_large(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-megatron-smoothing-too-large")
        _assert_every_rank(errors, "ValueError", "label_smoothing_mode='megatron' must be at most")

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "kind", "own"),
        _by_id(
            [
                ("ce-target-not-a-tensor-on-rank-1", "TypeError", "target must be a torch.Tensor"),
                ("ce-bad-axis-on-rank-1", "ValueError", "axis=2 is out of range"),
            ]
        ),
    )
    def test_error_on_one_rank(
        self, runs: Callable, world: int, case_id: str, kind: str, own: str
    ) -> None:
        errors = _errors(runs(world), case_id)
        _assert_one_rank_failed(errors, "vocab_parallel_cross_entropy", kind, own)

    @WORLD
    def test_integer_logits_on_one_rank(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-integer-logits-on-rank-1")
        _assert_one_rank_failed(errors, "vocab_parallel_cross_entropy", "DTypeError", "floating")

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "kind", "own"),
        _by_id(
            [
                ("ce-bad-mode-on-rank-1", "ValueError", "label_smoothing_mode must be"),
                (
                    "ce-logits-not-a-tensor-on-rank-1",
                    "TypeError",
                    "logits_shard must be a torch.Tensor",
                ),
            ]
        ),
    )
    def test_error_on_one_rank_before_agreement(
        self, runs: Callable, world: int, case_id: str, kind: str, own: str
    ) -> None:
        errors = _errors(runs(world), case_id)
        _assert_one_rank_failed(errors, "vocab_parallel_cross_entropy", kind, own)

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "fragment"),
        _by_id(
            [
                ("ce-no-grad-on-rank-1", "every rank must run in the same grad mode"),
                ("ce-requires-grad-on-rank-1", "the same arguments must require grad"),
                ("ce-validate-on-rank-0-only", "every rank must pass the same validate"),
                ("ce-unvalidated-smoothing-on-rank-1", "calls differ in their options"),
            ]
        ),
    )
    def test_disagreement_raises_on_every_rank_at_once(
        self, runs: Callable, world: int, case_id: str, fragment: str
    ) -> None:
        run = runs(world)
        _assert_every_rank(_errors(run, case_id), "ValueError", fragment)
        _assert_quick(run, case_id)

    @WORLD
    def test_float_ignore_index_on_one_rank(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "ce-float-ignore-index-on-rank-1")
        _assert_one_rank_failed(
            errors, "vocab_parallel_cross_entropy", "TypeError", "ignore_index must be an integer"
        )

    def test_no_process_group(self) -> None:
        assert not dist.is_initialized()
        logits = torch.randn(2, 3, dtype=torch.float64)
        with pytest.raises(RuntimeError, match="need an initialised process group"):
            vocab_parallel_cross_entropy(logits, torch.tensor([0, 2]))
        with pytest.raises(RuntimeError, match="init_process_group"):
            vocab_parallel_cross_entropy(logits, torch.tensor([0, 2]), validate=False)


# -- vocab_parallel_linear_cross_entropy ---------------------------------------------


class TestVocabParallelLinearCrossEntropy:
    @pytest.mark.parametrize(("world", "case"), _case_params(LINEAR_CASES))
    def test_matches_float64_oracle(self, runs: Callable, world: int, case: Case) -> None:
        _check_against_oracle(runs(world), case)

    @WORLD
    def test_loss_and_gradients_independent_of_partition(self, runs: Callable, world: int) -> None:
        run = runs(world)
        losses, grads = _partition_losses(run, "linear-")
        weights = [
            np.concatenate([rec["ok"]["grads"]["linear_weight"] for rec in _records(run, c.id)])
            for c in LINEAR_CASES
            if c.partition is not None
        ]
        assert weights[0].shape == (PARTITION_V, N_FEATURES)
        for loss, grad in zip(losses[1:], grads[1:]):
            np.testing.assert_allclose(loss, losses[0], rtol=1e-12)
            for g in grad:  # input's gradient: whole on every rank, whatever the split
                np.testing.assert_allclose(g, grads[0][0], rtol=1e-10, atol=1e-14)
        for grad in weights[1:]:  # the rows of linear_weight's gradient, side by side
            np.testing.assert_allclose(grad, weights[0], rtol=1e-10, atol=1e-14)

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "fact"),
        _by_id(
            [
                ("linear-mismatched-batch", "input shape"),
                ("linear-mismatched-target", "target"),
                ("linear-mismatched-features", "weight_shard's feature size D"),
            ]
        ),
    )
    def test_mismatch_between_ranks(
        self, runs: Callable, world: int, case_id: str, fact: str
    ) -> None:
        errors = _errors(runs(world), case_id)
        _assert_every_rank(errors, "ValueError", f"every rank must pass the same {fact}")

    @WORLD
    def test_input_features_differ_from_weight(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-input-features-differ-from-weight")
        _assert_every_rank(errors, "ValueError", f"input has shape (4, {N_FEATURES - 1})")

    @WORLD
    def test_width_contradicts_shard_sizes(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-width-contradicts-shard-sizes")
        sizes = SIZES[world]
        _assert_every_rank(
            errors, "ValueError", f"rank 1's shard has width {sizes[1] + 1}", f"says {sizes[1]}"
        )

    @WORLD
    def test_shard_sizes_differ_between_ranks(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-shard-sizes-differ")
        _assert_every_rank(errors, "ValueError", "every rank must pass the same shard_sizes")

    @WORLD
    def test_target_out_of_range(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-target-too-large")
        n_classes = sum(SIZES[world])
        _assert_every_rank(errors, "TargetIndexError", f"Target {n_classes} is out of bounds")

    @WORLD
    def test_not_a_tensor(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-input-not-a-tensor")
        _assert_every_rank(errors, "TypeError", "input must be a torch.Tensor")

    @WORLD
    def test_error_on_one_rank(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-bias-wrong-shape-on-rank-1")
        _assert_one_rank_failed(
            errors,
            "vocab_parallel_linear_cross_entropy",
            "ValueError",
            "linear_bias must have shape",
        )

    @WORLD
    def test_integer_input_on_one_rank(self, runs: Callable, world: int) -> None:
        errors = _errors(runs(world), "linear-integer-input-on-rank-1")
        _assert_one_rank_failed(
            errors, "vocab_parallel_linear_cross_entropy", "DTypeError", "floating"
        )

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "kind", "own"),
        _by_id(
            [
                ("linear-bad-mode-on-rank-1", "ValueError", "label_smoothing_mode must be"),
                (
                    "linear-input-not-a-tensor-on-rank-1",
                    "TypeError",
                    "input must be a torch.Tensor",
                ),
            ]
        ),
    )
    def test_error_on_one_rank_before_agreement(
        self, runs: Callable, world: int, case_id: str, kind: str, own: str
    ) -> None:
        errors = _errors(runs(world), case_id)
        _assert_one_rank_failed(errors, "vocab_parallel_linear_cross_entropy", kind, own)

    @WORLD
    @pytest.mark.parametrize(
        ("case_id", "fragment"),
        _by_id(
            [
                ("linear-no-grad-on-rank-1", "every rank must run in the same grad mode"),
                ("linear-input-requires-grad-on-rank-1", "the same arguments must require grad"),
                (
                    "linear-unvalidated-on-rank-1-with-shard-sizes",
                    "every rank must pass the same validate",
                ),
                ("linear-unvalidated-chunks-differ", "calls differ in their options"),
                ("linear-unvalidated-counted-rows-differ", "calls differ in their options"),
            ]
        ),
    )
    def test_disagreement_raises_on_every_rank_at_once(
        self, runs: Callable, world: int, case_id: str, fragment: str
    ) -> None:
        run = runs(world)
        _assert_every_rank(_errors(run, case_id), "ValueError", fragment)
        _assert_quick(run, case_id)

    def test_no_process_group(self) -> None:
        assert not dist.is_initialized()
        h, w = torch.randn(2, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
        with pytest.raises(RuntimeError, match="need an initialised process group"):
            vocab_parallel_linear_cross_entropy(h, w, torch.tensor([0, 2]))


# -- one process: what needs no other rank ------------------------------------------


@pytest.fixture
def single_rank() -> Any:
    """A one-process gloo group in this process, destroyed afterwards."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class TestSingleRank:
    def test_equals_cross_entropy(self, single_rank: None) -> None:
        torch.manual_seed(0)
        logits = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
        target = torch.tensor([0, 8, 3, -100, 5, 1])
        weight = torch.rand(9, dtype=torch.float64)
        opts = {"weight": weight, "label_smoothing": 0.2, "reduction": "sum"}
        loss = vocab_parallel_cross_entropy(logits, target, **opts)
        (grad,) = torch.autograd.grad(loss, logits)
        ref_logits = logits.detach().clone().requires_grad_()
        ref = F.cross_entropy(ref_logits, target, **opts)
        (ref_grad,) = torch.autograd.grad(ref, ref_logits)
        assert abs(loss.item() - ref.item()) < 1e-12
        assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)

    def test_validate_false_reads_no_values(self, single_rank: None, monkeypatch) -> None:
        """validate=False skips the digests (a host copy of the target per call on GPUs)."""
        import crossentropy.distributed._agreement as agreement

        def no_digest(t: Any) -> str:
            raise AssertionError("digest computed with validate=False")

        monkeypatch.setattr(agreement, "digest", no_digest)
        logits = torch.randn(3, 4, dtype=torch.float64)
        target = torch.tensor([1, 0, 3])
        w = torch.rand(4, dtype=torch.float64)
        loss = vocab_parallel_cross_entropy(logits, target, weight=w, validate=False)
        assert abs(loss.item() - F.cross_entropy(logits, target, weight=w).item()) < 1e-12
        h, lw = torch.randn(3, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
        loss = vocab_parallel_linear_cross_entropy(h, lw, target, validate=False)
        assert abs(loss.item() - F.cross_entropy(h @ lw.T, target).item()) < 1e-12
        with pytest.raises(AssertionError, match="digest computed"):
            vocab_parallel_cross_entropy(logits, target, weight=w)  # validate=True digests

    def test_bfloat16_weight(self, single_rank: None) -> None:
        logits = torch.randn(4, 5).to(torch.bfloat16)
        target = torch.tensor([0, 4, 2, 2])
        w = torch.rand(5).to(torch.bfloat16)
        loss = vocab_parallel_cross_entropy(logits, target, weight=w)
        ref = F.cross_entropy(logits.double(), target, weight=w.double())
        assert loss.dtype == torch.bfloat16
        assert abs(loss.double().item() - ref.item()) < 2e-2 * abs(ref.item())
