"""Shared base of teachers built on the official (Stainless-generated) `anthropic` / `openai` SDKs: one
place that turns SDK exceptions into RetryableError / FatalTeacherError, and raw-response calls that keep
the rate-limit headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from .base import RetryableError, Teacher
from .headers import status_error

T = TypeVar("T")


def error_message(e: Any) -> str:
    """The provider's own error text, from the SDK exception or its JSON body. Compatible servers shape
    bodies differently: {"error": {"message"}}, {"message"}, FastAPI's {"detail"}, {"error": "text"}."""
    if getattr(e, "api_message", None):
        return str(e.api_message)
    body = getattr(e, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict) and (err.get("message") or err.get("detail")):
        return str(err.get("message") or err.get("detail"))
    if isinstance(err, str) and err.strip():  # a plain-text (or HTML proxy) body: keep it short
        return " ".join(err.split())[:300]
    return str(getattr(e, "message", None) or e)


def error_codes(e: Any) -> set[str]:
    """The provider's machine-readable error codes: OpenAI `error.code` / `error.type`, Anthropic
    `error.details.error_code` (both SDKs keep the body's `error` object, or the whole body)."""
    body = getattr(e, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    found = {getattr(e, "code", None), getattr(e, "error_code", None)}
    if isinstance(err, dict):
        details = err.get("details")
        found |= {err.get("code"), err.get("type")}
        found.add(details.get("error_code") if isinstance(details, dict) else None)
    return {str(c) for c in found if c}


class SDKTeacher(Teacher):
    sdk: ClassVar[ModuleType]  # the SDK module: its exception classes share names across both SDKs

    async def _call(self, coro: Awaitable[T]) -> T:
        sdk, name = self.sdk, self.provider
        try:
            return await coro
        except sdk.APIStatusError as e:
            raise status_error(
                name, e.status_code, error_message(e), e.response.headers, self.key_env_var, error_codes(e)
            ) from None
        except sdk.APITimeoutError:
            raise RetryableError(f"{name}: no reply within {self.timeout:g}s") from None
        except sdk.APIConnectionError as e:
            raise RetryableError(f"{name}: connection failed ({e.__cause__ or e})") from None
        except (sdk.APIResponseValidationError, ValueError) as e:
            raise RetryableError(f"{name}: unreadable response body ({e})") from None

    async def _raw(
        self,
        method: Callable[..., Awaitable[Any]],
        limits: Callable[[Mapping[str, str]], dict],
        **params: Any,
    ) -> dict[str, Any]:
        """Call a `with_raw_response` method, remember its rate-limit headers, return the reply's JSON body.

        The body is read as a plain dict (the SDK's `raw.json()`), not parsed into the SDK's pydantic models:
        the teachers need a handful of fields, and building the models cost about 13% of the client's CPU
        per request (see BENCHMARKS.md, Teacher engine). Errors map as in `_call`: a body that is not JSON
        or not a JSON object is a retryable "unreadable response body"."""
        raw = await self._call(method(**params))
        self._rate_limit = limits(raw.headers)
        body = await self._call(_json(raw))
        if not isinstance(body, dict):
            raise RetryableError(f"{self.provider}: unreadable response body (not a JSON object)")
        return body


async def _json(raw: Any) -> Any:
    """The body as JSON: anthropic's AsyncAPIResponse has an async `json()`; openai's LegacyAPIResponse has
    read the body already and exposes the httpx response."""
    read = getattr(raw, "json", None)
    result = read() if read is not None else raw.http_response.json()
    return await result if hasattr(result, "__await__") else result
