"""A fake Anthropic + OpenAI teacher server for tests and benchmarks (stdlib asyncio, no dependencies).

    python -m ares_data.testing.teacher_server --port 8765 --latency-ms 200 --fault-rate 0.2 --seed 1

Anthropic SDK: base_url http://127.0.0.1:P (POST /v1/messages, /v1/messages/batches[/{id}[/results]]).
OpenAI SDK: base_url http://127.0.0.1:P/v1 (POST /chat/completions, /files, /batches; GET /batches/{id},
/files/{id}/content). Replies are computed by the reference teacher from the prompt's task block.

Faults (`--faults`, drawn at `--fault-rate`, or queued with `enqueue`): 429 (with retry-after),
529 (overloaded), 500, 400/401/403/404, hang (no reply for `hang_s`), drop (connection closed),
truncate (half a body), badjson (a 200 whose body is not JSON), malformed (unparseable reply
content), wronglen (one score missing / a cut-off correction).
Control endpoints: GET /_fake/stats, POST /_fake/config, POST /_fake/reset. API keys are checked for presence
only and never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from .fake_batches import BatchStore
from .fake_bodies import anthropic_error, anthropic_message, compute_answer, openai_completion, openai_error
from .http import HttpRequest, HttpResponse, HttpServer

STATUS_FAULTS = {"429": 429, "529": 529, "500": 500, "400": 400, "401": 401, "403": 403, "404": 404}
ALL_FAULTS = frozenset({*STATUS_FAULTS, "hang", "drop", "truncate", "badjson", "malformed", "wronglen"})
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

    def __post_init__(self) -> None:
        self.faults = tuple(self.faults)
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
        try:
            if path.startswith("/_fake/"):
                return self._control(req, path)
            provider = "openai" if not path.startswith("/v1/messages") else "anthropic"
            if self.options.require_auth and not (
                req.headers.get("x-api-key") or req.headers.get("authorization")
            ):
                self.stats.unauthenticated += 1
                return self._error(provider, 401, "missing API key header")
            if req.method == "POST" and path in ("/v1/messages", "/v1/chat/completions"):
                return await self._model(provider, path, json.loads(req.body or b"{}"))
            return self.batches.route(req, path)
        except (ValueError, KeyError, TypeError) as e:
            return self._json(
                {"error": {"type": "invalid_request_error", "message": f"bad request: {e}"}}, 400
            )

    def count(self, endpoint: str) -> None:
        self.stats.by_endpoint[endpoint] = self.stats.by_endpoint.get(endpoint, 0) + 1

    async def _model(self, provider: str, path: str, body: dict) -> HttpResponse:
        self.count(f"{provider}:{path}")
        key = content_hash(body)
        self.stats.by_hash[key] = self.stats.by_hash.get(key, 0) + 1
        self._recent.append(body)
        wait = self._rate_limited()
        if wait is not None:
            self._fault_count("rpm_limit")
            return self._error(provider, 429, "rate limit exceeded", {"retry-after": f"{wait:.3f}"})
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
        if fault == "drop":
            return HttpResponse(action="drop")
        if fault == "badjson":  # a 200 whose body is not JSON at all
            return HttpResponse(200, b'{"id": "broken', headers=self._limit_headers(provider))
        payload = self.reply_body(provider, body, fault)
        self.stats.answered_by_hash[key] = self.stats.answered_by_hash.get(key, 0) + 1
        resp = self._json(payload, 200, self._limit_headers(provider))
        if fault == "truncate":
            resp.action = "truncate"
        return resp

    def reply_body(self, provider: str, body: dict, fault: str | None) -> dict:
        ans = compute_answer(body, fault, self.options.plain_text)
        self.stats.images += ans.images
        return anthropic_message(body, ans) if provider == "anthropic" else openai_completion(body, ans)

    def _fault_count(self, fault: str) -> None:
        self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1

    def _error(self, provider: str, status: int, message: str, headers: dict | None = None) -> HttpResponse:
        body = anthropic_error(status, message) if provider == "anthropic" else openai_error(status, message)
        return self._json(body, status, headers)

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


class ServerHandle:
    """A running fake server. Talks to it over its control endpoints (works for a thread or a process)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.anthropic_base_url = self.url
        self.openai_base_url = self.url + "/v1"

    def _call(self, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    @property
    def stats(self) -> Stats:
        return Stats(**self._call("/_fake/stats"))

    def set_faults(self, **options: Any) -> None:
        """Change options live: fault_rate=, faults=[...], latency_ms=, retry_after=, plain_text=, ..."""
        self._call("/_fake/config", options)

    def enqueue(self, faults: list[str | None]) -> None:
        self._call("/_fake/config", {"enqueue": faults})

    def reset(self) -> None:
        self._call("/_fake/reset", {})


@contextlib.contextmanager
def serve(port: int = 0, *, process: bool = False, **options: Any) -> Iterator[ServerHandle]:
    """Run a fake teacher server and yield its handle: on a background thread with its own event loop, or
    with `process=True` in a child process (so a benchmark's client does not share the GIL with it)."""
    opts = Options(**options)
    if process:
        with _serve_process(port, opts) as handle:
            yield handle
        return
    fake = FakeTeacher(opts)
    loop = asyncio.new_event_loop()
    server = HttpServer(fake.handle, port=port)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fake-teacher-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the fake teacher server did not start")
    try:
        yield ServerHandle(server.port)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def _serve_process(port: int, opts: Options) -> Iterator[ServerHandle]:
    cmd = [
        sys.executable,
        "-m",
        "ares_data.testing.teacher_server",
        "--port",
        str(port),
        "--options-json",
        json.dumps(asdict(opts)),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"the fake teacher server did not start: {line!r}")
        yield ServerHandle(int(line.rsplit(":", 1)[1]))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m ares_data.testing.teacher_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port (printed on start)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--faults", default=",".join(DEFAULT_RATE_FAULTS), help="comma-separated fault kinds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--rpm-limit", type=int, default=None)
    p.add_argument("--plain-text", action="store_true", help="ignore tools/json_schema, answer in prose")
    p.add_argument("--options-json", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    opts = (
        Options(**json.loads(a.options_json))
        if a.options_json
        else Options(
            latency_ms=a.latency_ms,
            fault_rate=a.fault_rate,
            seed=a.seed,
            retry_after=a.retry_after,
            faults=tuple(f for f in a.faults.split(",") if f),
            hang_s=a.hang_s,
            rpm_limit=a.rpm_limit,
            plain_text=a.plain_text,
        )
    )

    async def run() -> None:
        server = HttpServer(FakeTeacher(opts).handle, host=a.host, port=a.port)
        port = await server.start()
        print(f"fake teacher server listening on http://{a.host}:{port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
