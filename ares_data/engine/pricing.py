"""Prices per million tokens, token estimates, and the cost of a reply.

The default table covers common teacher models; `--prices FILE.json` overrides or extends it with
{"MODEL": {"input": USD_PER_M, "output": USD_PER_M}, ...} (keys may also be "provider:model"). Batch APIs
cost half (Anthropic Message Batches and the OpenAI Batch API both bill 50%). A model missing from the table
costs 0 and the run's manifest carries a warning saying so.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

BATCH_DISCOUNT = 0.5

# USD per million tokens (input, output), list prices.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-3-haiku-20240307": (0.25, 1.25),
    "claude-3-5-haiku-20241022": (0.80, 4.00),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "claude-3-7-sonnet-20250219": (3.00, 15.00),
    "claude-3-opus-20240229": (15.00, 75.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}
FREE_PROVIDERS = {"reference"}  # offline teachers cost nothing and need no price


@dataclass(frozen=True)
class Price:
    input: float  # USD per million input tokens
    output: float

    def cost(self, input_tokens: int, output_tokens: int, *, batch: bool = False) -> float:
        usd = (input_tokens * self.input + output_tokens * self.output) / 1e6
        return usd * (BATCH_DISCOUNT if batch else 1.0)


class PriceTable:
    def __init__(self, prices: dict[str, tuple[float, float]] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        table = cls()
        if path is not None:
            table.prices.update(_read_prices(Path(path)))
        return table

    def price(self, provider: str, model: str) -> Price | None:
        """The price of a model, or None when unknown. Offline providers are free."""
        if provider in FREE_PROVIDERS:
            return Price(0.0, 0.0)
        for key in (f"{provider}:{model}", model):
            if key in self.prices:
                return Price(*self.prices[key])
        return None

    def warning(self, provider: str, model: str) -> str | None:
        if self.price(provider, model) is None:
            return (f"no price known for {provider}:{model}; its cost is recorded as 0 "
                    f"(add it with --prices FILE.json)")
        return None


def _read_prices(path: Path) -> dict[str, tuple[float, float]]:
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read price file {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: expected an object {{"MODEL": {{"input": USD, "output": USD}}}}')
    out: dict[str, tuple[float, float]] = {}
    for model, entry in raw.items():
        ok = isinstance(entry, dict) and set(entry) == {"input", "output"} and all(
            isinstance(entry[k], (int, float)) and entry[k] >= 0 for k in ("input", "output"))
        if not ok:
            raise ConfigError(f"{path}: entry '{model}' must be "
                              '{"input": USD_PER_M, "output": USD_PER_M}')
        out[model] = (float(entry["input"]), float(entry["output"]))
    return out


# ---- token estimates (for --dry-run, --max-cost and --tpm before the provider reports usage) -----------
CHARS_PER_TOKEN = 4
IMAGE_TOKENS_MAX = 1600  # Anthropic: about width*height/750, resized to at most ~1.15 megapixels


def image_tokens(block: dict[str, Any]) -> int:
    size = _png_size(block.get("data_b64", ""))
    if size is None:
        return IMAGE_TOKENS_MAX
    w, h = size
    return max(1, min(IMAGE_TOKENS_MAX, (w * h) // 750))


def _png_size(data_b64: str) -> tuple[int, int] | None:
    try:
        head = base64.b64decode(data_b64[:48])
    except ValueError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    return None


def estimate_input_tokens(request: Any) -> int:
    """chars/4 over system + text blocks, plus a per-image estimate."""
    chars = len(request.system)
    images = 0
    for m in request.messages:
        for b in m["content"]:
            if b.get("type") == "text":
                chars += len(b.get("text", ""))
            elif b.get("type") == "image":
                images += image_tokens(b)
    if request.response_schema:
        chars += len(json.dumps(request.response_schema))
    return chars // CHARS_PER_TOKEN + images + 8
