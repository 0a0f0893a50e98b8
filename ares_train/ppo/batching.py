"""Micro-batches for the PPO passes: the largest that fits, found by halving on out-of-memory, length-grouped.

`MicroBatcher(limit, fixed=...)` runs a pass over a list of items (rollout indices) in micro-batches:

- automatic (no fixed size): the first pass tries `limit` items at once (the whole mini-batch, or the whole
  forward batch); on `torch.OutOfMemoryError` it frees the cache, calls `reset()` (the caller zeroes partly
  accumulated gradients) and retries the whole pass at half the size, down to 1. The size that worked is
  remembered for the rest of the run, so only the first oversize pass pays for the search.
- fixed (`--micro-batch-size` given): no search; an OOM becomes `OutOfMemory`, an error that names the setting
  to change. Automatic mode raises it too when even one item does not fit.

`group_by_length(items, lengths, size)` cuts the items into micro-batches of consecutive lengths, longest
first: padding in each micro-batch is then only the spread of similar lengths, and the first micro-batch tried
is the most memory-hungry one, so a size that survives it survives the rest. Results do not depend on the
grouping as long as the per-micro-batch losses are weighted by their share of the mini-batch's tokens (the
trainer's `ppo_loss` weighting); tests/test_batching.py checks that on a tiny model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from ares_data.errors import AresError

__all__ = ["MicroBatcher", "OutOfMemory", "group_by_length"]

T = TypeVar("T")
R = TypeVar("R")


class OutOfMemory(AresError):
    """A pass ran out of accelerator memory; the message names the setting to change."""


def group_by_length(items: Sequence[T], lengths: Sequence[int], size: int) -> list[list[T]]:
    """`items` cut into chunks of `size` after sorting by `lengths` (longest first; ties keep their order)."""
    if size < 1:
        raise ValueError(f"micro-batch size must be >= 1, got {size}")
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    ranked = [items[i] for i in order]
    return [ranked[i : i + size] for i in range(0, len(ranked), size)]


def _free_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class MicroBatcher:
    """Runs passes in micro-batches of an automatically found (or a fixed) size; see the module doc.

    `what` names the pass in errors ("training", "scoring"); `setting` is the option that fixes the size
    (named in the error when a fixed size runs out of memory); `hints` are further ways out.
    """

    def __init__(
        self,
        limit: int,
        *,
        fixed: int | None = None,
        what: str = "training",
        setting: str = "--micro-batch-size",
        hints: Sequence[str] = (),
    ) -> None:
        if limit < 1 or (fixed is not None and fixed < 1):
            raise ValueError(f"micro-batch sizes must be >= 1 (limit {limit}, fixed {fixed})")
        self.fixed = fixed
        self.size = min(fixed, limit) if fixed else limit
        self.what, self.setting, self.hints = what, setting, tuple(hints)
        self.halvings = 0

    @property
    def automatic(self) -> bool:
        return self.fixed is None

    def run(
        self,
        items: Sequence[T],
        lengths: Sequence[int],
        fn: Callable[[list[list[T]]], R],
        reset: Callable[[], Any] | None = None,
    ) -> R:
        """`fn(micro_batches)` over `items` grouped by length; on OOM halve and retry (automatic mode)."""
        while True:
            chunks = group_by_length(items, lengths, self.size)
            try:
                return fn(chunks)
            except torch.OutOfMemoryError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            # Outside the except block: the exception's traceback no longer pins the failed pass's tensors.
            if reset is not None:
                reset()
            _free_cached_memory()
            if not self.automatic or self.size == 1:
                raise self._error(reason, len(chunks[0]))
            self.size = max(1, self.size // 2)
            self.halvings += 1

    def _error(self, reason: str, size: int) -> OutOfMemory:
        if self.automatic:
            message = f"{self.what} ran out of memory even with 1 rollout per pass ({reason})"
            hints = list(self.hints)
        else:
            message = f"{self.what} ran out of memory with {self.setting} {size} ({reason})"
            lower = f"lower {self.setting} (or leave it out to use the largest size that fits)"
            hints = [lower, *self.hints]
        return OutOfMemory(message, hint="; ".join(hints) if hints else None)
