"""Teacher tasks: build a `Request` from (problem, rationale), parse and validate the `Reply`."""

from __future__ import annotations

from .base import Task, ValidationError
from .correct import CorrectTask, edit_summary
from .score import ScoreTask

TASKS: dict[str, type[Task]] = {"score": ScoreTask, "correct": CorrectTask}

__all__ = ["TASKS", "CorrectTask", "ScoreTask", "Task", "ValidationError", "edit_summary"]
