"""Sampling through an OpenAI-compatible completions endpoint with the official `openai` SDK.

One `ServerClient` per run. Each request is sent with bounded concurrency; transient failures (connection
refused or reset, timeouts, 429, 5xx) are retried with exponential backoff and full jitter up to
`max_attempts`, then the run stops with the server's last answer (nothing is published). Status codes map
to errors exactly as for the teachers (`ares_data.teachers.headers.status_error`); `--log` writes one JSON
line per attempt (`ares_data.engine.log.RequestLog`). The API key, when the server wants one, comes from
$ARES_SERVER_API_KEY (never from the teacher's key variables, never recorded).

Servers differ; `negotiate` adapts on the first request and the `Protocol` records what it did:

- the prompt goes as token ids (vLLM) unless the server wants a string ("prompt must be a string.":
  transformers serve), then as the exact prompt text, and the server's prompt token count must equal the
  in-process one (else the server tokenized another prompt: an error);
- `n=k` in one request unless the server returns fewer choices (then one request per sample);
- the sampling fields (`top_k=-1`, `min_p`, `repetition_penalty`, `stop_token_ids`, `return_token_ids`) go
  in the body; fields a server rejects by name ("Unexpected fields in the request": transformers serve) are
  dropped, and transformers serve's own `generation_config` field carries the distribution instead;
- generated token ids are the server's (`return_token_ids`, vLLM) or the text re-tokenized (recorded).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ares_data.engine.log import RequestLog
from ares_data.errors import AresError
from ares_data.redact import redact_text
from ares_data.teachers.base import RequestRejected, RetryableError
from ares_data.teachers.headers import status_error
from ares_data.teachers.sdk import error_codes, error_message

from ..sampling import NEUTRAL

KEY_ENV = "ARES_SERVER_API_KEY"
# request fields beyond the OpenAI schema that pin the distribution (vLLM's names; -1 = top-k off)
SAMPLING_EXTRAS: dict[str, Any] = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
_UNEXPECTED = re.compile(r"Unexpected fields in the request: \{(.*)\}")


class ServerError(AresError):
    """The server refused the requests or stopped answering; the rollout publishes nothing (exit 1)."""


@dataclass
class Protocol:
    """How requests to this server are made (recorded in every row's generation_params["server"])."""

    prompt: str = "token_ids"  # or "text", or "chat" (a VLM's messages with image_url data URIs)
    n: bool = True  # the server returns n choices per request
    dropped: list[str] = field(default_factory=list)  # fields the server rejected by name
    generation_config_field: bool = False  # transformers serve's request field carries the distribution
    token_ids: str = "server"  # or "retokenized"

    def carried(self) -> set[str]:
        """Sampling fields the requests pin (the rest fall to the served generation_config)."""
        if self.generation_config_field:
            return set(NEUTRAL)
        sent = {"top_p", "frequency_penalty", "presence_penalty"} | set(SAMPLING_EXTRAS)
        return sent - set(self.dropped)


@dataclass
class Prompt:
    """One prompt as the in-process path builds it; `messages` (a VLM's problem with its image as an
    image_url data URI) sends it through the chat endpoint instead of as a completion prompt."""

    ids: list[int]
    text: str
    messages: list[dict[str, Any]] | None = None


@dataclass
class Choice:
    text: str
    token_ids: list[int] | None
    finish_reason: str
    stop_reason: Any


@dataclass
class ServerClient:
    base_url: str
    model: str
    concurrency: int = 8
    timeout: float = 600.0
    max_attempts: int = 3
    log: RequestLog | None = None
    protocol: Protocol = field(default_factory=Protocol)
    attempts: int = 0

    def __post_init__(self) -> None:
        import openai

        self.base_url = self.base_url.rstrip("/")
        self._sdk = openai
        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(KEY_ENV) or "none",
                                          max_retries=0, timeout=self.timeout)
        self._sem = asyncio.Semaphore(max(1, self.concurrency))

    async def close(self) -> None:
        await self._client.close()

    def describe(self) -> dict[str, Any]:
        """What rows and manifests record of the server (the URL without any user:password@ part)."""
        url = re.sub(r"//[^/@]*@", "//", self.base_url)
        return {"base_url": redact_text(url), "model": self.model, **asdict(self.protocol)}

    async def models(self) -> list[str]:
        page = await self._send(lambda: self._client.models.list(), "models")
        return [m.id for m in page.data]

    # ---- one completion request ------------------------------------------------------------------
    def body(self, prompt: Prompt, n: int, params: dict[str, Any]) -> dict[str, Any]:
        """The request's keyword arguments for `completions.create` (extra fields in extra_body), or for
        `chat.completions.create` when the prompt has messages."""
        p = self.protocol
        extra = {**SAMPLING_EXTRAS, "stop_token_ids": params["stop_token_ids"], "return_token_ids": True}
        if p.generation_config_field:
            extra["generation_config"] = json.dumps(hf_generation_config(params))
        extra = {k: v for k, v in extra.items() if k not in p.dropped}
        if prompt.messages is not None:
            p.prompt = "chat"
            where: dict[str, Any] = {"messages": prompt.messages}
        else:
            where = {"prompt": prompt.ids if p.prompt == "token_ids" else prompt.text}
        return {"model": self.model, **where, "n": n if p.n else 1, "max_tokens": params["max_new_tokens"],
                "temperature": params["temperature"], "top_p": params["top_p"], "frequency_penalty": 0.0,
                "presence_penalty": 0.0, "seed": params.get("request_seed"), "extra_body": extra}

    async def complete(self, kwargs: dict[str, Any], key: str) -> dict[str, Any]:
        """One completions request (retried while transient) -> the reply body as a dict."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        endpoint = self._client.chat.completions if "messages" in kwargs else self._client.completions
        raw = await self._send(lambda: endpoint.with_raw_response.create(**kwargs), key)
        body = raw.http_response.json()
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise ServerError(f"{self.base_url}: unreadable completion reply {str(body)[:200]!r}")
        return body

    async def _send(self, call: Callable[[], Awaitable[Any]], key: str) -> Any:
        async with self._sem:
            for attempt in range(1, self.max_attempts + 1):
                self.attempts += 1
                t0 = time.monotonic()
                try:
                    out = await self._mapped(call)
                except RetryableError as e:
                    self._log("retry" if attempt < self.max_attempts else "gave_up", key, attempt, str(e))
                    if attempt == self.max_attempts:
                        raise ServerError(f"the server at {self.base_url} stopped answering after {attempt} "
                                          f"attempts: {e}", hint="check that it is still running (its "
                                          "log, or --serve-cmd's output in the error above)") from None
                    await asyncio.sleep(random.uniform(0, min(10.0, 0.5 * 2 ** (attempt - 1))))
                    continue
                except RequestRejected as e:
                    self._log("rejected", key, attempt, str(e))
                    raise
                self._log("reply", key, attempt, seconds=round(time.monotonic() - t0, 3))
                return out
        raise AssertionError("unreachable")

    async def _mapped(self, call: Callable[[], Awaitable[Any]]) -> Any:
        sdk = self._sdk
        try:
            return await call()
        except sdk.APIStatusError as e:
            raise status_error(f"server {self.base_url}", e.status_code, error_message(e), e.response.headers,
                               KEY_ENV, error_codes(e)) from None
        except sdk.APITimeoutError:
            raise RetryableError(f"no reply within {self.timeout:g}s") from None
        except sdk.APIConnectionError as e:
            raise RetryableError(f"connection failed ({e.__cause__ or e})") from None

    def _log(self, event: str, key: str, attempt: int, error: str = "", **fields: Any) -> None:
        if self.log is not None:
            self.log.write(event, key, attempt=attempt, **({"error": error} if error else {}), **fields)

    # ---- adapting to the server ------------------------------------------------------------------
    async def negotiate(self, prompt: Prompt, n: int, params: dict[str, Any]) -> dict[str, Any]:
        """Send the first request, adapting the protocol to what the server refuses; its reply."""
        for _ in range(6):
            try:
                return await self.complete(self.body(prompt, n, params), "negotiate")
            except RequestRejected as e:
                if not self._adapt(str(e)):
                    raise ServerError(f"the server refused the request: {e}") from None
        raise ServerError(f"the server at {self.base_url} refused every form of the request")

    def _adapt(self, message: str) -> bool:
        p = self.protocol
        if "prompt must be a string" in message and p.prompt == "token_ids":
            p.prompt = "text"
            return True
        m = _UNEXPECTED.search(message)
        if m:
            names = [x.strip().strip("'\"") for x in m.group(1).split(",")]
            new = [x for x in names if x and x not in p.dropped]
            if "generation_config" in new:
                p.generation_config_field = False
            elif new and not p.generation_config_field:
                p.generation_config_field = True  # try transformers serve's own field for the dropped ones
            p.dropped += new
            return bool(new)
        return False


def choices_of(body: dict[str, Any]) -> list[Choice]:
    out = []
    for c in sorted(body["choices"], key=lambda c: c.get("index", 0)):
        ids = c.get("token_ids")
        text = c.get("text") if "message" not in c else (c.get("message") or {}).get("content")
        out.append(Choice(str(text or ""), [int(i) for i in ids] if isinstance(ids, list) else None,
                          str(c.get("finish_reason") or ""), c.get("stop_reason")))
    return out


def hf_generation_config(params: dict[str, Any]) -> dict[str, Any]:
    """transformers serve's `generation_config` request field: plain sampling, every knob explicit."""
    sample = params["temperature"] > 0
    cfg = {k: v for k, v in NEUTRAL.items() if k not in ("frequency_penalty", "presence_penalty")}
    cfg.update(do_sample=sample, temperature=params["temperature"] if sample else 1.0,
               top_p=params["top_p"] if sample else 1.0, max_new_tokens=params["max_new_tokens"],
               eos_token_id=params["stop_token_ids"], num_beams=1)
    if params.get("pad_token_id") is not None:
        cfg["pad_token_id"] = params["pad_token_id"]
    return cfg
