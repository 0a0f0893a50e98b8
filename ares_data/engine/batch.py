"""Batch mode: submit the requests through the teacher's batch API, finish later from any process.

`submit` sends every distinct request the cache cannot answer as one batch and writes
`<store>/.batches/<batch_id>.json`: the teacher spec, the inputs (exact versions), the prompt and its sha,
and the custom_id -> {cache key, first row} mapping. `collect` reads the results, aligns them by custom id,
writes every answer into the request cache (flagged as batch-priced), and then the ordinary engine builds
the rows from the cache: a request the provider could not answer becomes a failed row with its error; a
reply that fails validation gets its one follow-up request live (at the normal price).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, UsageError
from ..redact import redact_text
from ..teachers.base import Reply, Request
from .cache import RequestCache
from .engine import Done, Fresh, RowFailed

BATCH_DIR = ".batches"
_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")


def record_path(store_root: str | Path, batch_id: str) -> Path:
    if not _ID_RE.match(batch_id):
        raise UsageError(f"invalid batch id '{batch_id}'")
    return Path(store_root) / BATCH_DIR / f"{batch_id}.json"


def load_record(store_root: str | Path, batch_id: str) -> dict[str, Any]:
    path = record_path(store_root, batch_id)
    if not path.is_file():
        known = sorted(p.stem for p in (Path(store_root) / BATCH_DIR).glob("*.json"))
        raise NotFoundError(f"no batch '{batch_id}' in {path.parent} (known: {', '.join(known) or 'none'})")
    return json.loads(path.read_text())


def batch_requests(teacher: Any, task: Any, items: Any, cache: RequestCache | None,
                   ) -> tuple[list[tuple[str, Request]], dict[str, dict[str, Any]]]:
    """Distinct requests to submit (cached ones left out) and the custom_id -> {key, row} mapping."""
    out: list[tuple[str, Request]] = []
    mapping: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for row, item in enumerate(items):
        if isinstance(item, Done):
            continue
        fresh = isinstance(item, Fresh)
        request = task.build(*(item.args if fresh else item))
        key = request.cache_key(teacher.cache_scope, teacher.model)
        if key in seen or (not fresh and cache is not None and key in cache):
            continue
        seen.add(key)
        cid = f"req-{len(out):07d}"
        out.append((cid, request))
        mapping[cid] = {"key": key, "row": row}
    return out, mapping


def save_record(store_root: str | Path, batch_id: str, record: dict[str, Any]) -> Path:
    path = record_path(store_root, batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "batch_id": batch_id,
              "submitted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def store_results(results: dict[str, Reply | str], mapping: dict[str, dict[str, Any]],
                  cache: RequestCache) -> dict[str, str]:
    """Write answered requests into the cache; return cache key -> error text for the rest."""
    errors: dict[str, str] = {}
    for cid, entry in mapping.items():
        result = results.get(cid)
        if isinstance(result, Reply):
            cache.put(entry["key"], result, attempts=1, batch=True)
        else:
            errors[entry["key"]] = result or "the batch returned no result for this request"
    return errors


class BatchReplies:
    """Wraps the live teacher while collecting: batch errors fail their rows; other requests (validation
    follow-ups) go to the live API."""

    def __init__(self, teacher: Any, errors: dict[str, str]) -> None:
        self.inner, self.errors = teacher, errors
        self.provider, self.model, self.spec = teacher.provider, teacher.model, teacher.spec
        self.cache_scope, self.secrets = teacher.cache_scope, teacher.secrets  # keys, redacted from replies

    async def send(self, request: Request) -> Reply:
        key = request.cache_key(self.cache_scope, self.model)
        if key in self.errors:
            raise RowFailed(f"the batch API could not answer this request: {self.errors[key]}")
        return await self.inner.send(request)

    def rate_limit_hint(self) -> dict | None:
        return self.inner.rate_limit_hint()


# Provider limits: Anthropic 100,000 requests / 256 MB per batch, OpenAI 50,000 requests / 200 MB per file.
# Larger jobs are split into several provider batches that share one record (named by the first id).
BATCH_MAX_REQUESTS = 20_000
BATCH_MAX_BYTES = 100 * 2**20


def _request_bytes(request: Request) -> int:
    size = len(request.system)
    for m in request.messages:
        for b in m["content"]:
            size += len(b.get("text", "")) + len(b.get("data_b64", ""))
    return size + 512


def chunks(requests: list[tuple[str, Request]], max_requests: int = BATCH_MAX_REQUESTS,
           max_bytes: int = BATCH_MAX_BYTES) -> list[list[tuple[str, Request]]]:
    out: list[list[tuple[str, Request]]] = [[]]
    size = 0
    for item in requests:
        n = _request_bytes(item[1])
        if out[-1] and (len(out[-1]) >= max_requests or size + n > max_bytes):
            out.append([])
            size = 0
        out[-1].append(item)
        size += n
    return out


async def submit_all(teacher: Any, requests: list[tuple[str, Request]]) -> list[str]:
    return [await teacher.submit_batch(part) for part in chunks(requests)]


async def group_status(teacher: Any, ids: list[str]) -> dict[str, Any]:
    """One status for several provider batches: ended when all have ended; counts added up."""
    states = [await teacher.batch_status(i) for i in ids]
    counts: dict[str, int] = {}
    for st in states:
        for k, v in (st.get("counts") or {}).items():
            if isinstance(v, (int, float)):
                counts[k] = counts.get(k, 0) + int(v)
    ended = all(st["state"] == "ended" for st in states)
    provider = sorted({str(st.get("provider_status") or st["state"]) for st in states})
    return {"state": "ended" if ended else "in_progress", "counts": counts,
            "provider_status": ",".join(provider), "provider_batches": len(ids)}


async def group_results(teacher: Any, ids: list[str]) -> dict[str, Reply | str]:
    """Every provider batch's results, with the keys in use redacted (they go to the reply cache)."""
    results: dict[str, Reply | str] = {}
    secrets = teacher.secrets()
    for i in ids:
        for cid, result in (await teacher.batch_results(i)).items():
            is_reply = isinstance(result, Reply)
            results[cid] = result.redacted(secrets) if is_reply else redact_text(result, secrets)
    return results
