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
SetAsideOpt = Annotated[bool, typer.Option(
    "--set-aside-damaged-cache", help="If the reply cache (<store>/.cache/teacher/replies.sqlite) is "
    "damaged, rename it to replies.sqlite.damaged-TIME and go on with an empty one (the replies it held "
    "are asked for, and paid, again).")]


def set_aside_damaged_cache(store_root: Path) -> None:
    """--set-aside-damaged-cache: move a damaged reply cache aside, saying so on stderr."""
    from ..engine.cache import RequestCache
    from .common import err_console

    moved = RequestCache.set_aside_if_damaged(store_root)
    if moved is not None:
        err_console().print(f"the damaged reply cache was moved to {moved}; starting an empty cache",
                            markup=False, highlight=False)


MinOkOpt = Annotated[Optional[float], typer.Option(
    "--min-ok", min=0.0, max=1.0, help="Fail (exit 3) unless at least this fraction of the rows came back "
    "usable (status ok), e.g. 0.95. Default: fail only when none did; 0 accepts any result. The rows are "
    "published either way, for inspection.")]


def check_usable(ok: int, rows: int, min_ok: float | None, ref: str, *, retry_failed: bool = True) -> None:
    """Raise TooFewUsable when a published teacher dataset has no ok row, or fewer than `min_ok` of them."""
    from ..errors import TooFewUsable

    if rows == 0 or (ok / rows >= min_ok if min_ok is not None else ok > 0):
        return
    hint = f"the reasons are in the rows' `error` column (ares-data stats {ref}); "
    if retry_failed:
        hint += f"re-request the failed rows with --retry-failed {ref}, or "
    hint += ("change what caused them (--max-tokens, --prompt, the teacher) and rerun: the same requests "
             "would get the same replies back from the cache")
    if ok == 0:
        raise TooFewUsable(f"none of the {rows} rows is usable (every one failed); {ref} was published with "
                           "the failed rows for inspection only", hint=hint)
    raise TooFewUsable(f"only {ok} of {rows} rows are usable ({ok / rows:.1%} < --min-ok {min_ok:.1%}); "
                       f"{ref} was published for inspection", hint=hint)


CONCURRENCY, TIMEOUT, MAX_ATTEMPTS = 16, 60.0, 5  # the signatures' defaults
