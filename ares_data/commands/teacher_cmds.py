"""`ares-data score`, `ares-data correct` and `ares-data batch status|collect`: teacher feedback datasets."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..engine import PriceTable, RequestCache, Stats, plan_requests
from ..engine.batch import (
    BatchReplies,
    batch_requests,
    group_results,
    group_status,
    load_record,
    save_record,
    store_results,
    submit_all,
)
from ..engine.engine import Fresh
from ..engine.inputs import TeacherInputs
from ..engine.log import RequestLog
from ..engine.stage import publish_teacher_dataset
from ..errors import UsageError
from ..redact import redact_text
from ..store import Store
from .common import JsonOpt, StoreOpt, emit_json, get_store
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
from .teacher_render import Progress, render_plan, render_summary

app = typer.Typer()
batch_app = typer.Typer(help="Follow and finish teacher requests submitted with --batch.",
                        no_args_is_help=True)
app.add_typer(batch_app, name="batch")

RatArg = Annotated[Optional[str], typer.Argument(help="Rationales dataset NAME[@vN] (its parent problems "
                                                 "dataset supplies question, choices, hint, answer, image).")]
TeacherOpt = Annotated[str, typer.Option("--teacher", help="anthropic:MODEL, openai:MODEL or reference "
                                         "(offline heuristic, no key).")]
OutOpt = Annotated[Optional[str], typer.Option("-o", "--output", help="Output dataset name "
                                               "(default <rationales>-scores / -corrections).")]
PromptOpt = Annotated[Optional[Path], typer.Option("--prompt", help="Prompt template file (default: the "
                                                   "paper's prompt shipped with ares_data).")]
PricesOpt = Annotated[Optional[Path], typer.Option("--prices", help='JSON {"MODEL": {"input": USD_PER_M, '
                                                   '"output": USD_PER_M}} overriding the price table.')]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Print requests, estimated tokens and cost; "
                                      "send nothing.")]
BatchOpt = Annotated[bool, typer.Option("--batch", help="Submit through the provider's batch API (half "
                                        "price); finish with `ares-data batch collect ID`.")]
RetryOpt = Annotated[Optional[str], typer.Option("--retry-failed", help="OUTPUT@vN: re-request only its "
                                                 "failed rows into a new version (ok rows copied; its "
                                                 "--max-tokens unless given).")]


@app.command("score")
def score_cmd(teacher: TeacherOpt, rationales: RatArg = None, output: OutOpt = None,
              prompt: PromptOpt = None, no_images: NoImagesOpt = False, base_url: BaseUrlOpt = None,
              concurrency: ConcOpt = CONCURRENCY, rpm: RpmOpt = None, tpm: TpmOpt = None,
              timeout: TimeoutOpt = TIMEOUT, max_attempts: AttemptsOpt = MAX_ATTEMPTS,
              max_tokens: MaxTokensOpt = None, max_cost: MaxCostOpt = None, prices: PricesOpt = None,
              dry_run: DryOpt = False, batch: BatchOpt = False,
              retry_failed: RetryOpt = None, log: LogOpt = None, min_ok: MinOkOpt = None,
              store: StoreOpt = None, as_json: JsonOpt = False, set_aside: SetAsideOpt = False) -> None:
    """Score every sentence of every rationale in [0, 1] with a teacher -> a scores dataset.

    Rows stay aligned with the rationales (one row each, same order); a reply that cannot be validated is
    retried once stating the error, then kept as status=failed with the reason and the raw reply.
    Answered requests are cached in <store>/.cache/teacher: an interrupted run resumes for free; a request
    the provider refuses (400/413/422) fails its row; auth/model/credit errors stop the run unpublished.
    When no row (or fewer than --min-ok) comes back ok, the rows are published and the command exits 3.

    Example: ares-data score rats --teacher anthropic:claude-3-haiku-20240307 --max-cost 5"""
    _teacher_command("score", **locals())


@app.command("correct")
def correct_cmd(teacher: TeacherOpt, rationales: RatArg = None, output: OutOpt = None,
                prompt: PromptOpt = None, no_images: NoImagesOpt = False, base_url: BaseUrlOpt = None,
                concurrency: ConcOpt = CONCURRENCY, rpm: RpmOpt = None, tpm: TpmOpt = None,
                timeout: TimeoutOpt = TIMEOUT, max_attempts: AttemptsOpt = MAX_ATTEMPTS,
                max_tokens: MaxTokensOpt = None, max_cost: MaxCostOpt = None, prices: PricesOpt = None,
                dry_run: DryOpt = False, batch: BatchOpt = False, retry_failed: RetryOpt = None,
                log: LogOpt = None, min_ok: MinOkOpt = None, store: StoreOpt = None,
                as_json: JsonOpt = False, set_aside: SetAsideOpt = False) -> None:
    """Have a teacher correct every rationale -> a corrections dataset (segmented, with an edit summary).

    Same engine, cache, cost control and resume as `score`.

    Example: ares-data correct rats --teacher openai:gpt-4o-mini -o rats-fixed"""
    _teacher_command("correct", **locals())


def _make_task(task_name: str, prompt: Path | None, images: bool, max_tokens: int | None = None) -> Any:
    from ..tasks import TASKS

    return TASKS[task_name](prompt_path=prompt, include_images=images, max_tokens=max_tokens)


def _make_teacher(spec: str, base_url: str | None, timeout: float) -> Any:
    from ..teachers import make_teacher

    return make_teacher(spec, base_url=base_url, timeout=timeout)


def _teacher_command(task_name: str, *, rationales: str | None, teacher: str, output: str | None,
                     prompt: Path | None, no_images: bool, base_url: str | None, dry_run: bool, batch: bool,
                     retry_failed: str | None, store: Path | None, as_json: bool, prices: Path | None,
                     max_tokens: int | None, log: Path | None, set_aside: bool, min_ok: float | None,
                     **engine: Any) -> None:
    from ..tasks import TASKS

    s = get_store(store)
    if set_aside:
        set_aside_damaged_cache(s.root)
    inputs = TeacherInputs.resolve(s, rationales, retry_failed, TASKS[task_name].kind)
    if max_tokens is None and inputs.retry_from is not None:  # retried rows keep the earlier reply budget
        max_tokens = inputs.retry_from.manifest.get("params", {}).get("max_tokens")
    task = _make_task(task_name, prompt, not no_images, max_tokens)
    default = inputs.retry_from.name if inputs.retry_from else f"{inputs.rationales.name}-{task.kind}"
    name = output or default
    pricing = PriceTable.load(prices)
    if dry_run:
        from ..teachers import parse_spec, teacher_class

        provider, model = parse_spec(teacher)
        model = model or teacher_class(provider).default_model or ""
        with RequestCache.for_store(s.root) as cache:
            plan = plan_requests(provider, model, task, inputs.items(), cache=cache, pricing=pricing,
                                 batch=batch, scope=teacher_class(provider).scope_for(base_url))
        plan.update(teacher=teacher, output=name, sent=0)
        emit_json(plan) if as_json else render_plan(plan)
        return
    live = _make_teacher(teacher, base_url, engine["timeout"])
    run = RunSpec(s, task_name, task, inputs, name, live, base_url, prompt, pricing, engine, as_json)
    run.prices_file, run.log_file, run.min_ok = prices, log, min_ok
    asyncio.run(run.submit() if batch else run.execute(inputs.items()))


class RunSpec:
    """Everything one score/correct run needs, so `batch collect` can rebuild it from a record."""

    def __init__(self, store: Store, task_name: str, task: Any, inputs: TeacherInputs, name: str,
                 teacher: Any, base_url: str | None, prompt: Path | None, pricing: PriceTable,
                 engine: dict[str, Any], as_json: bool) -> None:
        self.store, self.task_name, self.task, self.inputs, self.name = store, task_name, task, inputs, name
        self.teacher, self.base_url, self.prompt, self.pricing = teacher, base_url, prompt, pricing
        self.engine, self.as_json = engine, as_json
        self.prices_file: Path | None = None
        self.log_file: Path | None = None
        self.min_ok: float | None = None

    async def execute(self, items: Any, *, send_as: Any = None, extra: dict[str, Any] | None = None) -> None:
        stats = Stats(total=len(self.inputs))
        base_url = redact_text(self.base_url) if self.base_url else None
        log = RequestLog(self.log_file) if self.log_file else None
        with Progress(self.task.kind, stats) as bar, log or contextlib.nullcontext():
            version, _ = await publish_teacher_dataset(
                self.store, self.inputs, self.task_name, self.task, self.teacher, name=self.name,
                engine=self.engine, pricing=self.pricing, extra={"base_url": base_url, **(extra or {})},
                items=items, send_as=send_as, stats=stats, on_progress=bar.update, log=log)
        render_summary(version, stats, version.manifest.get("warnings") or [], self.as_json)
        check_usable(stats.ok, stats.done, self.min_ok, version.ref)

    async def submit(self) -> None:
        with RequestCache.for_store(self.store.root) as cache:
            requests, mapping = batch_requests(self.teacher, self.task, self.inputs.items(), cache)
        if not requests:  # everything is cached already: finish now
            await self.execute(self.inputs.items())
            return
        try:
            ids = await submit_all(self.teacher, requests)
        finally:
            await self.teacher.aclose()
        record = {
            "task": self.task_name, "teacher": self.teacher.spec, "base_url": self.base_url,
            "prompt": str(self.prompt.resolve()) if self.prompt else None, "prompt_sha": self.task.prompt_sha,
            "images": self.task.include_images, "max_tokens": self.task.max_tokens,
            "rationales": self.inputs.rationales.ref,
            "retry_failed": self.inputs.retry_from.ref if self.inputs.retry_from else None,
            "output": self.name, "engine": self.engine, "requests": len(requests), "custom_ids": mapping,
            "prices": str(self.prices_file.resolve()) if self.prices_file else None,
        }
        batch_id = ids[0]
        record["provider_batches"] = ids
        path = save_record(self.store.root, batch_id, record)
        out = {"batch_id": batch_id, "requests": len(requests), "record": str(path),
               "next": f"ares-data batch status {batch_id}; then ares-data batch collect {batch_id}"}
        if self.as_json:
            emit_json(out)
        else:
            from .common import console

            console().print(f"submitted batch [bold]{batch_id}[/bold] ({len(requests)} requests); "
                            f"record {path}\nnext: {out['next']}")


def _batch_teacher(store: Path | None, batch_id: str) -> tuple[Store, dict[str, Any], Any]:
    s = get_store(store)
    record = load_record(s.root, batch_id)
    return s, record, _make_teacher(record["teacher"], record.get("base_url"), record["engine"]["timeout"])


@batch_app.command("status")
def batch_status_cmd(batch_id: Annotated[str, typer.Argument(help="Batch id printed by --batch.")],
                     store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show the provider's progress of a submitted batch.

    Example: ares-data batch status msgbatch_01abc"""
    s, record, teacher = _batch_teacher(store, batch_id)

    async def go() -> dict:
        try:
            return await group_status(teacher, record.get("provider_batches") or [batch_id])
        finally:
            await teacher.aclose()

    status = asyncio.run(go())
    out = {"batch_id": batch_id, "teacher": record["teacher"], "output": record["output"],
           "requests": record["requests"], **status}
    if as_json:
        emit_json(out)
    else:
        from .common import console

        console().print(f"{batch_id}: {status['state']} {status.get('counts', {})} "
                        f"({record['requests']} requests for {record['output']})")


@batch_app.command("collect")
def batch_collect_cmd(batch_id: Annotated[str, typer.Argument(help="Batch id printed by --batch.")],
                      output: OutOpt = None, min_ok: MinOkOpt = None, store: StoreOpt = None,
                      as_json: JsonOpt = False) -> None:
    """Fetch a finished batch's results and publish the dataset (failed requests become failed rows).

    Example: ares-data batch collect msgbatch_01abc"""
    s, rec, teacher = _batch_teacher(store, batch_id)
    prompt = Path(rec["prompt"]) if rec.get("prompt") else None
    task = _make_task(rec["task"], prompt, rec["images"], rec.get("max_tokens"))
    if task.prompt_sha != rec["prompt_sha"]:
        raise UsageError(f"the prompt template changed since batch {batch_id} was submitted",
                         hint=f"restore {rec.get('prompt') or 'the default prompt'} or submit a new batch")
    inputs = TeacherInputs.resolve(s, rec["rationales"], rec.get("retry_failed"), task.kind)
    run = RunSpec(s, rec["task"], task, inputs, output or rec["output"], teacher, rec.get("base_url"),
                  prompt, PriceTable.load(rec.get("prices")), rec["engine"], as_json)
    run.min_ok = min_ok
    asyncio.run(_collect(run, batch_id, rec))


async def _collect(run: RunSpec, batch_id: str, rec: dict[str, Any]) -> None:
    ids = rec.get("provider_batches") or [batch_id]
    status = await group_status(run.teacher, ids)
    if status["state"] != "ended":
        await run.teacher.aclose()
        raise UsageError(f"batch {batch_id} is still {status.get('provider_status') or status['state']} "
                         f"({status.get('counts', {})})", hint=f"check again with `ares-data batch status "
                         f"{batch_id}`; collect once it has ended")
    results = await group_results(run.teacher, ids)
    with RequestCache.for_store(run.store.root) as cache:
        errors = store_results(results, rec["custom_ids"], cache)
    items = (it.args if isinstance(it, Fresh) else it for it in run.inputs.items())
    await run.execute(items, send_as=BatchReplies(run.teacher, errors),
                      extra={"batch": {"id": batch_id, "errored": len(errors)}})
