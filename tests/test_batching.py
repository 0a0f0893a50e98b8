"""Micro-batch selection (ares_train/ppo/batching.py): length grouping, halving on out-of-memory (injected:
there is no OOM on CPU), the errors that name the setting to change."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ares_train.ppo.batching import MicroBatcher, OutOfMemory, group_by_length  # noqa: E402


def test_group_by_length_sorts_longest_first_and_keeps_every_item() -> None:
    items = ["a", "b", "c", "d", "e"]
    lengths = [3, 9, 1, 9, 5]
    chunks = group_by_length(items, lengths, 2)
    assert chunks == [["b", "d"], ["e", "a"], ["c"]]  # ties keep their order
    assert sorted(x for c in chunks for x in c) == items
    assert group_by_length(items, lengths, 10) == [["b", "d", "e", "a", "c"]]
    with pytest.raises(ValueError, match=">= 1"):
        group_by_length(items, lengths, 0)


def test_group_by_length_cuts_padding() -> None:
    lengths = [10, 200, 12, 190, 11, 205, 9, 198]

    def padded(chunks: list[list[int]]) -> int:
        return sum(len(c) * max(lengths[i] for i in c) for c in chunks)

    plain = [list(range(i, i + 4)) for i in range(0, 8, 4)]
    assert padded(group_by_length(list(range(8)), lengths, 4)) < padded(plain) * 0.6


class FakeDevice:
    """A pass that runs out of memory above `fits` items per micro-batch (on its `fail_at`-th chunk)."""

    def __init__(self, fits: int, fail_at: int = 0) -> None:
        self.fits, self.fail_at = fits, fail_at
        self.tried: list[int] = []
        self.resets = 0
        self.accumulated: list[str] = []  # what a gradient buffer would hold

    def run(self, chunks: list[list[str]]) -> int:
        size = max(len(c) for c in chunks)
        self.tried.append(size)
        for j, chunk in enumerate(chunks):
            if len(chunk) > self.fits and j >= self.fail_at:
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(chunk)} GiB\nmore")
            self.accumulated += chunk
        return len(chunks)

    def reset(self) -> None:
        self.resets += 1
        self.accumulated = []


def test_automatic_halves_on_oom_and_remembers_the_size() -> None:
    items = [f"r{i}" for i in range(16)]
    lengths = list(range(16))
    dev = FakeDevice(fits=3)
    mb = MicroBatcher(16)
    assert mb.run(items, lengths, dev.run, dev.reset) == 8  # 16 items in micro-batches of 2
    assert dev.tried == [16, 8, 4, 2]
    assert mb.size == 2 and mb.halvings == 3 and dev.resets == 3
    assert sorted(dev.accumulated) == sorted(items)  # each item once: partial passes were reset
    dev.tried, dev.accumulated = [], []
    mb.run(items, lengths, dev.run, dev.reset)
    assert dev.tried == [2]  # remembered for the rest of the run


def test_oom_after_partial_accumulation_is_reset() -> None:
    items = list("abcdefgh")
    dev = FakeDevice(fits=2, fail_at=1)  # the first chunk fits whatever its size, the second does not
    mb = MicroBatcher(4)
    mb.run(items, [1] * 8, dev.run, dev.reset)
    assert dev.tried == [4, 2] and dev.resets == 1
    assert sorted(dev.accumulated) == items


def test_fixed_size_oom_names_the_setting() -> None:
    mb = MicroBatcher(16, fixed=4, setting="--micro-batch-size", hints=["pass --gradient-checkpointing"])
    dev = FakeDevice(fits=2)
    with pytest.raises(OutOfMemory) as exc:
        mb.run(list(range(16)), [1] * 16, dev.run, dev.reset)
    assert dev.tried == [4] and dev.resets == 1  # no search when the user fixed the size
    assert "--micro-batch-size 4" in str(exc.value) and "Tried to allocate 4 GiB" in str(exc.value)
    assert "lower --micro-batch-size" in exc.value.hint and "--gradient-checkpointing" in exc.value.hint


def test_automatic_gives_up_at_one_with_the_ways_out() -> None:
    mb = MicroBatcher(4, what="scoring", hints=["use --lora-r"])
    dev = FakeDevice(fits=0)
    with pytest.raises(OutOfMemory, match="scoring ran out of memory even with 1 rollout") as exc:
        mb.run(list(range(4)), [1] * 4, dev.run)
    assert dev.tried == [4, 2, 1]
    assert exc.value.hint == "use --lora-r"


def test_fixed_size_above_the_limit_is_capped_and_other_errors_pass_through() -> None:
    assert MicroBatcher(8, fixed=32).size == 8
    with pytest.raises(ValueError):
        MicroBatcher(0)

    def broken(chunks: list[list[int]]) -> None:
        raise RuntimeError("not memory")

    with pytest.raises(RuntimeError, match="not memory"):
        MicroBatcher(4).run([1, 2], [1, 1], broken)
