"""Sentence scores -> per-token rewards: the ARES reward placement.

For a rationale with sentences s_1..s_n (character offsets into the rationale text) and teacher scores
c_1..c_n, the sentence reward of response token t is the sum of (c_i - neutral_score) over the sentences
whose LAST character lies in token t; the PPO trainer adds -kl_coef * KL_t to it.

The character span of every response token is found in one of two ways:

- from the stored generated `token_ids` (what the policy really emitted): the ids are decoded prefix by
  prefix and token k ends where the decoded prefix stops agreeing with the full decoded text. A byte-level
  token that holds only part of a multi-byte character ends before that character; the character belongs to
  the token that completes it. Special tokens (EOS, padding) get empty spans.
- from the tokenizer's offset mapping of the text (rationales imported without token ids). Where several
  tokens share one character (a split multi-byte character) the last of them holds it, as above.

`shape_rewards` then applies the run's choices: `reward_level="sequence"` (the ablation) moves the
rationale's whole reward onto its last token; `reward_normalization="mean"` divides every sentence reward by
the number of scored sentences, so that writing more sentences cannot raise the total.

Pure Python (no torch): the trainer turns the result into tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ares_data.errors import InputError

NEUTRAL_SCORE = 0.5
REWARD_LEVELS = ("sentence", "sequence")
REWARD_NORMALIZATIONS = ("sum", "mean")


@dataclass(frozen=True)
class AlignedRewards:
    """The response tokens of one rationale and the sentence reward on each of them."""

    token_ids: list[int]
    rewards: list[float]  # one per token: sum of (score - neutral) of the sentences ending in that token
    end_tokens: list[int]  # per sentence: index of the token holding its last character


def align_sentence_rewards(
    tokenizer: Any,
    text: str,
    sentences: Sequence[dict[str, Any]],
    scores: Sequence[float],
    *,
    token_ids: Sequence[int] | None = None,
    neutral_score: float = NEUTRAL_SCORE,
    where: str = "rationale",
) -> AlignedRewards:
    """Place each sentence's (score - neutral_score) on the response token holding its last character.

    `sentences` are {text, start, end} dicts with `text[start:end] == sentence` (end exclusive); repeated
    sentences are told apart by their offsets. With `token_ids` (the generated ids, possibly ending in EOS)
    those are the response tokens; without them the text is tokenized (no special tokens added).
    `where` names the rationale in errors. Raises InputError when scores, sentences, text and ids disagree.
    """
    if len(scores) != len(sentences):
        raise InputError(f"{len(scores)} scores for {len(sentences)} sentences", row=where, field="scores")
    if token_ids is not None and len(token_ids) > 0:
        ids = [int(i) for i in token_ids]
        spans = spans_from_ids(tokenizer, ids, text, where=where)
    else:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        spans = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    rewards = [0.0] * len(ids)
    end_tokens: list[int] = []
    for i, (sent, score) in enumerate(zip(sentences, scores, strict=True)):
        start, end = int(sent["start"]), int(sent["end"])
        if not 0 <= start < end <= len(text):
            raise InputError(f"sentence {i} has offsets [{start}, {end}) outside the text "
                             f"(length {len(text)})", row=where, field="sentences")
        t = token_holding(spans, end - 1)
        if t is None:
            raise InputError(f"no response token holds the last character of sentence {i} (offset {end - 1})",
                             row=where, field="sentences")
        rewards[t] += float(score) - neutral_score
        end_tokens.append(t)
    return AlignedRewards(ids, rewards, end_tokens)


def shape_rewards(
    rewards: Sequence[float], n_sentences: int, *, level: str = "sentence", normalization: str = "sum"
) -> list[float]:
    """Per-token sentence rewards after the run's choices (see the module doc); the input is not changed.

    - level "sentence": each sentence's reward on the token holding its last character (the paper);
      "sequence": their total on the last response token (sequence-level credit, the ablation).
    - normalization "sum": the rewards as they are (the paper); "mean": each divided by `n_sentences`.
    """
    if level not in REWARD_LEVELS:
        raise ValueError(f"reward level must be one of {REWARD_LEVELS}, got {level!r}")
    if normalization not in REWARD_NORMALIZATIONS:
        raise ValueError(f"reward normalization must be one of {REWARD_NORMALIZATIONS}, "
                         f"got {normalization!r}")
    scale = 1.0 / max(1, n_sentences) if normalization == "mean" else 1.0
    out = [r * scale for r in rewards]
    if level == "sequence" and out:
        total = sum(out)
        out = [0.0] * (len(out) - 1) + [total]
    return out


def token_holding(spans: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose span holds `char` (the last such token when spans overlap)."""
    found = None
    for k, (s, e) in enumerate(spans):
        if s <= char < e:
            found = k
        elif s > char and found is not None:
            break
    return found


def spans_from_ids(
    tokenizer: Any, ids: list[int], text: str, *, where: str = "rationale"
) -> list[tuple[int, int]]:
    """Character span in `text` of every id, by incremental decoding (robust to split multi-byte chars).

    The ids must decode (special tokens skipped) to a string containing `text`; leading/trailing extra
    characters (e.g. whitespace the rollout stripped) are allowed. Token ends come from decoding a sliding
    window of tokens (linear time); when the windowed pieces do not add up to the full decoded text, every
    prefix is decoded instead (quadratic, exact).
    """
    full = _decoder(tokenizer)(ids)
    shift = full.find(text)
    if shift < 0:
        raise InputError("the stored token_ids do not decode to the rationale text "
                         f"(decoded {full[:60]!r}..., text {text[:60]!r}...)", row=where, field="token_ids")
    ends = windowed_ends(tokenizer, ids, full)
    if ends is None:
        ends = prefix_ends(tokenizer, ids, full)
    starts = [0, *ends[:-1]]
    return [(s - shift, e - shift) for s, e in zip(starts, ends, strict=True)]


def _decoder(tokenizer: Any, *, backend: bool = False) -> Any:
    """decode(ids) with special tokens skipped and no clean-up (with `backend`: straight through the Rust
    tokenizer, which skips transformers' per-call overhead; results are checked against the full decode)."""
    rust = getattr(tokenizer, "backend_tokenizer", None) if backend else None
    if rust is not None:
        return lambda ids: rust.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def windowed_ends(tokenizer: Any, ids: list[int], full: str) -> list[int] | None:
    """End (in `full`) of each token's text, decoding only the previous token + the new ones; None when the
    pieces do not reproduce `full` exactly. A token that leaves a character incomplete adds nothing: the
    character belongs to the token that completes it."""
    decode = _decoder(tokenizer, backend=True)
    ends, pieces, length = [], [], 0
    prefix = read = 0
    for k in range(len(ids)):
        before = decode(ids[prefix:read])
        after = decode(ids[prefix : k + 1])
        if len(after) > len(before) and after.startswith(before) and _complete(after, decode, ids, prefix, k):
            pieces.append(after[len(before):])
            length += len(pieces[-1])
            prefix, read = read, k + 1
        ends.append(length)
    return ends if "".join(pieces) == full else None


def _complete(text: str, decode: Any, ids: list[int], prefix: int, k: int) -> bool:
    """Whether ids[prefix:k+1], decoding to `text`, ends on a whole character. Text ending in U+FFFD is
    whole only when the first later decode that no longer ends in U+FFFD still starts with `text` (an invalid
    byte that no later token completes); with no such later decode the window cannot tell, gives up, and
    every-prefix decoding decides."""
    if not text.endswith("\ufffd"):
        return True
    for j in range(k + 1, len(ids)):
        later = decode(ids[prefix : j + 1])
        if not later.endswith("\ufffd"):
            return later.startswith(text)
    return False


def prefix_ends(tokenizer: Any, ids: list[int], full: str) -> list[int]:
    """End of each token's text: how much of `full` the decoded prefix ids[:k+1] agrees with."""
    prefixes = [_decoder(tokenizer)(ids[: k + 1]) for k in range(len(ids))]
    ends, prev = [], 0
    for prefix in prefixes:
        prev = max(prev, _common_prefix_len(prefix, full, prev))
        ends.append(prev)
    return ends


def _common_prefix_len(a: str, b: str, hint: int) -> int:
    """len of the common prefix of a and b; `hint` is a length that usually is known to agree."""
    n = min(len(a), len(b))
    if hint > n or a[:hint] != b[:hint]:
        lo, hi = 0, min(hint, n)  # binary search the agreeing length below hint
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if a[:mid] == b[:mid]:
                lo = mid
            else:
                hi = mid - 1
        return lo
    k = hint
    while k < n and a[k] == b[k]:
        k += 1
    return k
