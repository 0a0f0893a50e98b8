"""Sentence -> token reward placement, against hand-computed reward tensors.

The tokenizers are built from explicit vocabularies so every token boundary below is known by hand:
a GPT-2/Qwen-style byte-level BPE, a T5-style SentencePiece Unigram (Metaspace) and a Llama-style
SentencePiece BPE with byte fallback.
"""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ares_data.errors import InputError
from ares_train.ppo.rewards import align_sentence_rewards, spans_from_ids


def byte_level_bpe() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    merges = [("I", "s"), ("h", "o"), ("ho", "t"), ("Ġ", "hot"), ("?", "!")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def unigram_metaspace() -> PreTrainedTokenizerFast:
    pieces = [
        ("<pad>", 0.0),
        ("<eos>", 0.0),
        ("<unk>", 0.0),
        ("▁Ho", -1.0),
        ("t.No.", -1.0),
        ("▁Ol", -1.0),
        ("é", -2.0),
    ] + [(c, -10.0) for c in "▁HotNOl."]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def llama_byte_fallback() -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for c in "▁OlHot.N":
        vocab.setdefault(c, len(vocab))
    merges = [("▁", "O"), ("▁O", "l"), ("t", "."), ("▁", "H"), ("▁H", "o")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<unk>", eos_token="</s>", unk_token="<unk>"
    )


def sents(text: str, pieces: list[str]) -> list[dict]:
    """Sentences by explicit consecutive pieces (so repeats get their own offsets)."""
    out, pos = [], 0
    for p in pieces:
        start = text.index(p, pos)
        out.append({"text": p, "start": start, "end": start + len(p)})
        pos = start + len(p)
    return out


# (tokenizer, text, expected tokens, sentences, scores, expected reward tensor)
CASES = {
    # '?!' holds the end of "Is hot?" (mid-token) AND of "!" (two sentences in one token);
    # 'é' is split into the byte tokens 'Ã' '©': the token completing it (7) holds it;
    # "Is hot?" and "!" repeat: the second occurrences land on token 11, not 2.
    "byte-level-bpe": (
        byte_level_bpe,
        "Is hot?! Olé Is hot?!",
        ["Is", "Ġhot", "?!", "Ġ", "O", "l", "Ã", "©", "Ġ", "Is", "Ġhot", "?!"],
        ["Is hot?", "!", "Olé", "Is hot?", "!"],
        [0.9, 0.2, 1.0, 0.1, 0.6],
        [0, 0, 0.4 - 0.3, 0, 0, 0, 0, 0.5, 0, 0, 0, -0.4 + 0.1],
    ),
    # 't.No.' holds the ends of "Hot." (mid-token) and "No."; the repeat lands on token 5.
    "sentencepiece-unigram": (
        unigram_metaspace,
        "Hot.No. Olé Hot.No.",
        ["▁Ho", "t.No.", "▁Ol", "é", "▁Ho", "t.No."],
        ["Hot.", "No.", "Olé", "Hot.", "No."],
        [0.75, 0.25, 0.0, 1.0, 0.5],
        [0, 0.25 - 0.25, 0, -0.5, 0, 0.5 + 0.0],
    ),
    # Llama-style byte fallback splits 'é' into <0xC3><0xA9>: the second byte token holds it.
    "sentencepiece-byte-fallback": (
        llama_byte_fallback,
        "Hot. Olé Hot.",
        ["▁Ho", "t.", "▁Ol", "<0xC3>", "<0xA9>", "▁Ho", "t."],
        ["Hot.", "Olé", "Hot."],
        [1.0, 0.3, 0.5],
        [0, 0.5, 0, 0, -0.2, 0, 0.0],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("with_ids", [True, False], ids=["stored-token-ids", "offset-mapping"])
def test_reward_tensor_matches_hand_computed(name: str, with_ids: bool) -> None:
    make, text, tokens, pieces, scores, expected = CASES[name]
    tok = make()
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == tokens  # the fixture is what the comments say
    stored = ids + [tok.eos_token_id] if with_ids else None  # generated ids end with EOS
    out = align_sentence_rewards(tok, text, sents(text, pieces), scores, token_ids=stored)
    want = expected + [0.0] if with_ids else expected
    assert out.token_ids == (stored if with_ids else ids)
    assert out.rewards == pytest.approx(want, abs=1e-9)


def test_neutral_score_is_configurable() -> None:
    tok = unigram_metaspace()
    text = "Hot.No. Olé Hot.No."
    out = align_sentence_rewards(tok, text, sents(text, ["Hot.", "No."]), [1.0, 1.0], neutral_score=0.0)
    assert out.rewards == pytest.approx([0, 2.0, 0, 0, 0, 0])
    assert out.end_tokens == [1, 1]


def test_leading_whitespace_in_generated_ids_is_skipped() -> None:
    tok = byte_level_bpe()
    text = "Is hot?!"
    ids = tok("  " + text, add_special_tokens=False).input_ids  # the rollout stripped leading spaces
    out = align_sentence_rewards(tok, text, sents(text, ["Is hot?!"]), [1.0], token_ids=ids)
    assert out.rewards[-1] == pytest.approx(0.5) and sum(out.rewards) == pytest.approx(0.5)


@pytest.mark.parametrize("make", [byte_level_bpe, unigram_metaspace, llama_byte_fallback])
def test_decoded_spans_agree_with_offset_mapping_on_random_texts(make) -> None:
    tok, rng = make(), random.Random(0)
    words = ["Hot.", "No.", "Olé", "Ho", "t.", "l", "N"]
    if make is not unigram_metaspace:  # the unigram vocabulary covers only the letters above
        words += ["Is", "hot?!", "é", "日本", "l.!"]
    for _ in range(30):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = spans_from_ids(tok, list(enc.input_ids), text)
        for c in range(len(text)):
            if text[c] == " ":
                continue
            by_offsets = max(k for k, (s, e) in enumerate(enc.offset_mapping) if s <= c < e)
            by_decoding = max(k for k, (s, e) in enumerate(spans) if s <= c < e)
            assert by_offsets == by_decoding, (text, c)


def test_mismatched_ids_and_scores_are_input_errors() -> None:
    tok = byte_level_bpe()
    text = "Is hot?!"
    other = tok("Olé", add_special_tokens=False).input_ids
    with pytest.raises(InputError, match="token_ids"):
        align_sentence_rewards(tok, text, sents(text, ["Is hot?!"]), [1.0], token_ids=other, where="r1")
    with pytest.raises(InputError, match="2 scores for 1 sentences"):
        align_sentence_rewards(tok, text, sents(text, ["Is hot?!"]), [1.0, 0.0])
    with pytest.raises(InputError, match="outside the text"):
        align_sentence_rewards(tok, text, [{"text": "x", "start": 5, "end": 40}], [1.0])


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_windowed_decoding_matches_prefix_decoding(kind: str) -> None:
    """Linear-time windowed token ends equal the exact every-prefix ends (tokenizers trained in-process)."""
    from ares_train.ppo.rewards import prefix_ends, windowed_ends
    from ares_train.tiny import train_tokenizer

    tok, rng = train_tokenizer(None, kind, 300), random.Random(1)
    words = ["The", "sun", "is", "hot.", "Olé!", "40°C", "naïve", "café", "日本", "(A).", "\n", "✓", "—"]
    for _ in range(20):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        ids = tok(text, add_special_tokens=False).input_ids + [tok.eos_token_id]
        full = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert windowed_ends(tok, ids, full) == prefix_ends(tok, ids, full), text


def test_text_ending_in_a_replacement_character_falls_back_to_prefix_decoding() -> None:
    from ares_train.ppo.rewards import windowed_ends

    tok = byte_level_bpe()
    text = "Is hot?! \ufffd"
    ids = tok(text, add_special_tokens=False).input_ids
    assert windowed_ends(tok, ids, text) is None  # the last character looks unfinished to the window
    out = align_sentence_rewards(tok, text, sents(text, ["Is hot?!", "\ufffd"]), [1.0, 0.0], token_ids=ids)
    # U+FFFD is also what a half-decoded byte looks like, so here its first byte token already holds it
    assert out.end_tokens == [2, len(ids) - 3] and out.rewards[len(ids) - 3] == pytest.approx(-0.5)
