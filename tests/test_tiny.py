"""Tiny model builders: tokenizers round-trip; models load from a local folder and generate (with images)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ares_train.tiny import build_tiny_text_model, build_tiny_vlm, train_tokenizer  # noqa: E402

TEXTS = ["Hello world. 40°C café 日本 ✓ — ok", "So the answer is (B).\nNext line"]


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_tokenizer_round_trips_and_has_chat_template(kind: str) -> None:
    tok = train_tokenizer(kind=kind)
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "<|user|>\nHi?<|endoftext|>\n<|assistant|>\n"
    if kind == "sentencepiece":  # byte fallback: an unseen character becomes <0xNN> pieces
        assert "<0xE6>" in tok.convert_ids_to_tokens(tok("日", add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("kind,arch", [("bpe", "Qwen2ForCausalLM"), ("sentencepiece", "LlamaForCausalLM")])
def test_tiny_text_model_loads_and_generates(tmp_path: Path, kind: str, arch: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_text_model(tmp_path / kind, tokenizer_kind=kind)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == arch and model.config.hidden_size == 64
    assert tok.padding_side == "left"
    enc = tok(["a question", "x"], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 5)


def test_tiny_vlm_loads_and_generates_with_an_image(tmp_path: Path) -> None:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = build_tiny_vlm(tmp_path / "vlm")
    model = AutoModelForImageTextToText.from_pretrained(path)
    proc = AutoProcessor.from_pretrained(path)
    prompt = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}],
        tokenize=False, add_generation_prompt=True)
    enc = proc(images=[Image.new("RGB", (40, 30), (255, 0, 0))], text=[prompt], return_tensors="pt")
    image_id = model.config.image_token_id
    assert int((enc["input_ids"] == image_id).sum()) == 4  # 28x28 image, 14x14 patches
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4
    # the image matters: a different image changes the logits
    other = proc(images=[Image.new("RGB", (40, 30), (0, 0, 255))], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**enc).logits, model(**other).logits)


def test_weights_fingerprint_folder_model_and_adapter(tmp_path: Path) -> None:
    from ares_train.config import LoraOptions
    from ares_train.modeling import load_policy, weights_fingerprint

    path = build_tiny_text_model(tmp_path / "m", tokenizer_kind="sentencepiece")
    policy = load_policy(path)
    fp = weights_fingerprint(path)
    assert weights_fingerprint(policy) == fp == weights_fingerprint(policy.model)
    with torch.no_grad():
        next(policy.model.parameters()).add_(1e-3)
    assert weights_fingerprint(policy) != fp
    lora = load_policy(path, lora=LoraOptions(r=4))
    with torch.no_grad():  # make the adapter non-trivial
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    lora.model.save_pretrained(tmp_path / "adapter")
    adapter_fp = weights_fingerprint(lora)
    assert adapter_fp == weights_fingerprint(tmp_path / "adapter") != fp
    assert weights_fingerprint(load_policy(tmp_path / "adapter")) == adapter_fp


def _tiny_qwen2_vl(out: Path) -> Path:
    """A Qwen2-VL folder as the hub ships one (config, weights, tokenizer, image processor), tiny."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    tok = train_tokenizer(kind="bpe")
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    start, end, image, video = tok.convert_tokens_to_ids(specials)
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.eos_token_id,
                eos_token_id=tok.eos_token_id, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=image, video_token_id=video,
                        vision_start_token_id=start, vision_end_token_id=end)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(out)
    return out


def test_qwen2_vl_folder_without_torchvision_is_a_clear_dependency_error(tmp_path: Path) -> None:
    """transformers' Qwen2-VL processor needs torchvision (its video processor): say so, no traceback."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the processor loads")
    from ares_data.errors import DependencyError
    from ares_train.modeling import load_policy

    model = _tiny_qwen2_vl(tmp_path / "qwen2vl")
    with pytest.raises(DependencyError, match="(?i)torchvision") as err:
        load_policy(model)
    assert "pip install torchvision" in (err.value.hint or "")
