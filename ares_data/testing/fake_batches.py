"""Batch endpoints of the fake teacher server: Anthropic Message Batches and OpenAI Files + Batch API.

Batches are answered at creation (faults from the queue / rate apply per item) and report `in_progress`
until `batch_delay_s` has passed."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .fake_bodies import anthropic_error, openai_error
from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from .fake_teacher import FakeTeacher

_FAILING = {"429", "529", "500", "400", "401", "403", "404", "hang", "drop", "truncate", "badjson"}


@dataclass
class _Batch:
    id: str
    provider: str
    created: float
    results: list[dict] = field(default_factory=list)  # per item: {"custom_id", "ok", "body"|"error"}
    input_file_id: str = ""
    endpoint: str = ""
    output_file: str | None = None
    error_file: str | None = None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


_ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _bad_custom_ids(ids: list, *, anthropic: bool) -> str | None:
    """What the real APIs reject: missing or duplicate custom ids (and, for Anthropic, ids outside
    ^[A-Za-z0-9_-]{1,64}$)."""
    if not ids:
        return "a batch needs at least one request"
    for cid in ids:
        if not isinstance(cid, str) or not cid or (anthropic and not _ANTHROPIC_ID.fullmatch(cid)):
            return f"invalid custom_id {cid!r}"
    if len(set(ids)) != len(ids):
        return "custom_id values must be unique within a batch"
    return None


def parse_multipart(req: HttpRequest) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data -> {field: (filename, bytes)}."""
    head = f"Content-Type: {req.headers.get('content-type', '')}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return out


class BatchStore:
    def __init__(self, fake: FakeTeacher) -> None:
        self.fake = fake
        self.batches: dict[str, _Batch] = {}
        self.files: dict[str, tuple[str, bytes]] = {}  # id -> (filename, content)
        self.auth = ""  # the key header of the latest batch call (the `echokey` fault repeats it)

    def _ended(self, b: _Batch) -> bool:
        return time.time() - b.created >= self.fake.options.batch_delay_s

    def _answer_item(self, provider: str, body: dict) -> dict:
        from .fake_teacher import content_hash

        fake = self.fake
        key = content_hash(body)
        fake.stats.by_hash[key] = fake.stats.by_hash.get(key, 0) + 1
        fault = fake.draw_fault(key)
        if fault in _FAILING:
            fake._fault_count(fault)
            return {
                "ok": False,
                "status": int(fault) if fault.isdigit() else 500,
                "error": f"injected fault {fault}",
            }
        fake.stats.answered_by_hash[key] = fake.stats.answered_by_hash.get(key, 0) + 1
        echo = self.auth if fault == "echokey" else ""
        return {"ok": True, "body": fake.reply_body(provider, body, fault, echo=echo)}

    def route(self, req: HttpRequest, path: str) -> HttpResponse:
        parts = path.strip("/").split("/")
        self.auth = req.headers.get("x-api-key") or req.headers.get("authorization") or ""
        if parts[:3] == ["v1", "messages", "batches"]:
            self.fake.count(
                f"anthropic:/v1/messages/batches{'/{id}' if len(parts) > 3 else ''}"
                f"{'/results' if len(parts) > 4 else ''}"
            )
            if req.method == "POST" and len(parts) == 3:
                return self._anthropic_create(json.loads(req.body))
            if req.method == "GET" and len(parts) == 4:
                return self._json(self._anthropic_object(self._get(parts[3]), req))
            if req.method == "GET" and len(parts) == 5 and parts[4] == "results":
                return self._anthropic_results(self._get(parts[3]))
        elif parts[:2] == ["v1", "files"]:
            self.fake.count("openai:/v1/files" + ("/{id}/content" if len(parts) == 4 else ""))
            if req.method == "POST" and len(parts) == 2:
                return self._file_create(req)
            if req.method == "GET" and len(parts) == 4 and parts[3] == "content":
                if parts[2] not in self.files:
                    raise KeyError(f"no file {parts[2]}")
                return HttpResponse(200, self.files[parts[2]][1], content_type="application/octet-stream")
        elif parts[:2] == ["v1", "batches"]:
            self.fake.count("openai:/v1/batches" + ("/{id}" if len(parts) == 3 else ""))
            if req.method == "POST" and len(parts) == 2:
                return self._openai_create(json.loads(req.body))
            if req.method == "GET" and len(parts) == 3:
                return self._json(self._openai_object(self._get(parts[2])))
        if parts[:2] == ["v1", "messages"]:
            return self._json(anthropic_error(404, f"no route {path}"), 404)
        return self._json(openai_error(404, f"no route {path}"), 404)

    def _get(self, batch_id: str) -> _Batch:
        if batch_id not in self.batches:
            raise KeyError(f"no batch {batch_id}")
        return self.batches[batch_id]

    @staticmethod
    def _json(obj: Any, status: int = 200) -> HttpResponse:
        return HttpResponse(status, json.dumps(obj).encode())

    # -- Anthropic --------------------------------------------------------------------------------
    def _anthropic_create(self, body: dict) -> HttpResponse:
        problem = _bad_custom_ids([item.get("custom_id") for item in body["requests"]], anthropic=True)
        if problem:
            return self._json(
                {"type": "error", "error": {"type": "invalid_request_error", "message": problem}}, 400
            )
        b = _Batch("msgbatch_" + uuid.uuid4().hex[:24], "anthropic", time.time())
        for item in body["requests"]:
            b.results.append(
                {"custom_id": item["custom_id"], **self._answer_item("anthropic", item["params"])}
            )
        self.batches[b.id] = b
        return self._json(self._anthropic_object(b, None))

    def _anthropic_object(self, b: _Batch, req: HttpRequest | None) -> dict:
        ended = self._ended(b)
        ok = sum(r["ok"] for r in b.results)
        host = req.headers.get("host", "127.0.0.1") if req else None
        counts = {
            "processing": 0 if ended else len(b.results),
            "succeeded": ok if ended else 0,
            "errored": len(b.results) - ok if ended else 0,
            "canceled": 0,
            "expired": 0,
        }
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": _iso(b.created),
            "expires_at": _iso(b.created + 86400),
            "ended_at": _iso(b.created) if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"http://{host}/v1/messages/batches/{b.id}/results" if ended and host else None,
        }

    def _anthropic_results(self, b: _Batch) -> HttpResponse:
        if not self._ended(b):
            return self._json(
                {"type": "error", "error": {"type": "not_found_error", "message": "batch still in progress"}},
                404,
            )
        lines = []
        for r in b.results:
            if r["ok"]:
                result = {"type": "succeeded", "message": r["body"]}
            else:
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "api_error", "message": r["error"]}},
                }
            lines.append(json.dumps({"custom_id": r["custom_id"], "result": result}))
        return HttpResponse(200, ("\n".join(lines) + "\n").encode(), content_type="application/binary")

    # -- OpenAI -----------------------------------------------------------------------------------
    def _file_create(self, req: HttpRequest) -> HttpResponse:
        form = parse_multipart(req)
        filename, content = form["file"]
        file_id = "file-" + uuid.uuid4().hex[:24]
        self.files[file_id] = (filename or "upload.jsonl", content)
        purpose = form.get("purpose", (None, b"batch"))[1].decode()
        return self._json(
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
            }
        )

    def _store_file(self, name: str, lines: list[str]) -> str | None:
        if not lines:
            return None
        file_id = "file-" + uuid.uuid4().hex[:24]
        self.files[file_id] = (name, ("\n".join(lines) + "\n").encode())
        return file_id

    def _openai_create(self, body: dict) -> HttpResponse:
        _, content = self.files[body["input_file_id"]]
        b = _Batch(
            "batch_" + uuid.uuid4().hex[:24],
            "openai",
            time.time(),
            input_file_id=body["input_file_id"],
            endpoint=body.get("endpoint", "/v1/chat/completions"),
        )
        items = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        problem = _bad_custom_ids([item.get("custom_id") for item in items], anthropic=False)
        if problem:
            return self._json({"error": {"message": problem, "type": "invalid_request_error"}}, 400)
        for item in items:
            b.results.append({"custom_id": item["custom_id"], **self._answer_item("openai", item["body"])})
        out, err = [], []
        for r in b.results:
            rid = "batch_req_" + uuid.uuid4().hex[:16]
            if r["ok"]:
                resp = {"status_code": 200, "request_id": rid, "body": r["body"]}
                out.append(
                    json.dumps({"id": rid, "custom_id": r["custom_id"], "response": resp, "error": None})
                )
            else:
                resp = {
                    "status_code": r["status"],
                    "request_id": rid,
                    "body": {"error": {"message": r["error"], "type": "server_error"}},
                }
                err.append(
                    json.dumps({"id": rid, "custom_id": r["custom_id"], "response": resp, "error": None})
                )
        b.output_file = self._store_file("output.jsonl", out)
        b.error_file = self._store_file("errors.jsonl", err)
        self.batches[b.id] = b
        return self._json(self._openai_object(b))

    def _openai_object(self, b: _Batch) -> dict:
        ended = self._ended(b)
        ok = sum(r["ok"] for r in b.results)
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "errors": None,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": "completed" if ended else "in_progress",
            "created_at": int(b.created),
            "output_file_id": b.output_file if ended else None,
            "error_file_id": b.error_file if ended else None,
            "request_counts": {
                "total": len(b.results),
                "completed": ok if ended else 0,
                "failed": len(b.results) - ok if ended else 0,
            },
        }
