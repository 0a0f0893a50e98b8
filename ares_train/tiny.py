"""Tiny random models built from configs, for tests, benchmarks and offline demos (no hub downloads).

- `train_tokenizer(texts, kind)`: a byte-level BPE tokenizer (GPT-2/Qwen style) or a SentencePiece-style
  Unigram tokenizer with Metaspace pre-tokenization and byte fallback (Llama style: `vocab_size` learned
  pieces + 256 `<0xNN>` byte pieces), trained in-process with `tokenizers`,
  with pad/eos special tokens and a small chat template.
- `build_tiny_text_model(out_dir, tokenizer_kind=...)`: a 2-layer, hidden-64 causal LM (Qwen2 architecture for
  "bpe", Llama for "sentencepiece") saved with its tokenizer; `AutoModelForCausalLM.from_pretrained` loads it.
- `build_tiny_vlm(out_dir)`: a tiny LLaVA-style model (CLIP vision tower + projector + Llama text model) and
  its `LlavaProcessor`, loadable with `AutoModelForImageTextToText` / `AutoProcessor`.

LLaVA rather than Qwen2-VL: transformers' `Qwen2VLProcessor` insists on a video processor, which needs
torchvision (not a dependency here); LLaVA's processor needs only a CLIP image processor (PIL backend).

The weights are random, so generations are gibberish; what matters is that every code path (tokenization,
generation, images, training, saving, loading) is the real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

TokenizerKind = Literal["bpe", "sentencepiece"]

PAD, EOS, UNK, BOS = "<|pad|>", "<|endoftext|>", "<unk>", "<s>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
IMAGE_TOKEN = "<image>"

# One message a line: "<|role|>\ncontent<|endoftext|>\n"; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|endoftext|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_FALLBACK_TEXT = [
    "The quick brown fox jumps over the lazy dog. So the answer is (A).",
    "Magnets attract when opposite poles face each other; like poles repel.",
    "Question: Which object has more thermal energy? Options: (A) cold (B) hot. Answer: B",
    "0123456789 +-*/=()[]{}<>.,;:!?'\"%$#@&_ café naïve 40°C µm ü é ñ — “quotes” ✓",
]


def default_corpus() -> list[str]:
    """Training text for tiny tokenizers: the shipped ScienceQA-format sample, plus a fallback set."""
    texts = list(_FALLBACK_TEXT)
    try:
        from ares_data.sample import RATIONALES, SAMPLE_DIR

        problems = json.loads((SAMPLE_DIR / "problems.json").read_text(encoding="utf-8"))
        for p in problems.values():
            texts += [p.get("question") or "", " ".join(p.get("choices") or []), p.get("hint") or "",
                      p.get("lecture") or "", p.get("solution") or ""]
        for line in RATIONALES.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line).get("text", ""))
    except (ImportError, OSError, ValueError):
        pass
    return [t for t in texts if t]


def train_tokenizer(
    texts: Iterable[str] | None = None,
    kind: TokenizerKind = "bpe",
    vocab_size: int = 512,
    *,
    extra_special_tokens: list[str] | None = None,
    bos: bool = False,
) -> Any:
    """Train a tokenizer in-process; a `PreTrainedTokenizerFast` with pad/eos, left padding, chat template.

    `bos=True` adds a `<s>` BOS token that encoding with special tokens (the default) prepends, as Llama,
    Mistral and Gemma tokenizers do; `add_special_tokens=False` leaves it out."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts) if texts is not None else default_corpus()
    specials = [PAD, EOS, UNK, *ROLE_TOKENS, *(extra_special_tokens or []), *([BOS] if bos else [])]
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "sentencepiece":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=UNK,
                                          show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: use 'bpe' or 'sentencepiece'")
    tok.train_from_iterator(corpus, trainer=trainer)
    if kind == "sentencepiece":
        _add_byte_fallback(tok)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, bos_token=BOS if bos else None,
        additional_special_tokens=[*ROLE_TOKENS, *(extra_special_tokens or [])], padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _add_byte_fallback(tok: Any) -> None:
    """Give a trained Unigram model Llama-style byte fallback: <0xNN> pieces for characters it never saw,
    so any text round-trips (and a multi-byte character may be split across tokens, as in Llama)."""
    from tokenizers import decoders, models

    state = json.loads(tok.to_str())["model"]
    vocab = [(piece, score) for piece, score in state["vocab"]]
    floor = min(score for _, score in vocab) - 1.0
    vocab += [(f"<0x{b:02X}>", floor) for b in range(256)]
    tok.model = models.Unigram(vocab, unk_id=state["unk_id"], byte_fallback=True)
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])


def _text_config(arch: str, tokenizer: Any, hidden_size: int = 64, num_layers: int = 2) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    return cls(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=_bos_id(tokenizer), tie_word_embeddings=False,
    )


def _set_generation_defaults(model: Any, tokenizer: Any) -> None:
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = (
        tokenizer.pad_token_id, tokenizer.eos_token_id, _bos_id(tokenizer))


def _bos_id(tokenizer: Any) -> int:
    """The BOS id: the tokenizer's own when it has one (`bos=True`), else EOS (as GPT-2/Qwen do)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def build_tiny_text_model(
    out_dir: str | Path,
    *,
    texts: Iterable[str] | None = None,
    tokenizer_kind: TokenizerKind = "bpe",
    seed: int = 0,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    bos: bool = False,
) -> Path:
    """Save a tiny random causal LM + tokenizer to `out_dir` (Qwen2 for "bpe", Llama for "sentencepiece").

    `hidden_size` (a multiple of 4) and `num_layers` make bigger models for benchmarks; `bos=True` gives the
    tokenizer a BOS token that it prepends by default (Llama style, see `train_tokenizer`)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, tokenizer_kind, vocab_size, bos=bos)
    torch.manual_seed(seed)
    config = _text_config("qwen2" if tokenizer_kind == "bpe" else "llama", tokenizer, hidden_size, num_layers)
    model = AutoModelForCausalLM.from_config(config)
    _set_generation_defaults(model, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_vlm(
    out_dir: str | Path,
    *,
    texts: Iterable[str] | None = None,
    seed: int = 0,
    image_size: int = 28,
    patch_size: int = 14,
    vocab_size: int = 512,
) -> Path:
    """Save a tiny random LLaVA-style VLM + `LlavaProcessor` to `out_dir`.

    A 28x28 image with 14x14 patches gives 4 image tokens per image (the CLS feature is dropped).
    """
    import torch
    from transformers import AutoModelForImageTextToText, CLIPVisionConfig, LlavaConfig, LlavaProcessor

    try:  # the PIL backend: no torchvision needed (and no warning about its absence)
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor

    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, "bpe", vocab_size, extra_special_tokens=[IMAGE_TOKEN])
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=_text_config("llama", tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(image_size // patch_size) ** 2, vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    _set_generation_defaults(model, tokenizer)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m ares_train.tiny OUT_DIR`: save a tiny random model to try the pipeline offline."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m ares_train.tiny",
        description="Save a tiny random model (2 layers, hidden 64) with a tokenizer trained in-process, to "
        "try ares-train offline on a CPU (no download). Its weights are random, so it writes gibberish: "
        "for real training pass a hub id (e.g. Qwen/Qwen2-VL-2B-Instruct) on a GPU machine instead.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the model to (use it as --model)")
    parser.add_argument("--tokenizer", choices=["bpe", "sentencepiece"], default="bpe",
                        help="bpe: Qwen2 with byte-level BPE; sentencepiece: Llama with Unigram pieces")
    parser.add_argument("--vlm", action="store_true", help="a tiny LLaVA (CLIP vision tower + Llama) instead")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.vlm:
        out = build_tiny_vlm(args.out_dir, seed=args.seed)
    else:
        out = build_tiny_text_model(args.out_dir, tokenizer_kind=args.tokenizer, seed=args.seed)
    sys.stdout.write(f"{out}\n")


if __name__ == "__main__":
    main()
