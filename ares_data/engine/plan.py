"""`--dry-run`: how many requests a run would send (after the cache and de-duplication), their estimated
tokens and cost. Nothing is sent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .cache import RequestCache
from .engine import Done, Fresh
from .pricing import PriceTable, estimate_input_tokens


def plan_requests(
    provider: str,
    model: str,
    task: Any,
    items: Iterable[Any],
    *,
    cache: RequestCache | None = None,
    pricing: PriceTable | None = None,
    batch: bool = False,
    scope: str | None = None,
) -> dict[str, Any]:
    """`scope`: the teacher's `cache_scope` (default `provider`: its official endpoint)."""
    pricing = pricing or PriceTable()
    price = pricing.price(provider, model)
    seen: set[str] = set()
    rows = duplicates = cached = kept = 0
    in_tokens = out_tokens = 0
    for item in items:
        rows += 1
        if isinstance(item, Done):
            kept += 1
            continue
        fresh = isinstance(item, Fresh)
        request = task.build(*(item.args if fresh else item))
        key = request.cache_key(scope or provider, model)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if not fresh and cache is not None and key in cache:
            cached += 1
            continue
        in_tokens += estimate_input_tokens(request)
        out_tokens += request.max_tokens
    to_send = len(seen) - cached
    cost = price.cost(in_tokens, out_tokens, batch=batch) if price else 0.0
    return {
        "rows": rows,
        "rows_kept": kept,
        "duplicates": duplicates,
        "cached": cached,
        "requests": to_send,
        "est_input_tokens": in_tokens,
        "est_output_tokens_max": out_tokens,
        "est_cost_usd_max": round(cost, 6),
        "price_known": price is not None,
        "note": "tokens estimated as characters/4 plus images; output at max_tokens (an upper bound); "
        "validation retries not included",
    }
