"""Teacher providers. A spec is "provider:model" ("anthropic:claude-3-haiku-20240307", "openai:gpt-4o-mini")
or "reference" (the offline heuristic teacher). Provider modules are imported lazily so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UsageError
from .base import FatalTeacherError, Reply, Request, RequestRejected, RetryableError, Teacher

# provider prefix -> "module:Class" (one line per provider)
REGISTRY: dict[str, str] = {
    "anthropic": "ares_data.teachers.anthropic:AnthropicTeacher",
    "openai": "ares_data.teachers.openai:OpenAITeacher",
    "reference": "ares_data.teachers.reference:ReferenceTeacher",
}


def teacher_class(provider: str) -> type[Teacher]:
    try:
        target = REGISTRY[provider]
    except KeyError:
        raise UsageError(
            f"unknown teacher provider '{provider}'",
            hint=f"use one of: {', '.join(sorted(REGISTRY))} (e.g. anthropic:claude-3-haiku-20240307)",
        ) from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_spec(spec: str) -> tuple[str, str | None]:
    provider, _, model = spec.strip().partition(":")
    return provider, (model or None)


def make_teacher(spec: str, **kwargs: Any) -> Teacher:
    """Build a teacher from "provider:model"; kwargs go to the constructor (base_url, timeout, ...)."""
    provider, model = parse_spec(spec)
    cls = teacher_class(provider)
    model = model or cls.default_model
    if not model:
        raise UsageError(f"teacher spec '{spec}' names no model", hint=f"write it as {provider}:MODEL")
    return cls(model, **kwargs)


__all__ = [
    "REGISTRY",
    "FatalTeacherError",
    "Reply",
    "Request",
    "RequestRejected",
    "RetryableError",
    "Teacher",
    "make_teacher",
    "parse_spec",
    "teacher_class",
]
