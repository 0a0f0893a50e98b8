"""A fake Anthropic + OpenAI teacher server for tests and benchmarks (stdlib asyncio, no dependencies).

    python -m ares_data.testing.teacher_server --port 8765 --latency-ms 200 --fault-rate 0.2 --seed 1

Anthropic SDK: base_url http://127.0.0.1:P (POST /v1/messages, /v1/messages/batches[/{id}[/results]]).
OpenAI SDK: base_url http://127.0.0.1:P/v1 (POST /chat/completions, /files, /batches; GET /batches/{id},
/files/{id}/content). Replies are computed by the reference teacher from the prompt's task block.

Faults (`--faults`, drawn at `--fault-rate`, or queued with `enqueue`): 429 (with retry-after),
529 (overloaded), 500, 400/401/403/404, hang (no reply for `hang_s`), drop (connection closed),
truncate (half a body), badjson (a 200 whose body is not JSON), malformed (unparseable reply
content), wronglen (one score missing / a cut-off correction), refusal (a safety refusal in the provider's
format), quota (the 429 of an account out of credit / over its spend limit, not retryable), echokey (a
valid reply that repeats the request's key header, like a leaky proxy).
Control endpoints: GET /_fake/stats, POST /_fake/config, POST /_fake/reset. API keys are checked for presence
only and never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from .fake_teacher import DEFAULT_RATE_FAULTS, FakeTeacher, Options, Stats
from .http import HttpServer

__all__ = ["FakeTeacher", "Options", "ServerHandle", "Stats", "main", "serve"]


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
