"""Anthropic teacher: the official `anthropic` SDK, Messages API, base64 image blocks, structured output via
a forced tool whose input is the JSON reply, and the Message Batches API (half price)."""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic

from ..errors import MissingKeyError
from .base import Reply, Request
from .headers import anthropic_limits
from .sdk import SDKTeacher


class AnthropicTeacher(SDKTeacher):
    provider = "anthropic"
    sdk = anthropic
    key_env_var = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    official_hosts = ("anthropic.com",)
    supports_batch = True

    def __init__(
        self, model: str, *, base_url: str | None = None, timeout: float = 60.0, max_retries_in_sdk: int = 0
    ) -> None:
        super().__init__(model, base_url=base_url, timeout=timeout, max_retries_in_sdk=max_retries_in_sdk)
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise MissingKeyError("ANTHROPIC_API_KEY", "anthropic")
        self._keys = (key,)
        # base_url=None lets the SDK read ANTHROPIC_BASE_URL, as it documents.
        self.client = anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url, max_retries=max_retries_in_sdk, timeout=timeout
        )

    # -- request / reply conversion -------------------------------------------------------------
    def params(self, request: Request) -> dict[str, Any]:
        """Messages API parameters. `temperature` is not sent: the installed SDK no longer accepts it, so the
        provider's default sampling applies (it still enters the cache key)."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": m["role"], "content": [_block(b) for b in m["content"]]} for m in request.messages
            ],
        }
        if request.system:
            params["system"] = request.system
        if request.response_schema is not None:
            params["tools"] = [
                {
                    "name": request.schema_name,
                    "description": "Record your answer: call this tool once with the complete answer.",
                    "input_schema": request.response_schema,
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": request.schema_name}
        return params

    @staticmethod
    def to_reply(message: dict[str, Any]) -> Reply:
        """A Reply from a Messages API reply body (the JSON object, as sent over HTTP)."""
        data, texts = None, []
        for block in message.get("content") or []:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_use" and data is None and isinstance(block.get("input"), dict):
                data = block["input"]
            elif kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
        text = json.dumps(data, ensure_ascii=False) if data is not None else "".join(texts)
        usage = message.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Reply(
            text=text,
            data=data,
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            stop_reason=message.get("stop_reason"),
            extra={"id": message.get("id"), "model": message.get("model")},
        )

    async def send(self, request: Request) -> Reply:
        create = self.client.messages.with_raw_response.create
        return self.to_reply(await self._raw(create, anthropic_limits, **self.params(request)))

    async def submit_batch(self, items: list[tuple[str, Request]]) -> str:
        requests = [{"custom_id": cid, "params": self.params(req)} for cid, req in items]
        batch = await self._call(self.client.messages.batches.create(requests=requests))
        return batch.id

    async def batch_status(self, batch_id: str) -> dict:
        batch = await self._call(self.client.messages.batches.retrieve(batch_id))
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        state = "ended" if batch.processing_status == "ended" else "in_progress"
        return {"state": state, "counts": counts, "provider_status": batch.processing_status}

    async def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        out: dict[str, Reply | str] = {}
        entries = await self._call(self.client.messages.batches.results(batch_id))
        async for entry in entries:
            result = entry.result
            if result.type == "succeeded":
                out[entry.custom_id] = self.to_reply(result.message.to_dict())
            elif result.type == "errored":
                err = getattr(result.error, "error", None)
                out[entry.custom_id] = f"errored: {getattr(err, 'type', '?')}: {getattr(err, 'message', '')}"
            else:
                out[entry.custom_id] = result.type  # "canceled" / "expired"
        return out

    async def aclose(self) -> None:
        await self.client.close()


def _block(b: dict) -> dict:
    if b["type"] == "image":
        source = {"type": "base64", "media_type": b["media_type"], "data": b["data_b64"]}
        return {"type": "image", "source": source}
    return {"type": "text", "text": b["text"]}
