"""`--log FILE`: one JSON line per HTTP attempt outcome, for debugging long runs.

Events: `reply` (answered: attempt, seconds, tokens), `retry` (a transient failure: 429/5xx/timeout/...),
`rejected` (400/413/422: the row fails), `gave_up` (attempts exhausted), `failed` (a batch API's
per-request error), `fatal` (the run stops). `key` is the request's cache-key prefix (the same request in
the cache and at the server). Lines are appended and flushed as they happen (a killed run keeps its log) and
go through `redact_text`, so no key reaches the file even if a provider echoes one in an error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..redact import redact_text


class RequestLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, event: str, key: str, **fields: Any) -> None:
        entry = {"t": round(time.time(), 3), "event": event, "key": key[:16], **fields}
        self._file.write(redact_text(json.dumps(entry, ensure_ascii=False)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
