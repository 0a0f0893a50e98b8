"""Reading rate-limit headers (Anthropic, OpenAI) into one normalised dict; never reads auth headers."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Collection, Mapping
from datetime import datetime

from ..redact import redact_text
from .base import FatalTeacherError, RequestRejected, RetryableError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    f = _float(value)
    return int(f) if f is not None else None


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    if not headers:
        return None
    ms = _float(headers.get("retry-after-ms"))
    if ms is not None:
        return max(ms / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _float(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def parse_duration(value: str | None) -> float | None:
    """OpenAI reset values: "1s", "6m0s", "20ms", "1h2m3.5s" -> seconds."""
    if not value:
        return None
    plain = _float(value)
    if plain is not None:
        return plain
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT[u] for n, u in parts) if parts else None


def parse_reset_time(value: str | None) -> float | None:
    """Anthropic reset values are RFC 3339 timestamps -> seconds from now."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return parse_duration(value)
    return max(when.timestamp() - time.time(), 0.0)


def anthropic_limits(headers: Mapping[str, str]) -> dict:
    p = "anthropic-ratelimit-"
    return {
        "requests_remaining": _int(headers.get(p + "requests-remaining")),
        "requests_reset_s": parse_reset_time(headers.get(p + "requests-reset")),
        "tokens_remaining": _int(headers.get(p + "tokens-remaining")),
        "tokens_reset_s": parse_reset_time(headers.get(p + "tokens-reset")),
        "retry_after": parse_retry_after(headers),
    }


def openai_limits(headers: Mapping[str, str]) -> dict:
    p = "x-ratelimit-"
    return {
        "requests_remaining": _int(headers.get(p + "remaining-requests")),
        "requests_reset_s": parse_duration(headers.get(p + "reset-requests")),
        "tokens_remaining": _int(headers.get(p + "remaining-tokens")),
        "tokens_reset_s": parse_duration(headers.get(p + "reset-tokens")),
        "retry_after": parse_retry_after(headers),
    }


_FATAL_HINTS = {
    400: "the provider rejected the request; check the model name, --prompt and --base-url (message above)",
    401: "the API key was rejected; check {env}",
    403: "the key has no access to this model or feature; check your plan or choose another model",
    404: "the model or endpoint does not exist; check the teacher spec (provider:MODEL) and --base-url",
    413: "the request is too large; try --no-images or a shorter prompt",
    422: "the provider could not process the request; check the model's supported parameters",
}
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
# 429s that retrying cannot fix: out of credit or over a spend/usage limit (OpenAI error.code / error.type,
# Anthropic error.details.error_code)
QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
    }
)
# Anthropic answers "Your credit balance is too low ..." with a 400 invalid_request_error
QUOTA_MESSAGE = re.compile(
    r"credit balance is too low|insufficient[_ ]quota|exceeded your current quota", re.IGNORECASE
)
# statuses that refuse one request (its size or content), not the account: that row fails, the run goes on
REJECTED_STATUS = frozenset({400, 413, 422})
QUOTA_HINT = (
    "the account is out of credit or over a spend limit, which retrying cannot fix: add credit or raise the "
    "limit, then rerun the same command (answered requests are cached)"
)


def status_error(
    provider: str,
    status: int,
    message: str,
    headers: Mapping[str, str] | None,
    key_env_var: str | None,
    codes: Collection[str] = (),
) -> Exception:
    """One mapping from an HTTP error status (and the provider's error codes) to RetryableError (429, 5xx),
    RequestRejected (400/413/422: this request only; the row fails) or FatalTeacherError (401/403/404, out of
    credit: the run stops)."""
    # providers sometimes echo a masked key ("Incorrect API key provided: sk-ab***yz"): never pass it on
    text = redact_text(f"{provider} HTTP {status}: {message}")
    if status in (400, 429) and (QUOTA_CODES.intersection(codes) or QUOTA_MESSAGE.search(message)):
        return FatalTeacherError(text, status=status, hint=QUOTA_HINT)
    if status in RETRYABLE_STATUS or status >= 500:
        return RetryableError(text, retry_after=parse_retry_after(headers), status=status)
    hint = _FATAL_HINTS.get(status, "see the provider's error message above")
    cls = RequestRejected if status in REJECTED_STATUS else FatalTeacherError
    return cls(text, status=status, hint=hint.format(env=key_env_var or "the API key"))
