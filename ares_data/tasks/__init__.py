"""Teacher tasks: build a `Request` from (problem, rationale), parse and validate the `Reply`."""

from __future__ import annotations

from .base import Task, ValidationError

__all__ = ["Task", "ValidationError"]
