"""The agreement step of the vocabulary-parallel losses: every rank checks the others' call.

Every rank first all-gathers a fixed header of integers (whether its own
checks failed, ``validate``, its shard width, grad mode, which arguments
require grad, and a checksum of the options, shapes and dtypes): the same
collective whatever the arguments, so that it can never hang.  From the
gathered headers every rank takes the same decision:

* ranks that disagree on ``validate``, grad mode or which arguments require
  grad (each of which changes the sequence of collectives that follows) all
  raise at once;
* with ``validate=True`` everywhere, or a failed check on any rank, one
  ``all_gather_object`` then exchanges the full description of each call
  (digests of the targets and class weights included) and any error
  message, and every rank raises the same error naming what differs;
* with ``validate=False`` the header's checksum stands in for the options.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Layout", "call_facts", "digest", "layout", "process_group"]

#: the header: failed, validate, width, grad mode, requires-grad bits, checksum
_HEADER = 6


def process_group() -> Any:
    """``torch.distributed``, or ``RuntimeError`` if no process group is initialised."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "vocabulary-parallel losses need an initialised process group: call "
            "torch.distributed.init_process_group(...) first (torchrun sets the "
            "environment for it)"
        )
    return dist


def digest(t: Any) -> str:
    """A digest of a tensor's values (equal digests: equal tensors)."""
    import torch

    data = t.detach().reshape(-1).cpu().contiguous()
    raw = data.view(torch.uint8).numpy()  # the bytes: any dtype, bfloat16 included
    return hashlib.blake2b(raw.tobytes(), digest_size=16).hexdigest()


def call_facts(target: Any, weight: Any, options: dict) -> tuple[dict, Callable[[], dict]]:
    """``(cheap, costly)``: what every rank must pass alike, read without touching
    a tensor's values (shapes, dtypes, the options), and a function giving the
    digests of the target's and the class weights' values."""
    cheap = {
        "target (shape, dtype)": (tuple(target.shape), str(target.dtype)),
        "class weight given": weight is not None,
        "options": tuple((k, repr(v)) for k, v in options.items()),
    }

    def costly() -> dict:
        return {
            "target (digest of the values)": digest(target),
            "class weight (digest of the values)": None if weight is None else digest(weight),
        }

    return cheap, costly


def _describe(values: list) -> str:
    return ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))


@dataclass
class Layout:
    """The shard widths of every rank, and this rank's place among them."""

    rank: int
    world: int
    sizes: list[int]

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def n_classes(self) -> int:
        return sum(self.sizes)


def _sizes_arg(shard_sizes: Sequence[int] | None) -> tuple | None:
    if shard_sizes is None:
        return None
    try:
        return tuple(int(s) for s in shard_sizes)
    except (TypeError, ValueError):
        raise ValueError(
            f"shard_sizes must be a sequence of ints (every rank's shard width, in rank "
            f"order), got {shard_sizes!r}"
        ) from None


def _grad_facts(grads: dict) -> dict:
    import torch

    return {
        "grad mode (torch.is_grad_enabled())": torch.is_grad_enabled(),
        "arguments that require grad": tuple(n for n, g in grads.items() if g),
    }


def _header(failed: bool, validate: bool, width: int, grads: dict, cheap: dict) -> list[int]:
    import torch

    bits = sum(1 << i for i, g in enumerate(grads.values()) if g)
    checksum = zlib.crc32(repr(sorted(cheap.items())).encode())
    return [int(failed), int(validate), width, int(torch.is_grad_enabled()), bits, checksum]


def _gather_headers(group: Any, mine: list[int], device: Callable[[], Any]) -> list[list[int]]:
    import torch

    dist = process_group()
    try:
        where = device()
    except Exception:  # this rank's arguments failed their checks: a device the backend takes
        gpu = dist.get_backend(group) == "nccl"
        where = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    header = torch.tensor(mine, dtype=torch.int64, device=where)
    out = [torch.empty_like(header) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, header, group=group)
    return [[int(v) for v in h.tolist()] for h in out]


def _check_headers(fn: str, headers: list[list[int]], grads: dict) -> None:
    """Raise on every rank alike if the headers show calls whose collectives differ."""
    validate = [bool(h[1]) for h in headers]
    if any(v != validate[0] for v in validate):
        raise ValueError(f"{fn}: every rank must pass the same validate, got {_describe(validate)}")
    if any(h[0] for h in headers):
        return  # the failed rank's message comes with the exchange that follows
    mode = [bool(h[3]) for h in headers]
    if any(m != mode[0] for m in mode):
        raise ValueError(
            f"{fn}: every rank must run in the same grad mode (torch.is_grad_enabled()), "
            f"got {_describe(mode)}"
        )
    names = list(grads)
    need = [tuple(n for i, n in enumerate(names) if h[4] >> i & 1) for h in headers]
    if any(n != need[0] for n in need):
        raise ValueError(
            f"{fn}: the same arguments must require grad on every rank, got {_describe(need)}"
        )
    if not validate[0] and any(h[5] != headers[0][5] for h in headers):
        raise ValueError(
            f"{fn}: the ranks' calls differ in their options, shapes or dtypes (validate=False "
            f"does not say which: pass validate=True to see every rank's values)"
        )


def _agree(fn: str, group: Any, facts: dict, error: BaseException | None) -> list[int]:
    """Exchange ``facts`` (and any local error) with every process; raise the
    same error everywhere if the call is inconsistent, else return the widths."""
    dist = process_group()
    world = dist.get_world_size(group)
    mine = {"error": None if error is None else f"{type(error).__name__}: {error}", **facts}
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    failed = [(r, g["error"]) for r, g in enumerate(gathered) if g["error"] is not None]
    if error is not None:
        raise error
    if failed:
        r, message = failed[0]
        raise RuntimeError(f"{fn} failed on rank {r} of {world}, so every rank stops: {message}")
    for key in facts:
        if key in ("width", "shard_sizes"):
            continue
        values = [g[key] for g in gathered]
        if any(v != values[0] for v in values):
            raise ValueError(f"{fn}: every rank must pass the same {key}, got {_describe(values)}")
    declared = [g["shard_sizes"] for g in gathered]
    if any(d != declared[0] for d in declared):
        raise ValueError(
            f"{fn}: every rank must pass the same shard_sizes, got {_describe(declared)}"
        )
    return [g["width"] for g in gathered]


def _check_sizes(fn: str, sizes: list[int], declared: tuple | None) -> None:
    world = len(sizes)
    if declared is not None:
        expected = list(declared)
        if len(expected) != world:
            raise ValueError(
                f"{fn}: shard_sizes has {len(expected)} entries for a group of {world} "
                f"ranks, got {expected}"
            )
        wrong = [r for r in range(world) if sizes[r] != expected[r]]
        if wrong:
            r = wrong[0]
            raise ValueError(
                f"{fn}: rank {r}'s shard has width {sizes[r]}, but shard_sizes says "
                f"{expected[r]} (shard widths: {_describe(sizes)})"
            )
    if any(s < 1 for s in sizes):
        raise ValueError(f"{fn}: every shard needs at least one class, got {_describe(sizes)}")


def layout(
    fn: str,
    group: Any,
    shard_sizes: Sequence[int] | None,
    validate: bool,
    facts: Callable[[], tuple[int, dict, Callable[[], dict]]],
    grads: dict,
    device: Callable[[], Any],
) -> Layout:
    """The shard layout, agreed by every rank of ``group`` (see the module's docstring).

    ``facts()`` checks this rank's arguments and returns ``(its shard width,
    cheap facts, a function giving the costly facts)``; ``grads`` says which
    differentiable arguments require grad (by name).  Any error ``facts``
    raises is first reported to every rank, so that all of them stop.
    """
    dist = process_group()
    rank = dist.get_rank(group)
    error, width, cheap, costly = None, -1, {}, None
    try:
        declared = _sizes_arg(shard_sizes)
        width, cheap, costly = facts()
        cheap = {"shard_sizes": declared, **cheap}
    except Exception as e:  # reported to every rank before raising here
        error, declared = e, None
    mine = _header(error is not None, validate, width, grads, cheap)
    headers = _gather_headers(group, mine, device)
    _check_headers(fn, headers, grads)
    if validate or any(h[0] for h in headers):
        found = {} if error is not None else {"width": width, **cheap, **_grad_facts(grads)}
        if error is None and validate:
            found.update(costly())
        sizes = _agree(fn, group, found, error)
    else:
        sizes = [h[2] for h in headers]
    _check_sizes(fn, sizes, declared)
    return Layout(rank, len(sizes), sizes)
