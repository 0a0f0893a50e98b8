"""The async request engine shared by score, correct and judge.

`run_task(teacher, task, items, ...)` turns input items (argument tuples for the task, e.g.
(problem, rationale)) into output rows, one per item, in input order, streaming: at most `window` rows are
in flight ahead of the consumer, so memory does not grow with the number of rows.

Per request: bounded concurrency, the client-side limiter (rpm / tpm / provider pauses), retries with
exponential backoff and full jitter on `RetryableError` and timeouts, the persistent cache (read before
sending, written as each reply arrives) and in-run de-duplication (identical requests are sent once).
A request the provider refuses (HTTP 400/413/422: `RequestRejected`, e.g. a too-long prompt or a corrupt
image) is not retried: its row fails with the provider's message and the run goes on, unless
`REJECT_STREAK` requests in a row are refused with the same message (a parameter every request carries):
then the run stops like on an auth error (401/403), an unknown model (404) or an empty account. A refusal is
cached with its request, so a resumed run fails the row again without sending it (`Fresh` items, i.e.
--retry-failed, ask again); the refusals of a streak that stopped the run are forgotten.
The API keys in use (`teacher.secrets()`) are replaced by *** in every reply before it is cached or parsed.
Per row: `task.parse`; a reply failing validation gets one follow-up request stating the error
(`task.retry_request`), then the row is `status="failed"` with the reason and the raw reply.

Rows are deterministic: `cached` is True when an earlier row of the same dataset asked the identical
request (its reply was paid for once, so the row's `cost_usd` is 0), which does not depend on timing or on
whether a previous run was interrupted. Replies reused from the persistent cache are counted in `Stats`
(`from_cache`, and `spent_usd` only counts fresh replies) and go to the manifest, not into rows.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BudgetExceeded
from ..redact import redact_text
from ..tasks.base import ValidationError
from ..teachers.base import FatalTeacherError, Reply, Request, RequestRejected, RetryableError
from .cache import CachedRejection, RequestCache
from .limiter import RateLimiter
from .log import RequestLog
from .pricing import Price, PriceTable, estimate_input_tokens


@dataclass
class EngineConfig:
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 60.0
    max_attempts: int = 5
    max_cost: float | None = None  # USD this run may spend on fresh replies
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    window: int | None = None  # rows in flight ahead of the consumer (default max(256, 16 * concurrency))


@dataclass
class Stats:
    total: int | None = None
    done: int = 0
    ok: int = 0
    failed: int = 0
    cached: int = 0  # rows sharing an earlier row's identical request
    from_cache: int = 0  # requests answered from the persistent cache (e.g. by an interrupted run)
    refused_from_cache: int = 0  # requests an earlier run saw refused (400/413/422): failed, not sent again
    sent: int = 0  # requests answered by the teacher in this run
    attempts: int = 0  # HTTP attempts in this run
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0  # sum of the rows' cost_usd
    spent_usd: float = 0.0  # money spent in this run (fresh replies only)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rows_per_s(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out["elapsed_s"] = round(self.elapsed, 3)
        out["cost_usd"] = round(self.cost_usd, 8)
        out["spent_usd"] = round(self.spent_usd, 8)
        return out


@dataclass
class Done:
    """An item whose output row is already known (e.g. an ok row copied by --retry-failed)."""

    row: dict[str, Any]


@dataclass
class Fresh:
    """An item to re-request even if the cache holds a reply for it (--retry-failed)."""

    args: tuple


class RowFailed(Exception):
    """A per-request failure that retrying cannot fix (a batch API's per-request error): the row fails."""


@dataclass
class _Outcome:
    reply: Reply | None
    attempts: int
    error: str = ""
    batch: bool = False


class Engine:
    def __init__(
        self,
        teacher: Any,
        task: Any,
        config: EngineConfig,
        cache: RequestCache | None = None,
        pricing: PriceTable | None = None,
        on_progress: Callable[[Stats], None] | None = None,
        stats: Stats | None = None,
        log: RequestLog | None = None,
    ) -> None:
        self.teacher, self.task, self.config, self.cache, self.log = teacher, task, config, cache, log
        self.provider, self.model = teacher.provider, teacher.model
        self.scope = getattr(teacher, "cache_scope", self.provider)  # the cache keys' provider[@endpoint]
        self.secrets: tuple[str, ...] = teacher.secrets() if hasattr(teacher, "secrets") else ()
        pricing = pricing or PriceTable()
        self.price: Price = pricing.price(self.provider, self.model) or Price(0.0, 0.0)
        self.warnings = [w for w in [pricing.warning(self.provider, self.model)] if w]
        self.on_progress = on_progress
        self.stats = stats or Stats()
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self._sem = asyncio.Semaphore(max(1, config.concurrency))
        self._inflight: dict[str, asyncio.Task] = {}
        self._owned: set[str] = set()  # first-request keys claimed by an earlier row
        self._fresh_done: set[str] = set()
        self._reserved = 0.0  # estimated cost of requests in flight
        self._stop: BaseException | None = None
        self._streak, self._streak_shape = 0, ""  # requests refused in a row with the same message
        self._streak_keys: list[str] = []  # their cache keys

    # ---- rows ------------------------------------------------------------------------------------
    async def run(self, items: Iterable[Any]) -> AsyncIterator[dict[str, Any]]:
        # a slow head-of-line row stalls the run only once this many rows behind it are done
        window = self.config.window or max(256, 16 * self.config.concurrency)
        pending: deque[asyncio.Future] = deque()
        source = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    item = next(source, _END)
                    if item is _END:
                        exhausted = True
                    else:
                        pending.append(self._start(item))
                if not pending:
                    break
                row = await pending.popleft()
                self._account(row)
                yield row
        finally:
            await self._cancel(list(pending) + list(self._inflight.values()))

    async def _cancel(self, tasks: list[asyncio.Future]) -> None:
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, item: Any) -> asyncio.Future:
        if isinstance(item, Done):
            fut: asyncio.Future = asyncio.get_running_loop().create_future()
            fut.set_result(item.row)
            return fut
        fresh = isinstance(item, Fresh)
        args = tuple(item.args if fresh else item)
        request = self.task.build(*args)  # built here, in input order, so ownership is deterministic
        key = request.cache_key(self.scope, self.model)
        duplicate = key in self._owned
        self._owned.add(key)
        return asyncio.ensure_future(self._row(args, request, key, duplicate, fresh))

    async def _row(self, args: tuple, request: Request, key: str, duplicate: bool, fresh: bool) -> dict:
        ids = self.task.row_ids(*args)
        first = await self._get(request, key, fresh, not duplicate)
        outs = [first]
        if first.reply is None:
            return self._failed(args, ids, first.error, "", outs, duplicate)
        try:
            return self._ok(ids, self.task.parse(first.reply, *args), first.reply, outs, duplicate)
        except ValidationError as exc:
            error = str(exc)
        retry = self.task.retry_request(request, first.reply, error)
        second = await self._get(retry, retry.cache_key(self.scope, self.model), fresh, not duplicate)
        outs.append(second)
        if second.reply is None:
            why = f"invalid reply ({error}); the follow-up request failed: {second.error}"
            return self._failed(args, ids, why, first.reply.text, outs, duplicate)
        try:
            return self._ok(ids, self.task.parse(second.reply, *args), second.reply, outs, duplicate)
        except ValidationError as exc:
            why = f"invalid reply after one retry stating the error: {exc}"
            return self._failed(args, ids, why, second.reply.text, outs, duplicate)

    def _teacher_columns(self, outs: list[_Outcome], duplicate: bool) -> dict[str, Any]:
        replies = [(o.reply, o.batch) for o in outs if o.reply is not None]
        cost = 0.0 if duplicate else sum(
            self.price.cost(r.input_tokens, r.output_tokens, batch=b) for r, b in replies)
        return {
            "teacher": self.teacher.spec,
            "prompt_sha": self.task.prompt_sha,
            "input_tokens": sum(r.input_tokens for r, _ in replies),
            "output_tokens": sum(r.output_tokens for r, _ in replies),
            "cost_usd": round(cost, 10),
            "attempts": sum(o.attempts for o in outs),
            "cached": duplicate,
        }

    def _ok(self, ids: dict, fields: dict, reply: Reply, outs: list[_Outcome], duplicate: bool) -> dict:
        return {**ids, **fields, "status": "ok", "error": "", "raw_response": reply.text,
                **self._teacher_columns(outs, duplicate)}

    def _failed(self, args: tuple, ids: dict, error: str, raw: str, outs: list[_Outcome], dup: bool) -> dict:
        return {**ids, **self.task.failed_fields(*args), "status": "failed",
                "error": redact_text(error, self.secrets),
                "raw_response": raw, **self._teacher_columns(outs, dup)}

    def _account(self, row: dict[str, Any]) -> None:
        s = self.stats
        s.done += 1
        s.ok += row.get("status") == "ok"
        s.failed += row.get("status") != "ok"
        s.cached += bool(row.get("cached"))
        s.input_tokens += row.get("input_tokens") or 0
        s.output_tokens += row.get("output_tokens") or 0
        s.cost_usd += row.get("cost_usd") or 0.0
        if self.on_progress is not None:
            self.on_progress(s)

    # ---- requests --------------------------------------------------------------------------------
    async def _get(self, request: Request, key: str, fresh: bool, count: bool = True) -> _Outcome:
        shared = self._inflight.get(key)
        if shared is not None:  # another row is fetching the identical request right now
            return await asyncio.shield(shared)
        if self.cache is not None and not (fresh and key not in self._fresh_done):
            hit = self.cache.get(key)
            if isinstance(hit, CachedRejection):  # refused before: asking again would be refused (and paid)
                self.stats.refused_from_cache += count
                return _Outcome(None, hit.attempts, f"rejected by the provider: {hit.message}")
            if hit is not None:
                self.stats.from_cache += count  # duplicate rows are counted as `cached` instead
                return _Outcome(hit.reply.redacted(self.secrets), hit.attempts, batch=hit.batch)
        # fetch inline (no extra task per request); rows asking the same thing meanwhile wait on `fut`
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        if fresh:
            self._fresh_done.add(key)
        try:
            outcome = await self._fetch(request, key)
        except BaseException as exc:
            if not fut.done():
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
                    fut.exception()  # retrieved here; waiters still get it raised
            raise
        else:
            if not fut.done():
                fut.set_result(outcome)
            return outcome
        finally:
            self._inflight.pop(key, None)

    async def _send(self, request: Request) -> Reply:
        if _HAS_TIMEOUT:  # Python 3.11+: no extra task per request
            async with asyncio.timeout(self.config.timeout):
                return await self.teacher.send(request)
        return await asyncio.wait_for(self.teacher.send(request), self.config.timeout)

    async def _fetch(self, request: Request, key: str) -> _Outcome:
        cfg = self.config
        est_tokens = estimate_input_tokens(request)
        est_cost = self.price.cost(est_tokens, request.max_tokens)
        attempts, error = 0, ""
        while attempts < cfg.max_attempts:
            async with self._sem:
                self._check_go(est_cost)
                self._reserved += est_cost
                try:
                    grant = await self.limiter.acquire(est_tokens + request.max_tokens)
                    self._check_go(0.0)
                    attempts += 1
                    self.stats.attempts += 1
                    started = time.monotonic()
                    try:
                        reply = await self._send(request)
                    except RetryableError as exc:
                        err = exc
                    except (asyncio.TimeoutError, TimeoutError):
                        err = RetryableError(f"no reply within --timeout {cfg.timeout:g}s")
                    except RowFailed as exc:
                        self._log("failed", key, attempt=attempts, error=str(exc))
                        return _Outcome(None, attempts, str(exc))
                    except RequestRejected as exc:
                        self._log("rejected", key, attempt=attempts, status=exc.status, error=str(exc))
                        self._rejected(exc, key)
                        message = redact_text(str(exc), self.secrets)
                        if self.cache is not None:
                            self.cache.put_rejection(key, exc.status, message, attempts=attempts)
                        return _Outcome(None, attempts, f"rejected by the provider: {message}")
                    except FatalTeacherError as exc:
                        self._log("fatal", key, attempt=attempts, status=exc.status, error=str(exc))
                        self._stop = self._stop or exc
                        raise
                    else:
                        self.limiter.settle(grant, reply.input_tokens + reply.output_tokens)
                        self._log("reply", key, attempt=attempts, s=round(time.monotonic() - started, 3),
                                  tokens=[reply.input_tokens, reply.output_tokens], stop=reply.stop_reason)
                        return self._arrived(key, reply, attempts)
                finally:
                    self._reserved -= est_cost
            error = str(err) or type(err).__name__
            self._log("retry", key, attempt=attempts, status=err.status, error=error)
            if err.status == 429 and err.retry_after:
                self.limiter.pause_for(err.retry_after)  # the provider asked everyone to wait
            if attempts < cfg.max_attempts:
                await asyncio.sleep(self._backoff(attempts, err.retry_after))
        self._log("gave_up", key, attempt=attempts, error=error)
        return _Outcome(None, attempts, f"gave up after {attempts} attempts; last error: {error}")

    def _log(self, event: str, key: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.write(event, key, **fields)

    def _rejected(self, exc: RequestRejected, key: str) -> None:
        """Count refusals in a row with the same message (numbers aside); stop the run at REJECT_STREAK.
        Such a streak says something about the run (every request is refused), not about its requests:
        their cached refusals are forgotten, so the rerun after the fix asks again."""
        shape = re.sub(r"\d+", "#", str(exc))
        same = shape == self._streak_shape
        self._streak = self._streak + 1 if same else 1
        self._streak_keys = [*self._streak_keys, key] if same else [key]
        self._streak_shape = shape
        if self._streak >= REJECT_STREAK and self._stop is None:
            if self.cache is not None:
                self.cache.forget_rejections(self._streak_keys)
            self._stop = FatalTeacherError(
                f"the provider rejected the last {self._streak} requests in a row the same way: {exc}",
                status=exc.status, hint=f"{exc.hint}; nothing was published" if exc.hint else None)
        if self._stop is not None:
            raise self._stop

    def _arrived(self, key: str, reply: Reply, attempts: int) -> _Outcome:
        self._streak, self._streak_keys = 0, []
        reply = reply.redacted(self.secrets)  # an echoed key reaches neither the cache nor the rows
        if self.cache is not None:
            self.cache.put(key, reply, attempts=attempts)  # committed before anything else happens
        self.stats.sent += 1
        self.stats.spent_usd += self.price.cost(reply.input_tokens, reply.output_tokens)
        self._follow_hint()
        return _Outcome(reply, attempts)

    def _follow_hint(self) -> None:
        hint = self.teacher.rate_limit_hint() if hasattr(self.teacher, "rate_limit_hint") else None
        if not hint:
            return
        for kind in ("requests", "tokens"):
            if hint.get(f"{kind}_remaining") == 0 and hint.get(f"{kind}_reset_s"):
                self.limiter.pause_for(float(hint[f"{kind}_reset_s"]))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.config.backoff_cap, self.config.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(0.0, cap)  # full jitter
        return max(delay, retry_after or 0.0)

    def _check_go(self, est_cost: float) -> None:
        if self._stop is not None:
            raise self._stop
        budget = self.config.max_cost
        if budget is not None and self.stats.spent_usd + self._reserved + est_cost > budget:
            self._stop = BudgetExceeded(
                f"--max-cost ${budget:g} reached: ${self.stats.spent_usd:.4f} spent in this run and the next "
                "request could exceed it; nothing was published",
                hint="every answered request is cached: rerun the same command (raise --max-cost if needed) "
                "to continue where this run stopped without paying for those again",
            )
            raise self._stop


_END = object()
REJECT_STREAK = 20  # identical refusals in a row that stop the run (every request would be refused)
_HAS_TIMEOUT = sys.version_info >= (3, 11)


async def run_task(
    teacher: Any,
    task: Any,
    items: Iterable[Any],
    *,
    concurrency: int = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    timeout: float = 60.0,
    max_attempts: int = 5,
    cache: RequestCache | None = None,
    max_cost: float | None = None,
    pricing: PriceTable | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    stats: Stats | None = None,
    log: RequestLog | None = None,
    **config: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Yield one output row per item, in input order (see the module docstring).

    Raises FatalTeacherError (auth, unknown model, no credit, REJECT_STREAK identical refusals: stop the run)
    and BudgetExceeded (--max-cost)."""
    cfg = EngineConfig(concurrency=concurrency, rpm=rpm, tpm=tpm, timeout=timeout, max_attempts=max_attempts,
                       max_cost=max_cost, **config)
    engine = Engine(teacher, task, cfg, cache, pricing, on_progress, stats, log)
    async for row in engine.run(items):
        yield row
