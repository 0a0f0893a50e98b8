"""The request engine: concurrency, rate limits, retries, cache, de-duplication, cost, batch mode.

Public API::

    from ares_data.engine import run_task, RequestCache, PriceTable, Stats
    async for row in run_task(teacher, task, [(problem, rationale), ...], cache=RequestCache.for_store(root)):
        ...
"""

from __future__ import annotations

from .cache import RequestCache
from .engine import Done, Engine, EngineConfig, Fresh, RowFailed, Stats, run_task
from .plan import plan_requests
from .pricing import DEFAULT_PRICES, Price, PriceTable, estimate_input_tokens

__all__ = [
    "DEFAULT_PRICES", "Done", "Engine", "EngineConfig", "Fresh", "Price", "PriceTable", "RequestCache",
    "RowFailed", "Stats", "estimate_input_tokens", "plan_requests", "run_task",
]
