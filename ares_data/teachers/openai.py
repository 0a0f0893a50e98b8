"""OpenAI teacher: the official `openai` SDK, Chat Completions, images as data URIs, structured output via
`response_format=json_schema`, and the Batch API. `--base-url` / OPENAI_BASE_URL point it at any
OpenAI-compatible server (vLLM, Ollama, LM Studio, `transformers serve`).

Keys: OPENAI_API_KEY. When a non-OpenAI base URL is set and OPENAI_API_KEY is not, a placeholder key is
sent, because local OpenAI-compatible servers usually do not check it; against api.openai.com a missing key
is an error.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from ..errors import MissingKeyError
from .base import FatalTeacherError, Reply, Request, RetryableError
from .headers import openai_limits
from .sdk import SDKTeacher

PLACEHOLDER_KEY = "no-key-needed"
# Parameters a model or server may reject with a 400 naming them (reasoning models: temperature other than
# 1; older models and OpenAI-compatible servers: json_schema response_format). Such a parameter is left
# out from then on: the provider's default sampling applies, and the tasks' lenient parser reads replies.
# `max_tokens` (sent to compatible servers) is renamed to `max_completion_tokens` instead of left out:
# o-series models reject max_tokens, also behind compatible gateways.
OPTIONAL_PARAMS = ("response_format", "temperature", "max_tokens")
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAITeacher(SDKTeacher):
    provider = "openai"
    sdk = openai
    key_env_var = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    official_hosts = ("openai.com",)
    supports_batch = True

    def __init__(
        self, model: str, *, base_url: str | None = None, timeout: float = 60.0, max_retries_in_sdk: int = 0
    ) -> None:
        super().__init__(model, base_url=base_url, timeout=timeout, max_retries_in_sdk=max_retries_in_sdk)
        self.is_openai = self.cache_scope == self.provider  # no base URL, or api.openai.com
        key = os.environ.get("OPENAI_API_KEY")
        self._keys = (key,)
        if not key:
            if self.is_openai:
                raise MissingKeyError("OPENAI_API_KEY", "openai")
            key = PLACEHOLDER_KEY
        kwargs: dict[str, Any] = {"api_key": key, "max_retries": max_retries_in_sdk, "timeout": timeout}
        if base_url:
            kwargs["base_url"] = base_url  # otherwise the SDK reads OPENAI_BASE_URL itself
        self.client = openai.AsyncOpenAI(**kwargs)
        self.dropped: set[str] = set()  # OPTIONAL_PARAMS this model/server rejected

    # -- request / reply conversion -------------------------------------------------------------
    def params(self, request: Request) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for m in request.messages:
            blocks = m["content"]
            if all(b["type"] == "text" for b in blocks):  # plain strings suit every compatible server
                messages.append({"role": m["role"], "content": "\n\n".join(b["text"] for b in blocks)})
            else:
                messages.append({"role": m["role"], "content": [_part(b) for b in blocks]})
        # api.openai.com wants max_completion_tokens (reasoning models reject max_tokens); compatible
        # servers (vLLM, Ollama, LM Studio) reliably understand max_tokens.
        renamed = self.is_openai or "max_tokens" in self.dropped
        limit_key = "max_completion_tokens" if renamed else "max_tokens"
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            limit_key: request.max_tokens,
            "temperature": request.temperature,
        }
        if request.response_schema is not None:
            schema = {"name": request.schema_name, "schema": request.response_schema, "strict": True}
            params["response_format"] = {"type": "json_schema", "json_schema": schema}
        for name in self.dropped:
            params.pop(name, None)
        return params

    @staticmethod
    def to_reply(completion: dict[str, Any]) -> Reply:
        """A Reply from a Chat Completions reply body (the JSON object, as sent over HTTP)."""
        choices = completion.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise RetryableError("openai: the reply has no choices")
        choice = choices[0]
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        refusal = message.get("refusal")
        text = message.get("content") or refusal or ""
        stop = "refusal" if refusal else choice.get("finish_reason")  # a refusal's finish_reason is "stop"
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            data = None
        usage = completion.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Reply(
            text=text,
            data=data if isinstance(data, dict) else None,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            stop_reason=stop,
            extra={"id": completion.get("id"), "model": completion.get("model")},
        )

    async def send(self, request: Request) -> Reply:
        create = self.client.chat.completions.with_raw_response.create
        while True:
            params = self.params(request)
            try:
                return self.to_reply(await self._raw(create, openai_limits, **params))
            except FatalTeacherError as e:
                name = _rejected_param(e, params)
                if name is None:
                    raise
                self.dropped.add(name)  # resend without it (each parameter is dropped at most once)

    async def submit_batch(self, items: list[tuple[str, Request]]) -> str:
        lines = [
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": self.params(req)},
                ensure_ascii=False,
            )
            for cid, req in items
        ]
        payload = ("\n".join(lines) + "\n").encode()
        file = await self._call(self.client.files.create(file=("ares-batch.jsonl", payload), purpose="batch"))
        batch = await self._call(
            self.client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        )
        return batch.id

    async def batch_status(self, batch_id: str) -> dict:
        batch = await self._call(self.client.batches.retrieve(batch_id))
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        out = {
            "state": "ended" if batch.status in ENDED else "in_progress",
            "counts": counts,
            "provider_status": batch.status,
        }
        if batch.errors and batch.errors.data:
            out["errors"] = [f"{e.code}: {e.message}" for e in batch.errors.data]
        return out

    async def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        """custom_id -> Reply or error text. Requests of a failed/expired batch may be absent."""
        batch = await self._call(self.client.batches.retrieve(batch_id))
        out: dict[str, Reply | str] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._call(self.client.files.content(file_id))
            for line in content.text.splitlines():
                if line.strip():
                    entry = json.loads(line)
                    out[entry["custom_id"]] = self._batch_entry(entry)
        return out

    def _batch_entry(self, entry: dict) -> Reply | str:
        if entry.get("error"):
            err = entry["error"]
            return f"errored: {err.get('code')}: {err.get('message')}"
        response = entry.get("response") or {}
        body = response.get("body") or {}
        if response.get("status_code") != 200:
            message = (body.get("error") or {}).get("message", "")
            return f"errored: HTTP {response.get('status_code')}: {message}"
        try:
            ChatCompletion.model_validate(body)  # the batch file is checked as the SDK would
            return self.to_reply(body)
        except (RetryableError, ValueError) as e:
            return f"errored: unreadable batch result ({e})"

    async def aclose(self) -> None:
        await self.client.close()


def _rejected_param(e: FatalTeacherError, params: dict[str, Any]) -> str | None:
    """The optional parameter a 400/422 names (OpenAI sets error.param; compatible servers name it in the
    message), if we sent it."""
    if e.status not in (400, 422):
        return None
    return next((p for p in OPTIONAL_PARAMS if p in params and re.search(rf"\b{p}\b", str(e))), None)


def _part(b: dict) -> dict:
    if b["type"] == "image":
        return {"type": "image_url", "image_url": {"url": f"data:{b['media_type']};base64,{b['data_b64']}"}}
    return {"type": "text", "text": b["text"]}
