"""Request-engine options shared by every teacher command (`score`, `correct`, `judge`): one definition,
so the commands keep the same names, help and limits. The commands'
signatures take their defaults from CONCURRENCY, TIMEOUT and MAX_ATTEMPTS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

NoImagesOpt = Annotated[bool, typer.Option("--no-images", help="Do not send problem images.")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="API base URL (e.g. a vLLM/Ollama "
                                                   "OpenAI-compatible server); default: the SDK's.")]
ConcOpt = Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight at once.")]
RpmOpt = Annotated[Optional[float], typer.Option("--rpm", min=0.001, help="Client-side requests/min limit.")]
TpmOpt = Annotated[Optional[float], typer.Option("--tpm", min=1, help="Client-side tokens/min limit.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.01, help="Seconds per request attempt.")]
AttemptsOpt = Annotated[int, typer.Option("--max-attempts", min=1, help="HTTP attempts per request.")]
MaxTokensOpt = Annotated[Optional[int], typer.Option(
    "--max-tokens", min=1, help="Reply budget in tokens per request (default: the task's, 1024 for "
    "score/correct, 256 for judge; raise it for reasoning models, which spend part of it thinking). Part "
    "of the request: a new value is a new build.")]
MaxCostOpt = Annotated[Optional[float], typer.Option(
    "--max-cost", min=0.0, help="Stop sending once this run would spend more USD; rerun to resume.")]
LogOpt = Annotated[Optional[Path], typer.Option(
    "--log", help="Append one JSON line per HTTP attempt (reply / retry / rejected / gave_up, with status, "
    "error, seconds) to FILE, for debugging long runs; keys are redacted.")]

CONCURRENCY, TIMEOUT, MAX_ATTEMPTS = 16, 60.0, 5  # the signatures' defaults
