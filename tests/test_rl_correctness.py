"""The RL stage optimises what the paper describes: each test here failed on the code before the fix.

- the old log-probs of every buffer are the sampling policy's, not an already-updated policy's;
- a bf16-saved checkpoint trained in full really moves (float32 master weights + autocast);
- the value model is saved and carried; value clipping is an option that is off by default;
- micro-batch losses are token-weighted (results do not depend on micro_batch_size);
- the LR does not decay to 0 inside a round; the reference is what the run names;
- sequence-level / mean-normalised rewards for the ablations; a sentence ending in an invalid UTF-8 byte
  gets its reward on the token holding that byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ares_data.store import Store
from tests.helpers import train
from tests.ppo_fixtures import publish_round


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ares_train.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("rl-text") / "model")


@pytest.fixture(scope="module")
def bf16_model(tmp_path_factory: pytest.TempPathFactory, text_model: Path) -> Path:
    from ares_train.checkpoint import save_model
    from ares_train.modeling import load_policy

    out = tmp_path_factory.mktemp("rl-bf16") / "model"
    policy = load_policy(text_model)
    save_model(policy.model, out, save_dtype="bfloat16")
    policy.tokenizer.save_pretrained(out)
    return out


def _cfg(model: Path, rat: Any, sc: Any, out: Path, **kw: Any) -> Any:
    from ares_train.ppo.run import PPORunConfig

    values: dict[str, Any] = dict(model=str(model), rationales=rat.ref, scores=sc.ref, output_dir=str(out),
                                  ppo_epochs=1, mini_batch_size=4, save_checkpoints=False)
    values.update(kw)
    return PPORunConfig(**values)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}


def test_later_buffers_take_the_ratio_against_the_sampling_policy(store_dir: Path, text_model: Path,
                                                                  tmp_path: Path) -> None:
    """With two buffers, buffer 2's old log-probs are those of the model that sampled the rollouts."""
    from ares_train.modeling import load_policy
    from ares_train.ppo.run import build_trainer

    rat, sc = publish_round(Store(store_dir), text_model, n_problems=4, k=2, failed=0)
    cfg = _cfg(text_model, rat, sc, tmp_path / "o", buffer_size=4, lr=1e-2)
    trainer, _, _, _ = build_trainer(cfg, Store(store_dir))
    seen = []
    score = trainer._score_buffer
    trainer._score_buffer = lambda first, rows: seen.append(score(first, rows)) or seen[-1]
    trainer.train()
    assert len(seen) == 2
    initial = load_policy(text_model).model
    second = seen[1]
    for i, r in enumerate(second.rows):
        ids = torch.cat([r.prompt_ids, r.response_ids])[None]
        with torch.no_grad():
            logits = initial(input_ids=ids).logits[0, r.prompt_ids.shape[0] - 1 : -1]
        want = torch.log_softmax(logits.float(), -1).gather(-1, r.response_ids[:, None])[:, 0]
        n = r.response_ids.shape[0]
        assert torch.allclose(second.logprobs[i, :n].cpu(), want, atol=1e-4)


def test_full_fine_tuning_of_a_bf16_checkpoint_moves_the_weights(store_dir: Path, bf16_model: Path,
                                                                 tmp_path: Path) -> None:
    from ares_train.ppo.run import run_ppo

    rat, sc = publish_round(Store(store_dir), bf16_model, n_problems=4, k=2, failed=0)
    out = tmp_path / "ppo"
    run_ppo(_cfg(bf16_model, rat, sc, out, lr=1e-5, ppo_epochs=2, mini_batch_size=2), Store(store_dir))
    before, after = _weights(bf16_model), _weights(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"  # kept for the next round
    trained = [k for k in before if "embed_tokens" not in k]  # unused token rows get no gradient
    changed = sum(int((before[k] != after[k]).sum()) for k in trained)
    total = sum(before[k].numel() for k in trained)
    assert changed / total > 0.9, f"only {changed / total:.1%} of the weights moved"
    # the original dtype is an explicit export
    run_ppo(_cfg(bf16_model, rat, sc, tmp_path / "bf", save_dtype="original"), Store(store_dir))
    assert json.loads((tmp_path / "bf" / "config.json").read_text())["dtype"] == "bfloat16"


def test_value_model_is_saved_and_carried(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    from ares_train.ppo.run import build_trainer, run_ppo
    from ares_train.ppo.value import ValueModel

    rat, sc = publish_round(Store(store_dir), text_model, n_problems=2, k=2, failed=0)
    first = run_ppo(_cfg(text_model, rat, sc, tmp_path / "r1", lr=1e-3), Store(store_dir))
    value_dir = first.output_dir / "value"
    saved = ValueModel.load(value_dir)
    assert saved.score.weight.abs().sum() > 0  # the head learned something (it starts at zero)
    manifest = json.loads((first.output_dir / "ares-checkpoint.json").read_text())
    assert manifest["value_model"]["saved"] == "value"
    trainer, _, _, _ = build_trainer(_cfg(text_model, rat, sc, tmp_path / "r2", value_model=str(value_dir)),
                                     Store(store_dir))
    carried = trainer.accelerator.unwrap_model(trainer.model).value_model
    assert torch.equal(carried.score.weight.detach().cpu(), saved.score.weight.detach())
    want = dict(saved.backbone.named_parameters())
    for name, p in carried.backbone.named_parameters():
        assert torch.equal(p.detach().cpu(), want[name].detach())


def test_value_clipping_is_an_option_off_by_default() -> None:
    from ares_train.ppo.algorithm import ppo_loss
    from ares_train.ppo.run import PPORunConfig

    assert PPORunConfig().cliprange_value == 0.0
    mask = torch.ones(1, 3, dtype=torch.bool)
    zeros = torch.zeros(1, 3)
    vpred, old_values, returns = torch.tensor([[1.0, 1.0, 1.0]]), zeros, torch.tensor([[2.0, 2.0, 2.0]])
    plain = ppo_loss(zeros, zeros, zeros, vpred, old_values, returns, mask, vf_coef=1.0)
    clipped = ppo_loss(zeros, zeros, zeros, vpred, old_values, returns, mask, vf_coef=1.0,
                       cliprange_value=0.2)
    assert plain.vf_loss.item() == pytest.approx(0.5)  # (1 - 2)^2 / 2
    assert clipped.vf_loss.item() == pytest.approx(0.5 * 1.8**2)  # the clipped prediction 0.2 is further off
    assert plain.vf_clipfrac.item() == 0 and clipped.vf_clipfrac.item() == 1


def test_micro_batch_losses_add_up_to_the_token_mean_of_the_mini_batch() -> None:
    from ares_train.ppo.algorithm import ppo_loss

    torch.manual_seed(0)
    lengths = [2, 7, 3, 5]
    mask = torch.zeros(4, 7, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    new, old, adv, vpred, vals, ret = (torch.randn(4, 7) for _ in range(6))
    whole = ppo_loss(new, old, adv, vpred, vals, ret, mask).loss
    n_tokens = mask.sum()
    parts = sum(ppo_loss(new[i:i + 1], old[i:i + 1], adv[i:i + 1], vpred[i:i + 1], vals[i:i + 1],
                         ret[i:i + 1], mask[i:i + 1], n_tokens=n_tokens).loss for i in range(4))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)
    # and what the log reports for the step is the mini-batch's loss, however it was split
    from ares_train.ppo.algorithm import mean_loss

    halves = [ppo_loss(new[i:i + 2], old[i:i + 2], adv[i:i + 2], vpred[i:i + 2], vals[i:i + 2],
                       ret[i:i + 2], mask[i:i + 2], n_tokens=n_tokens) for i in (0, 2)]
    logged, full = mean_loss(halves), ppo_loss(new, old, adv, vpred, vals, ret, mask)
    for field in ("loss", "pg_loss", "vf_loss"):
        assert float(getattr(logged, field)) == pytest.approx(float(getattr(full, field)), rel=1e-6)


def test_lr_is_constant_within_a_round_by_default(store_dir: Path, text_model: Path, tmp_path: Path) -> None:
    from ares_train.ppo.run import read_log, run_ppo

    rat, sc = publish_round(Store(store_dir), text_model, n_problems=2, k=2, failed=0)
    run_ppo(_cfg(text_model, rat, sc, tmp_path / "o", ppo_epochs=3, mini_batch_size=2, lr=3e-5),
            Store(store_dir))
    assert [m["lr"] for m in read_log(tmp_path / "o")] == pytest.approx([3e-5] * 3)


def test_ppo_says_which_reference_it_used(store_dir: Path, text_model: Path, bf16_model: Path,
                                          tmp_path: Path) -> None:
    rat, sc = publish_round(Store(store_dir), text_model, n_problems=2, k=2, failed=0)
    base = ["ppo", "--model", text_model, "--rationales", rat.ref, "--scores", sc.ref, "--ppo-epochs", "1"]
    r = train([*base, "-o", tmp_path / "a"])
    assert r.exit_code == 0, r.output
    assert f"reference: {text_model} (frozen copy of the initial policy)" in r.stderr
    r = train([*base, "-o", tmp_path / "b", "--ref-model", bf16_model, "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["reference"]["model"] == str(bf16_model) and r.json()["reference"]["how"] == "loaded"
    manifest = json.loads((tmp_path / "b" / "ares-checkpoint.json").read_text())
    assert manifest["reference"]["model"] == str(bf16_model)


def test_an_adapter_whose_base_is_the_reference_uses_the_adapter_disabled_policy(
    store_dir: Path, text_model: Path, tmp_path: Path
) -> None:
    from ares_train.modeling import load_policy
    from ares_train.ppo.run import resolve_reference, run_ppo

    rat, sc = publish_round(Store(store_dir), text_model, n_problems=2, k=2, failed=0)
    adapter = run_ppo(_cfg(text_model, rat, sc, tmp_path / "lora", lora_r=4), Store(store_dir)).output_dir
    policy = load_policy(adapter, trainable=True)
    ref = resolve_reference(_cfg(adapter, rat, sc, tmp_path / "x", ref_model=str(text_model)), policy)
    assert ref.module is None and ref.how == "adapter-disabled policy"  # no second copy of the weights
    ref = resolve_reference(_cfg(adapter, rat, sc, tmp_path / "x"), policy)
    assert ref.module is not None and ref.how == "loaded"  # base + the adapter as it starts


def test_sequence_level_and_mean_normalised_rewards() -> None:
    from ares_train.ppo.rewards import shape_rewards

    tokens = [0.0, 0.3, 0.0, -0.2, 0.0, 0.4]  # three sentences ending at tokens 1, 3, 5
    assert shape_rewards(tokens, 3) == tokens
    assert shape_rewards(tokens, 3, level="sequence") == pytest.approx([0, 0, 0, 0, 0, 0.5])
    assert shape_rewards(tokens, 3, normalization="mean") == pytest.approx([t / 3 for t in tokens])
    assert shape_rewards(tokens, 3, level="sequence", normalization="mean") == pytest.approx(
        [0, 0, 0, 0, 0, 0.5 / 3])
    with pytest.raises(ValueError, match="reward level"):
        shape_rewards(tokens, 3, level="token")


def test_sequence_level_rollouts_carry_the_total_on_the_last_token(store_dir: Path, text_model: Path) -> None:
    from ares_train.modeling import load_policy
    from ares_train.ppo.data import load_rollouts

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model, n_problems=2, k=2, failed=0)
    policy = load_policy(text_model)
    per_sentence = load_rollouts(store, rat, sc, policy).rollouts
    per_sequence = load_rollouts(store, rat, sc, policy, reward_level="sequence").rollouts
    for a, b in zip(per_sentence, per_sequence, strict=True):
        assert b.rewards[:-1].abs().sum() == 0
        assert float(b.rewards[-1]) == pytest.approx(float(a.rewards.sum()), abs=1e-6)


def test_a_sentence_ending_in_an_invalid_byte_is_rewarded_on_that_token() -> None:
    """A byte-level token that is an invalid UTF-8 byte on its own (decodes to U+FFFD for good) holds that
    character; it is not an incomplete character that the next token completes."""
    from ares_train.ppo.rewards import align_sentence_rewards
    from ares_train.tiny import train_tokenizer

    tok = train_tokenizer(None, "bpe", 300)
    # a byte >= 0x80 on its own (the tokenizer's byte alphabet): followed by ASCII it stays invalid UTF-8
    bad = next(i for t, i in sorted(tok.get_vocab().items()) if len(t) == 1 and tok.decode([i]) == "\ufffd")
    ids = tok("Hi", add_special_tokens=False)["input_ids"] + [bad] + tok(" Yo.", add_special_tokens=False)[
        "input_ids"]
    text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert text.startswith("Hi\ufffd")
    cut = text.index("\ufffd") + 1
    sentences = [{"text": text[:cut], "start": 0, "end": cut}, {"text": text[cut:], "start": cut,
                                                                 "end": len(text)}]
    aligned = align_sentence_rewards(tok, text, sentences, [1.0, 0.5], token_ids=ids)
    assert aligned.end_tokens[0] == ids.index(bad)
    assert aligned.rewards[ids.index(bad)] == pytest.approx(0.5)


def test_a_gathered_state_dict_is_what_gets_saved(text_model: Path, tmp_path: Path) -> None:
    """Under FSDP / DeepSpeed the module's own parameters are shards; the save writes the gathered full
    state dict passed to it (the wrapper's keys split by prefix), never the module's shards."""
    from ares_train.checkpoint import save_model
    from ares_train.modeling import load_policy
    from ares_train.ppo.run import _part
    from ares_train.ppo.value import ValueModel

    policy = load_policy(text_model, trainable=True)
    value = ValueModel.from_causal_lm(load_policy(text_model, trainable=True).model)
    full = {f"policy.{k}": v + 1.0 for k, v in policy.model.state_dict().items()}
    full.update({f"value_model.{k}": v - 1.0 for k, v in value.state_dict().items()})
    save_model(policy.model, tmp_path / "p", state_dict=_part(full, "policy."))
    value.save(tmp_path / "v", state_dict=_part(full, "value_model."))
    saved = _weights(tmp_path / "p")
    for k, v in policy.model.state_dict().items():
        if k in saved:
            assert torch.equal(saved[k], v + 1.0)
    loaded = ValueModel.load(tmp_path / "v")
    assert torch.equal(loaded.score.weight, value.score.weight - 1.0)
    for k, v in value.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[k], v - 1.0)


def test_training_refuses_datasets_whose_bytes_changed(store_dir: Path, text_model: Path,
                                                      tmp_path: Path) -> None:
    """ppo and sft record the fingerprints of what they train on: a flipped byte that keeps the size, rows
    and schema (so the cheap read check passes) is caught before training."""
    from ares_data.integrity import DATA_FILE

    rat, sc = publish_round(Store(store_dir), text_model, n_problems=2, k=2, failed=0)
    path = rat.path / DATA_FILE
    blob = bytearray(path.read_bytes())
    blob[blob.index(b"So the answer is")] ^= 0x01  # every fixture response says it
    path.write_bytes(bytes(blob))
    r = train(["ppo", "--model", text_model, "--rationales", rat.ref, "--scores", sc.ref,
               "-o", tmp_path / "p"])
    assert r.exit_code == 1 and f"{rat.ref} is damaged" in r.stderr, r.output
    r = train(["sft", "--model", text_model, "--rationales", rat.ref, "-o", tmp_path / "s"])
    assert r.exit_code == 1 and f"{rat.ref} is damaged" in r.stderr, r.output
    assert not (tmp_path / "p" / "ares-checkpoint.json").exists()
