"""The ONE place that turns a problem (question, choices, context, image) into model inputs.

Rollout, PPO, SFT and eval all call these, so the policy always sees the same prompt:

- `build_prompt(problem)`: the user-message text (question, context, lettered options, instruction), the
  same `format_problem` that `ares-data export` uses;
- `render_prompt(policy, problem)`: the exact prompt string fed to the tokenizer: the chat template with a
  generation prompt when the tokenizer has one (with an image part for VLMs when the problem has an image),
  otherwise `build_prompt(...) + "\\nAnswer:"`;
- `build_inputs(policy, problems, responses=None)`: a batch of left-padded prompts (images through the
  processor for VLMs) followed, when `responses` are given, by right-padded response tokens; the layout
  used by TRL's PPO (`[pad.. prompt | response ..pad]`).
"""

from __future__ import annotations

import io
from typing import Any

from ares_data.prompting import format_problem


def build_prompt(problem: dict[str, Any]) -> str:
    """The user-message text for a problem (no chat template, no image placeholder).

    This is `ares_data.prompting.format_problem`, so exports for TRL and the trainer share one format."""
    return format_problem(problem)


def problem_image(problem: dict[str, Any]) -> Any | None:
    """The problem's image as an RGB PIL image, or None (accepts PIL, HF Image dicts, or bytes)."""
    img = problem.get("image")
    if img is None:
        return None
    from PIL import Image

    if isinstance(img, dict):
        if img.get("bytes"):
            img = Image.open(io.BytesIO(img["bytes"]))
        elif img.get("path"):
            img = Image.open(img["path"])
        else:
            return None
    elif isinstance(img, (bytes, bytearray)):
        img = Image.open(io.BytesIO(img))
    return img.convert("RGB")


def render_prompt(policy: Any, problem: dict[str, Any]) -> str:
    """The exact prompt string for `problem` (what rollout records in the `prompt` column)."""
    text = build_prompt(problem)
    with_image = policy.is_vlm and problem_image(problem) is not None
    template_owner = policy.processor if policy.is_vlm else policy.tokenizer
    if getattr(template_owner, "chat_template", None):
        content: Any = text
        if policy.is_vlm:
            content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        return template_owner.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)
    prefix = f"{policy.processor.image_token}\n" if with_image else ""
    return f"{prefix}{text}\nAnswer:"


class ModelInputs(dict):
    """The tensors for `model(**inputs)` / `generate(**inputs)` (input_ids, attention_mask, pixel_values..),
    plus `prompts` (the exact prompt strings), `prompt_length` (padded prompt width: responses, if any,
    start at this column) and `response_mask` ([B, R], 1 on real response tokens, when given)."""

    def __init__(self, batch: dict[str, Any], prompts: list[str], prompt_length: int,
                 response_mask: Any | None = None) -> None:
        super().__init__(batch)
        self.prompts = prompts
        self.prompt_length = prompt_length
        self.response_mask = response_mask

    @property
    def batch(self) -> dict[str, Any]:
        return dict(self)


def encode_prompts(policy: Any, problems: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Left-padded prompt tensors (plus pixel values for VLMs) and the prompt strings."""
    prompts = [render_prompt(policy, p) for p in problems]
    tok = policy.tokenizer
    tok.padding_side = "left"
    if policy.is_vlm:
        images = [img for img in (problem_image(p) for p in problems) if img is not None]
        enc = policy.processor(text=prompts, images=images or None, return_tensors="pt", padding=True,
                               padding_side="left", add_special_tokens=False)
    else:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return dict(enc), prompts


def response_ids(policy: Any, response: str | list[int], *, add_eos: bool = True) -> list[int]:
    """Token ids of a response: given ids are kept; text is tokenized (no special tokens) + EOS."""
    if not isinstance(response, str):
        return [int(i) for i in response]
    ids = policy.tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [policy.tokenizer.eos_token_id] if add_eos else ids


def build_inputs(
    policy: Any,
    problems: list[dict[str, Any]],
    responses: list[str] | list[list[int]] | None = None,
) -> ModelInputs:
    """Prompts (left-padded) and, optionally, responses (right-padded, given as text or as token ids)."""
    import torch

    batch, prompts = encode_prompts(policy, problems)
    width = int(batch["input_ids"].shape[1])
    if responses is None:
        return ModelInputs(batch, prompts, width)
    if len(responses) != len(problems):
        raise ValueError(f"{len(responses)} responses for {len(problems)} problems")
    ids = [response_ids(policy, r) for r in responses]
    longest = max((len(r) for r in ids), default=0)
    pad = policy.tokenizer.pad_token_id
    resp = torch.full((len(ids), longest), pad, dtype=batch["input_ids"].dtype)
    mask = torch.zeros((len(ids), longest), dtype=batch["attention_mask"].dtype)
    for i, r in enumerate(ids):
        resp[i, : len(r)] = torch.tensor(r, dtype=resp.dtype)
        mask[i, : len(r)] = 1
    batch["input_ids"] = torch.cat([batch["input_ids"], resp], dim=1)
    batch["attention_mask"] = torch.cat([batch["attention_mask"], mask], dim=1)
    return ModelInputs(batch, prompts, width, mask)
