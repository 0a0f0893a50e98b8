"""Keep secrets out of manifests, cards, caches and logs."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

_SECRET_OPTS = {"--api-key", "--token", "--hf-token", "--key", "--password"}
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.I)
_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"hf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
]
REDACTED = "***"
MIN_SECRET_LEN = 6  # shorter values ("x", "EMPTY": placeholders for keyless local servers) are not secrets


def secret_values() -> list[str]:
    """Values of environment variables that look like secrets (long enough to matter)."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and v and len(v) >= MIN_SECRET_LEN]


def redact_values(value: Any, secrets: Sequence[str]) -> Any:
    """`value` (a string, or dicts and lists holding strings at any depth, keys included) with every
    occurrence of each of `secrets` (longest first) replaced by REDACTED. Only these exact values: this is
    for model replies, where the pattern rules of `redact_text` ("bearer ...") would change honest words."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact_values(k, secrets): redact_values(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(v, secrets) for v in value]
    return value


def usable_secrets(values: Iterable[str | None]) -> tuple[str, ...]:
    """The values worth redacting, longest first (so a key containing another is replaced whole)."""
    return tuple(sorted({v for v in values if v and len(v) >= MIN_SECRET_LEN}, key=len, reverse=True))


def redact_text(text: str, extra: Iterable[str] = ()) -> str:
    for value in sorted({*secret_values(), *extra}, key=len, reverse=True):
        if value:
            text = text.replace(value, REDACTED)
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def redact_argv(argv: list[str]) -> list[str]:
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        opt, eq, _ = arg.partition("=")
        if opt in _SECRET_OPTS:
            if eq:
                out.append(f"{opt}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact_text(arg))
    return out
