"""The fake teacher's core: request routing, fault injection, rate limiting and statistics (no sockets).

The HTTP layer is `.http`; batch endpoints are `.fake_batches`; `.teacher_server` runs it all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from .fake_batches import BatchStore
from .fake_bodies import (
    anthropic_error,
    anthropic_message,
    compute_answer,
    openai_completion,
    openai_error,
    quota_error,
    strict_schema_problem,
    unsupported_param,
)
from .http import HttpRequest, HttpResponse

STATUS_FAULTS = {"429": 429, "529": 529, "500": 500, "400": 400, "401": 401, "403": 403, "404": 404}
ALL_FAULTS = frozenset(
    {*STATUS_FAULTS, "hang", "drop", "truncate", "badjson", "malformed", "wronglen", "refusal", "quota",
     "echokey"}
)
DEFAULT_RATE_FAULTS = ("429", "529", "500", "hang", "malformed", "wronglen")


@dataclass
class Options:
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = DEFAULT_RATE_FAULTS
    seed: int = 0
    retry_after: float = 1.0  # seconds sent in retry-after on 429 / 529
    hang_s: float = 30.0
    batch_delay_s: float = 0.0  # batches report in_progress this long after creation
    plain_text: bool = False  # ignore tools / json_schema and answer in prose (tests lenient parsing)
    rpm_limit: int | None = None  # enforce a requests-per-minute limit with real 429s
    require_auth: bool = True
    reject_params: tuple[str, ...] = ()  # OpenAI endpoint: 400 for bodies carrying these parameters
    reject_style: str = "openai"  # the rejection's body: "openai", "fastapi" (422 detail) or "lmstudio"

    def __post_init__(self) -> None:
        self.faults = tuple(self.faults)
        self.reject_params = tuple(self.reject_params)
        unknown = set(self.faults) - ALL_FAULTS
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(ALL_FAULTS)}")


@dataclass
class Stats:
    by_endpoint: dict[str, int] = field(default_factory=dict)
    by_hash: dict[str, int] = field(default_factory=dict)  # model requests per request-content hash
    answered_by_hash: dict[str, int] = field(default_factory=dict)  # 200 replies per content hash
    faults: dict[str, int] = field(default_factory=dict)
    images: int = 0  # image blocks / data URIs received
    unauthenticated: int = 0
    recent: list[dict] = field(default_factory=list)  # last request bodies (no headers, so no keys)

    @property
    def model_requests(self) -> int:
        return sum(self.by_hash.values())

    def repeated_answers(self) -> int:
        """How many answered requests were answered before (a cache/resume should make this 0)."""
        return sum(n - 1 for n in self.answered_by_hash.values() if n > 1)


def content_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _schema_problem(body: dict) -> str | None:
    fmt = body.get("response_format") or {}
    spec = fmt.get("json_schema") or {}
    if fmt.get("type") != "json_schema" or not spec.get("strict"):
        return None
    problem = strict_schema_problem(spec.get("schema"))
    return f"Invalid schema for response_format '{spec.get('name')}': {problem}" if problem else None


def _blank_text(body: dict) -> bool:
    """The Messages API rejects empty or whitespace-only text (a string content or a text block)."""
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        if any(b.get("type") == "text" and not str(b.get("text", "")).strip() for b in blocks):
            return True
    return False


class FakeTeacher:
    """Request routing, fault injection and statistics; the HTTP layer lives in `.http`."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.queue: deque[str] = deque()
        self.stats = Stats()
        self._recent: deque[dict] = deque(maxlen=20)
        self._seen: Counter[str] = Counter()
        self._window: deque[float] = deque()
        self.batches = BatchStore(self)

    # -- faults ---------------------------------------------------------------------------------
    def enqueue(self, faults: list[str | None]) -> None:
        """Faults for the next model requests, in order (None = answer normally)."""
        for f in faults:
            if f is not None and f not in ALL_FAULTS:
                raise ValueError(f"unknown fault {f!r}")
            self.queue.append(f or "none")

    def draw_fault(self, key: str) -> str | None:
        if self.queue:
            fault = self.queue.popleft()
            return None if fault == "none" else fault
        o = self.options
        if o.fault_rate <= 0 or not o.faults:
            return None
        self._seen[key] += 1
        rng = random.Random(f"{o.seed}:{key}:{self._seen[key]}")  # deterministic per content + occurrence
        return rng.choice(o.faults) if rng.random() < o.fault_rate else None

    def _rate_limited(self) -> float | None:
        limit = self.options.rpm_limit
        now = time.monotonic()
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        if limit is not None and len(self._window) >= limit:
            return 60.0 - (now - self._window[0])
        self._window.append(now)
        return None

    def _limit_headers(self, provider: str) -> dict[str, str]:
        limit = self.options.rpm_limit or 4000
        remaining = max(limit - len(self._window), 0)
        if provider == "anthropic":
            reset = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
            return {
                "anthropic-ratelimit-requests-limit": str(limit),
                "anthropic-ratelimit-requests-remaining": str(remaining),
                "anthropic-ratelimit-requests-reset": reset,
            }
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": "60s",
        }

    # -- routing --------------------------------------------------------------------------------
    async def handle(self, req: HttpRequest) -> HttpResponse:
        path = req.path.rstrip("/")
        provider = "openai" if not path.startswith("/v1/messages") else "anthropic"
        try:
            if path.startswith("/_fake/"):
                return self._control(req, path)
            if self.options.require_auth and not (
                req.headers.get("x-api-key") or req.headers.get("authorization")
            ):
                self.stats.unauthenticated += 1
                return self._error(provider, 401, "missing API key header")
            if req.method == "POST" and path in ("/v1/messages", "/v1/chat/completions"):
                auth = req.headers.get("x-api-key") or req.headers.get("authorization") or ""
                return await self._model(provider, path, json.loads(req.body or b"{}"), auth)
            return self.batches.route(req, path)
        except (ValueError, KeyError, TypeError) as e:
            return self._error(provider, 400, f"bad request: {e}")

    def count(self, endpoint: str) -> None:
        self.stats.by_endpoint[endpoint] = self.stats.by_endpoint.get(endpoint, 0) + 1

    async def _model(self, provider: str, path: str, body: dict, auth: str = "") -> HttpResponse:
        self.count(f"{provider}:{path}")
        key = content_hash(body)
        self.stats.by_hash[key] = self.stats.by_hash.get(key, 0) + 1
        self._recent.append(body)
        if provider == "anthropic" and _blank_text(body):
            message = "messages: text content blocks must contain non-whitespace text"
            return self._error(provider, 400, message)
        wait = self._rate_limited()
        if wait is not None:
            self._fault_count("rpm_limit")
            return self._error(provider, 429, "rate limit exceeded", {"retry-after": f"{wait:.3f}"})
        rejected = next((p for p in self.options.reject_params if p in body), None)
        if provider == "openai" and rejected:
            status, error = unsupported_param(rejected, self.options.reject_style)
            return self._json(error, status)
        if provider == "openai" and (problem := _schema_problem(body)):
            return self._error(provider, 400, problem, param="response_format")
        fault = self.draw_fault(key)
        if fault:
            self._fault_count(fault)
        if self.options.latency_ms:
            await asyncio.sleep(self.options.latency_ms / 1000.0)
        if fault == "hang":
            await asyncio.sleep(self.options.hang_s)
            return HttpResponse(action="drop")
        if fault in STATUS_FAULTS:
            status = STATUS_FAULTS[fault]
            retry = {"retry-after": f"{self.options.retry_after:g}"} if status in (429, 529) else {}
            return self._error(provider, status, f"injected fault {fault}", retry)
        if fault == "quota":
            return self._json(quota_error(provider), 429)
        if fault == "drop":
            return HttpResponse(action="drop")
        if fault == "badjson":  # a 200 whose body is not JSON at all
            return HttpResponse(200, b'{"id": "broken', headers=self._limit_headers(provider))
        payload = self.reply_body(provider, body, fault, echo=auth if fault == "echokey" else "")
        self.stats.answered_by_hash[key] = self.stats.answered_by_hash.get(key, 0) + 1
        resp = self._json(payload, 200, self._limit_headers(provider))
        if fault == "truncate":
            resp.action = "truncate"
        return resp

    def reply_body(self, provider: str, body: dict, fault: str | None, echo: str = "") -> dict:
        """`echo`: a request header value the reply repeats (the `echokey` fault: a leaky proxy)."""
        ans = compute_answer(body, fault, self.options.plain_text, echo)
        self.stats.images += ans.images
        return anthropic_message(body, ans) if provider == "anthropic" else openai_completion(body, ans)

    def _fault_count(self, fault: str) -> None:
        self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1

    def _error(
        self, provider: str, status: int, message: str, headers: dict | None = None, param: str | None = None
    ) -> HttpResponse:
        if provider == "anthropic":
            return self._json(anthropic_error(status, message), status, headers)
        return self._json(openai_error(status, message, param), status, headers)

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict | None = None) -> HttpResponse:
        return HttpResponse(status, json.dumps(obj).encode(), headers=dict(headers or {}))

    def _control(self, req: HttpRequest, path: str) -> HttpResponse:
        if path == "/_fake/stats":
            self.stats.recent = list(self._recent)
            return self._json(asdict(self.stats))
        if path == "/_fake/reset":
            self.stats, self._recent, self._seen = Stats(), deque(maxlen=20), Counter()
            self._window.clear()
            self.queue.clear()
            return self._json({"ok": True})
        if path == "/_fake/config" and req.method == "POST":
            cfg = json.loads(req.body or b"{}")
            if "enqueue" in cfg:
                self.enqueue(cfg.pop("enqueue"))
            known = {f.name for f in fields(Options)}
            self.options = Options(**{**asdict(self.options), **{k: v for k, v in cfg.items() if k in known}})
            return self._json({"ok": True, "options": asdict(self.options)})
        return self._json({"error": {"message": f"unknown control path {path}"}}, 404)
