"""Micro-batch selection (ares_train/ppo/batching.py): length grouping, halving on out-of-memory (injected:
there is no OOM on CPU), the errors that name the setting to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


# ---- the trainer on a tiny model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ares_train.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("batching") / "model")


def _trainer(store_dir: Path, model: Path, tmp_path: Path, **settings: Any) -> Any:
    from ares_data.store import Store
    from ares_train.ppo.run import PPORunConfig, build_trainer
    from tests.ppo_fixtures import publish_round

    rat, sc = publish_round(Store(store_dir), model, n_problems=4, k=2, failed=0)  # 8 rollouts
    cfg = PPORunConfig(model=str(model), rationales=rat.ref, scores=sc.ref, output_dir=str(tmp_path / "o"),
                       save_checkpoints=False, **settings)  # fmt: skip
    return build_trainer(cfg, Store(store_dir))[0]


def test_automatic_micro_batches_give_the_big_batch_loss_and_gradients(
    store_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """One optimizer step over 8 rollouts: one pass of 8 against automatic micro-batching that meets
    (injected) out-of-memory errors at 8 and, after one micro-batch's gradients were accumulated, at 4."""
    trainer = _trainer(store_dir, tiny_model, tmp_path, mini_batch_size=8, max_grad_norm=0.0)
    trainer.behaviour = trainer._behaviour()
    buf = trainer._score_buffer(0, trainer.rollouts)
    idx = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    loss_fn, accumulate = trainer._loss, trainer._accumulate
    seen: dict[str, Any] = {}

    def loss(inputs: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        rows, seen["chunk"] = inputs["input_ids"].shape[0], seen["chunk"] + 1
        if seen["oom"] and (rows > 4 or (rows > 2 and seen["chunk"] > 1)):
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        out, new_lp = loss_fn(inputs, *args, **kwargs)
        seen["losses"].append(out.loss.detach())
        return out, new_lp

    def one_attempt(buf: Any, chunks: list[list[int]], n_tokens: int) -> Any:
        seen.update(chunk=0, losses=[], sizes=[len(c) for c in chunks])
        return accumulate(buf, chunks, n_tokens)

    def snapshot(*args: Any, **kwargs: Any) -> None:  # instead of the optimizer step: weights stay put
        seen["grads"] = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    trainer._loss, trainer._accumulate, trainer.optimizer.step = loss, one_attempt, snapshot
    results = []
    for batcher, oom in ((MicroBatcher(8, fixed=8), False), (MicroBatcher(8), True)):
        trainer.train_batches, seen["oom"] = batcher, oom
        trainer._mini_batch(buf, idx)
        results.append((torch.stack(seen["losses"]).sum(), seen["grads"], seen["sizes"]))
    (big_loss, big_grads, big_sizes), (auto_loss, auto_grads, auto_sizes) = results
    assert big_sizes == [8] and auto_sizes == [2, 2, 2, 2] and trainer.train_batches.halvings == 2
    assert torch.allclose(auto_loss, big_loss, rtol=1e-5, atol=1e-7)
    assert big_grads.keys() == auto_grads.keys() and len(big_grads) > 10
    assert any(g.abs().sum() > 0 for g in big_grads.values())
    for name, g in big_grads.items():
        assert torch.allclose(auto_grads[name], g, rtol=1e-4, atol=1e-7), name


def test_gradient_checkpointing_reaches_policy_and_value_model(
    store_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    trainer = _trainer(store_dir, tiny_model, tmp_path, gradient_checkpointing=True)
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    assert wrapper.policy.is_gradient_checkpointing
    assert wrapper.value_model.backbone.is_gradient_checkpointing


def test_cli_out_of_memory_names_the_setting(
    store_dir: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ares_data.store import Store
    from ares_train.ppo.trainer import SentencePPOTrainer
    from tests.helpers import train
    from tests.ppo_fixtures import publish_round

    def no_memory(self: Any, *args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SentencePPOTrainer, "_loss", no_memory)
    rat, sc = publish_round(Store(store_dir), tiny_model, n_problems=2, k=2)
    args = ["ppo", "--model", tiny_model, "--rationales", rat.ref, "--scores", sc.ref, "--mini-batch-size", 2,
            "--ppo-epochs", 1]  # fmt: skip
    fixed = train([*args, "-o", tmp_path / "a", "--micro-batch-size", 2])
    assert fixed.exit_code == 1
    assert "Error: the PPO update ran out of memory with --micro-batch-size 2" in fixed.output
    assert "Tried to allocate 2.00 GiB" in fixed.output and "lower --micro-batch-size" in fixed.output
    assert "unexpected" not in fixed.output
    automatic = train([*args, "-o", tmp_path / "b", "--gradient-checkpointing"])
    assert automatic.exit_code == 1
    assert "ran out of memory even with 1 rollout per pass" in automatic.output
    assert "--lora-r" in automatic.output


def test_ppo_help_lists_the_memory_options() -> None:
    from tests.helpers import train

    res = train(["ppo", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for flag in ("--gradient-checkpointing", "--micro-batch-size", "--forward-batch-size"):
        assert flag in res.output
    assert "0 = automatic" in res.output


def test_models_load_with_sdpa_attention_or_their_default(tiny_model: Path) -> None:
    from ares_train.modeling import _from_pretrained, load_policy

    assert load_policy(tiny_model, trainable=True).model.config._attn_implementation == "sdpa"

    class NoSdpa:
        calls: list[dict[str, Any]] = []

        @classmethod
        def from_pretrained(cls, base: str, **kwargs: Any) -> str:
            cls.calls.append(kwargs)
            if "attn_implementation" in kwargs:
                raise ValueError("NoSdpa does not support an attention implementation through SDPA")
            return "loaded"

    assert _from_pretrained(NoSdpa, "x", torch.float32, half=True) == "loaded"
    assert NoSdpa.calls == [{"dtype": torch.float32, "attn_implementation": "sdpa"}, {"dtype": torch.float32}]


def test_sft_pads_less(tiny_model: Path) -> None:
    """Text SFT batches rows of similar lengths (SDPA); padding-free rows where FlashAttention keeps them
    apart; VLM rows (tokenized by the collator) keep TRL's defaults."""
    from types import SimpleNamespace

    from ares_train.modeling import load_policy
    from ares_train.sft import SFTConfig, padding_options, trl_args

    policy = load_policy(tiny_model, trainable=True)
    args = trl_args(SFTConfig(model=str(tiny_model), corrections="c", output_dir="o"), policy)
    assert args.train_sampling_strategy == "group_by_length" and not args.padding_free
    flash = SimpleNamespace(is_vlm=False, model=SimpleNamespace(config=SimpleNamespace(
        _attn_implementation="flash_attention_2")))  # fmt: skip
    assert padding_options(flash) == {"padding_free": True}
    assert padding_options(SimpleNamespace(is_vlm=True, model=flash.model)) == {}


def test_reference_pass_is_skipped_only_when_the_reference_is_the_initial_policy(
    store_dir: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from ares_train.tiny import build_tiny_text_model

    other = build_tiny_text_model(tmp_path / "other", seed=1)
    for ref_model, same in ((None, True), (str(other), False)):
        trainer = _trainer(store_dir, tiny_model, tmp_path, ref_model=ref_model)
        assert trainer.reference.initial_policy is same
        calls: list[int] = []
        trainer.ref_model.register_forward_hook(lambda *_, seen=calls: seen.append(1))
        behaviour = trainer._behaviour()
        assert len(calls) == (0 if same else 1)  # 8 rollouts: one no-grad batch
        pairs = list(zip(behaviour["logprobs"], behaviour["ref_logprobs"], strict=True))
        assert len(pairs) == 8
        assert all(torch.equal(a, b) for a, b in pairs) is same
