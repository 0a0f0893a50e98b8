"""Teacher tasks: build a `Request` from (problem, rationale), parse and validate the `Reply`."""

from __future__ import annotations

from .base import Task, ValidationError
from .correct import CorrectTask, edit_summary
from .judge import JudgeTask
from .score import ScoreTask

TASKS: dict[str, type[Task]] = {"score": ScoreTask, "correct": CorrectTask, "judge": JudgeTask}

__all__ = ["TASKS", "CorrectTask", "JudgeTask", "ScoreTask", "Task", "ValidationError", "edit_summary"]
