"""Publish one teacher dataset (scores / corrections) from a rationales dataset.

The one code path behind `ares-data score|correct` and the training loop's teacher stages, so the same
inputs, teacher and task settings give the same build key (and so the same version) from either::

    from ares_data.engine.stage import find_teacher_dataset, publish_teacher_dataset
    inputs = TeacherInputs.resolve(store, "rats@v1", None, task.kind)
    version = find_teacher_dataset(store, inputs, "score", task, teacher.spec, "rats-scores",
                                   scope=teacher.cache_scope)
    if version is None:
        version, stats = asyncio.run(publish_teacher_dataset(store, inputs, "score", task, teacher,
                                                             name="rats-scores", engine={"concurrency": 16}))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import TeacherError
from ..redact import redact_text
from ..store import Store, Version, build_key
from .cache import RequestCache
from .engine import Stats, run_task
from .inputs import TeacherInputs
from .log import RequestLog
from .pricing import PriceTable

USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd", "spent_usd", "elapsed_s")
COUNT_KEYS = ("ok", "failed", "cached", "from_cache", "refused_from_cache", "sent", "attempts")


def teacher_build_params(teacher_spec: str, task_name: str, task: Any, inputs: TeacherInputs,
                         scope: str | None = None) -> dict:
    """What decides the rows (besides the parents): the build parameters every path records. `scope`: the
    teacher's `cache_scope`; a server other than the provider's own API (`provider@URL`) enters the build as
    `endpoint` (two servers may serve different models under one name), the official API leaves the build
    key as it was."""
    endpoint = redact_text(scope.partition("@")[2]) if scope else ""  # params go to the manifest
    return {"teacher": teacher_spec, "task": task_name, "prompt_sha": task.prompt_sha,
            "images": task.include_images, "max_tokens": task.max_tokens,
            "retry_failed": inputs.retry_from.ref if inputs.retry_from else None,
            **({"endpoint": endpoint} if endpoint else {})}


def teacher_parents(inputs: TeacherInputs) -> list[Version]:
    return [inputs.rationales] + ([inputs.retry_from] if inputs.retry_from else [])


def find_teacher_dataset(store: Store, inputs: TeacherInputs, task_name: str, task: Any, teacher_spec: str,
                         name: str, *, scope: str | None = None) -> Version | None:
    """The published version an identical build made before, if any (nothing is sent). `scope`: the
    teacher's `cache_scope` (its endpoint, for servers other than the provider's own API)."""
    parents = [p.as_parent() for p in teacher_parents(inputs)]
    params = teacher_build_params(teacher_spec, task_name, task, inputs, scope)
    return store.find_build(name, build_key(task.kind, parents, params))


async def publish_teacher_dataset(
    store: Store,
    inputs: TeacherInputs,
    task_name: str,
    task: Any,
    teacher: Any,
    *,
    name: str,
    engine: dict[str, Any],
    pricing: PriceTable | None = None,
    extra: dict[str, Any] | None = None,
    items: Iterable[Any] | None = None,
    send_as: Any = None,
    stats: Stats | None = None,
    on_progress: Callable[[Stats], None] | None = None,
    log: RequestLog | None = None,
) -> tuple[Version, Stats]:
    """Run the engine over `inputs` (or `items`) and publish the rows atomically as `name`; closes
    `teacher`. `engine`: run_task options (concurrency, rpm, tpm, timeout, max_attempts, max_cost), also
    recorded in the manifest; `log`: a RequestLog (`--log FILE`). Raises FatalTeacherError /
    BudgetExceeded with nothing published."""
    pricing = pricing or PriceTable()
    stats = stats or Stats(total=len(inputs))
    warning = pricing.warning(teacher.provider, teacher.model)
    manifest_extra: dict[str, Any] = {"teacher": teacher.spec, "prompt_sha": task.prompt_sha,
                                      "engine": dict(engine), "warnings": [warning] if warning else [],
                                      **(extra or {})}
    if getattr(task, "custom_prompt", False):  # a custom template: keep its text with the data (cards)
        manifest_extra["prompt_text"] = redact_text(Path(task.prompt_path).read_text(encoding="utf-8"))
    scope = getattr(teacher, "cache_scope", None)
    params = teacher_build_params(teacher.spec, task_name, task, inputs, scope)
    try:
        with RequestCache.for_store(store.root) as cache, store.writer(
                name, task.kind, parents=teacher_parents(inputs), params=params, extra=manifest_extra) as w:
            first_error = ""
            async for row in run_task(send_as or teacher, task, inputs.items() if items is None else items,
                                      cache=cache, pricing=pricing, on_progress=on_progress, stats=stats,
                                      log=log, **engine):
                w.write(row)
                first_error = first_error or row.get("error") or ""
            _check_answered(stats, teacher.spec, first_error)
            for key in COUNT_KEYS:
                w.count(key, getattr(stats, key))
            # the writer publishes after this block and reads `extra` then, so the totals land in it
            totals = stats.as_dict()
            manifest_extra["usage"] = {k: totals[k] for k in USAGE_KEYS}
            manifest_extra["cost_usd"] = round(stats.cost_usd, 8)
    finally:
        await teacher.aclose()
    return w.result, stats


def _check_answered(stats: Stats, spec: str, first_error: str) -> None:
    """A run in which not one request got an answer (a wrong --base-url, a server that is down) would
    publish only failed rows: stop instead, publishing nothing."""
    if stats.failed and not (stats.ok or stats.sent or stats.from_cache):
        raise TeacherError(
            f"no request got an answer from {spec}: all {stats.failed} rows failed ({first_error}); "
            "nothing was published", hint="check --base-url, the server and the network, then rerun")
