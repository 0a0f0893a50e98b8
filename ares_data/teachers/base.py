"""Provider-neutral teacher interface: one `Request` in, one `Reply` out, typed errors.

A teacher makes exactly one HTTP call per `send` (SDK retries are off); the request engine owns
concurrency, rate limits, retries, caching and cost. Adding a provider is one subclass of `Teacher`
plus one line in `ares_data.teachers.REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..errors import TeacherError
from ..redact import redact_values, usable_secrets


@dataclass(frozen=True)
class Request:
    """A provider-neutral chat request, JSON-serialisable (see `to_dict` / `from_dict`).

    `messages` items: {"role": "user"|"assistant", "content": [block, ...]} where a block is
    {"type": "text", "text": ...} or {"type": "image", "media_type": "image/png", "data_b64": ...}.
    """

    system: str
    messages: list[dict]
    max_tokens: int
    temperature: float = 0.0
    response_schema: dict | None = None  # JSON schema of the structured reply (tool use / json_schema)
    schema_name: str = "reply"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(**d)

    def canonical_json(self) -> str:
        """Sorted-key compact JSON of every field. Built from the fields directly rather than `to_dict`
        (whose deep copy cost ~100 us a request); the text, and so every cache key, is the same."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def cache_key(self, provider: str, model: str) -> str:
        """sha256 over provider, model and every request field (image bytes included, as base64).
        `provider` is the teacher's `cache_scope` (the provider, plus the endpoint for other servers)."""
        h = hashlib.sha256()
        h.update(f"{provider}\x00{model}\x00".encode())
        h.update(self.canonical_json().encode())
        return h.hexdigest()

    def text(self) -> str:
        """All text blocks of all messages, joined (for token estimates and debugging)."""
        parts = [self.system]
        for m in self.messages:
            parts.extend(b.get("text", "") for b in m["content"] if b.get("type") == "text")
        return "\n".join(parts)

    def image_count(self) -> int:
        return sum(1 for m in self.messages for b in m["content"] if b.get("type") == "image")


@dataclass
class Reply:
    """What a provider answered. For structured output `text` is the JSON string and `data` the object."""

    text: str
    data: dict | None
    input_tokens: int
    output_tokens: int
    stop_reason: str | None  # "end_turn"/"tool_use"/"max_tokens"/"refusal" (Anthropic), "stop"/"length"
    extra: dict = field(default_factory=dict)  # provider details worth keeping (message id, model)

    @property
    def truncated(self) -> bool:
        return self.stop_reason in TRUNCATED_STOP_REASONS

    @property
    def refused(self) -> bool:
        """The model declined (a safety refusal) or a content filter withheld the answer."""
        return self.stop_reason in REFUSED_STOP_REASONS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reply:
        return cls(**d)

    def redacted(self, secrets: tuple[str, ...]) -> Reply:
        """This reply with `secrets` (the API keys in use) replaced by *** in its text, data and extra: a
        server or proxy that echoes a key must not get it stored in a dataset or the reply cache."""
        if not secrets:
            return self
        return dataclasses.replace(self, text=redact_values(self.text, secrets),
                                   data=redact_values(self.data, secrets),
                                   extra=redact_values(self.extra, secrets))


TRUNCATED_STOP_REASONS = frozenset({"max_tokens", "length", "model_context_window_exceeded"})
# Anthropic "refusal"; OpenAI "content_filter" (content omitted) and message.refusal (mapped to "refusal")
REFUSED_STOP_REASONS = frozenset({"refusal", "content_filter"})


class RetryableError(Exception):
    """A transient failure worth retrying: 429, 5xx, 529 overloaded, timeout, dropped connection."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class FatalTeacherError(TeacherError):
    """A failure that retrying cannot fix and that every request would hit (bad key, no access, unknown
    model, out of credit): stop the run. Per-request refusals are the subclass `RequestRejected`."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class RequestRejected(FatalTeacherError):
    """The provider refused this one request (HTTP 400/413/422: a too-long prompt, an oversized or corrupt
    image). Sending it again cannot help, but other requests may succeed: the engine fails the row with the
    provider's message and goes on (and stops when many requests in a row are refused the same way)."""


class Teacher(ABC):
    """One provider. Subclasses set `provider`, `key_env_var` and implement `send` (and the batch methods)."""

    provider: ClassVar[str]
    key_env_var: ClassVar[str | None] = None
    base_url_env: ClassVar[str | None] = None  # the variable the SDK reads when no base_url is given
    official_hosts: ClassVar[tuple[str, ...]] = ()  # the provider's own API (and its subdomains)
    default_model: ClassVar[str | None] = None
    supports_batch: ClassVar[bool] = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries_in_sdk: int = 0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries_in_sdk = max_retries_in_sdk
        self._rate_limit: dict | None = None
        self._keys: tuple[str | None, ...] = ()  # the API keys this teacher sends

    def secrets(self) -> tuple[str, ...]:
        """The API keys in use, longest first: redacted from replies before anything stores them."""
        return usable_secrets(self._keys)

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def cache_scope(self) -> str:
        """What the reply cache keys name besides the model (see `scope_for`)."""
        return self.scope_for(self.base_url)

    @classmethod
    def scope_for(cls, base_url: str | None) -> str:
        """The provider alone for its official API, so cache entries made before endpoints entered the key
        stay valid; `provider@URL` for any other server (vLLM, Ollama, a proxy), because two servers may
        serve different models under one name. The URL is the one the SDK will use (`base_url`, else the
        provider's base-URL variable), normalised, without user:password."""
        url = base_url or (os.environ.get(cls.base_url_env) if cls.base_url_env else None)
        if not url or not url.strip():
            return cls.provider
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        if any(host == h or host.endswith("." + h) for h in cls.official_hosts):
            return cls.provider
        netloc = parts.netloc.rpartition("@")[2].lower()
        query = f"?{parts.query}" if parts.query else ""
        return f"{cls.provider}@{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}{query}"

    @abstractmethod
    async def send(self, request: Request) -> Reply:
        """One HTTP call. Raises RetryableError (transient) or FatalTeacherError (stop the run)."""

    def rate_limit_hint(self) -> dict | None:
        """Latest rate-limit information seen, normalised:
        {"requests_remaining": int|None, "requests_reset_s": float|None,
         "tokens_remaining": int|None, "tokens_reset_s": float|None, "retry_after": float|None}."""
        return self._rate_limit

    async def submit_batch(self, items: list[tuple[str, Request]]) -> str:
        """Submit (custom_id, request) pairs through the provider's batch API; returns the batch id."""
        raise FatalTeacherError(f"the {self.provider} teacher has no batch API; run without --batch")

    async def batch_status(self, batch_id: str) -> dict:
        """{"state": "in_progress"|"ended", "counts": {...}, "provider_status": str}."""
        raise FatalTeacherError(f"the {self.provider} teacher has no batch API")

    async def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        """custom_id -> Reply, or an error text for a request the provider could not answer."""
        raise FatalTeacherError(f"the {self.provider} teacher has no batch API")

    async def aclose(self) -> None:
        """Close network clients (optional)."""
        return None
