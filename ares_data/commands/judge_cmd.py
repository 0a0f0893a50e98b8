"""`ares-data judge A B --teacher SPEC`: pairwise rationale comparison with both presentation orders."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import JsonOpt, StoreOpt, console, emit_json, get_store, published_message
from .engine_opts import (
    CONCURRENCY,
    MAX_ATTEMPTS,
    TIMEOUT,
    AttemptsOpt,
    BaseUrlOpt,
    ConcOpt,
    LogOpt,
    MaxCostOpt,
    MaxTokensOpt,
    MinOkOpt,
    NoImagesOpt,
    RpmOpt,
    SetAsideOpt,
    TimeoutOpt,
    TpmOpt,
    check_usable,
    set_aside_damaged_cache,
)
from .progress import ProgressBar

app = typer.Typer()


class Orders(str, Enum):
    both = "both"
    random = "random"


class PairBy(str, Enum):
    sample = "sample"
    problem = "problem"


TeacherArg = Annotated[str, typer.Option(
    "--teacher", help="The judge: anthropic:MODEL, openai:MODEL or reference.")]
NameOpt = Annotated[str, typer.Option("-o", "--output", help="Name of the judgments dataset.")]
ByOpt = Annotated[PairBy, typer.Option(
    "--by", help="Pair rationales by (problem, sample index), or by problem (first sample of each).")]
OrdersOpt = Annotated[Orders, typer.Option(
    "--orders", help="'both': judge every pair in both orders (cancels position bias); 'random': one "
    "seeded order per pair.")]
ProblemsOpt = Annotated[Optional[str], typer.Option(
    "--problems", help="Problems dataset (default: found among A's parents).")]


@app.command("judge")
def judge_cmd(
    rationales_a: Annotated[str, typer.Argument(help="Rationales dataset A (NAME or NAME@vN).")],
    rationales_b: Annotated[str, typer.Argument(help="Rationales dataset B, compared against A.")],
    teacher: TeacherArg,
    output: NameOpt = "judgments",
    by: ByOpt = PairBy.sample,
    orders: OrdersOpt = Orders.both,
    problems: ProblemsOpt = None,
    prompt: Annotated[Optional[Path], typer.Option("--prompt", help="Judge prompt template file.")] = None,
    base_url: BaseUrlOpt = None,
    no_images: NoImagesOpt = False,
    concurrency: ConcOpt = CONCURRENCY,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    timeout: TimeoutOpt = TIMEOUT,
    max_attempts: AttemptsOpt = MAX_ATTEMPTS,
    max_tokens: MaxTokensOpt = None,
    max_cost: MaxCostOpt = None,
    log: LogOpt = None,
    min_ok: MinOkOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    set_aside: SetAsideOpt = False,
) -> None:
    """Compare two rationale datasets with a teacher as judge: win / tie / loss of A against B with 95%
    confidence intervals (bootstrap over pairs). Every pair is judged with A shown first and with B shown
    first, so a judge that always prefers one position gets 50/50.

    Example: ares-data judge rats-rl@v2 rats@v1 --teacher anthropic:claude-3-haiku-20240307 -o rl-vs-base"""
    from ..engine.log import RequestLog
    from ..judging import run_judge
    from ..teachers import make_teacher

    s = get_store(store)
    if set_aside:
        set_aside_damaged_cache(s.root)
    judge = make_teacher(teacher, base_url=base_url, timeout=timeout)
    engine_options = {"concurrency": concurrency, "rpm": rpm, "tpm": tpm, "timeout": timeout,
                      "max_attempts": max_attempts, "max_cost": max_cost}
    request_log = RequestLog(log) if log else None
    with ProgressBar("judging", quiet=as_json) as update, request_log or contextlib.nullcontext():
        on_progress = (lambda stats: update(stats.done, stats.total)) if update else None
        version, summary = run_judge(
            s, rationales_a, rationales_b, judge, name=output, by=by.value,
            orders=("ab", "ba") if orders == Orders.both else ("random",), problems_ref=problems,
            include_images=not no_images, prompt_path=prompt, engine_options=engine_options,
            on_progress=on_progress, max_tokens=max_tokens, log=request_log,
        )
    if as_json:
        emit_json({"ref": version.ref, "path": str(version.path), "summary": summary,
                   "pairing": version.manifest.get("pairing")})
    else:
        render_summary(summary, f"{rationales_a} (A) vs {rationales_b} (B), judged by {teacher}")
        console().print(published_message(version))
    check_usable(summary["ok"], summary["ok"] + summary["failed"], min_ok, version.ref, retry_failed=False)


def render_summary(summary: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "win (A)", "tie", "loss (B)", "n"):
        table.add_column(col)
    s = summary
    for label, rates, ci, n in (
        ("all judgments", s["rates"], s["ci95"], s["ok"]),
        ("consistent pairs", s["consistent_rates"], s["consistent_ci95"], s["consistent_pairs"]),
    ):
        cells = [f"{rates[k]:.1%} [{ci[k][0]:.0%}, {ci[k][1]:.0%}]" for k in ("win", "tie", "loss")]
        table.add_row(label, *cells, str(n))
    c = console()
    c.print(table)
    bias = summary.get("position_a_preferred")
    c.print(f"failed judgments: {summary['failed']}; first position preferred in "
            f"{'n/a' if bias is None else f'{bias:.0%}'} of decided judgments; CI: {summary['ci_method']}")
