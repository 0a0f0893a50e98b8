"""Items for score / correct: (problem, rationale) pairs streamed from the store, in rationale order.

Problems come from the rationales' parent problems dataset (`Store.parent_chain`); images are read as their
original bytes (no decode/re-encode, so cache keys are stable). With `retry_from` (an earlier output version
of the same rationales) ok rows are copied unchanged (`Done`) and only failed rows are re-requested (`Fresh`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import InputError, UsageError
from ..store import Store, Version
from .engine import Done, Fresh

READ_BATCH = 512


@dataclass
class TeacherInputs:
    store: Store
    rationales: Version
    problems: Version
    retry_from: Version | None = None

    @classmethod
    def resolve(cls, store: Store, rationales_ref: str | None, retry_from_ref: str | None, kind: str,
                ) -> TeacherInputs:
        retry = None
        if retry_from_ref:
            retry = store.resolve_kind(retry_from_ref, kind)
            parent_rats = store.parent_chain(retry, "rationales")
            if rationales_ref and store.resolve(rationales_ref).ref != parent_rats.ref:
                raise UsageError(f"--retry-failed {retry.ref} was made from {parent_rats.ref}, "
                                 f"not from {store.resolve(rationales_ref).ref}",
                                 hint="leave out RATIONALES: it is taken from the earlier version")
            rats = parent_rats
        elif rationales_ref:
            rats = store.resolve_kind(rationales_ref, "rationales")
        else:
            raise UsageError("name the RATIONALES dataset (or --retry-failed OUTPUT@vN)")
        return cls(store, rats, store.parent_chain(rats, "problems"), retry)

    def __len__(self) -> int:
        return int(self.rationales.manifest.get("rows") or len(self.rationales.load()))

    def _problem_lookup(self) -> Any:
        from datasets import Image

        ds = self.problems.load()
        if "image" in ds.column_names:
            ds = ds.cast_column("image", Image(decode=False))
        index = {pid: i for i, pid in enumerate(ds["problem_id"])}

        @lru_cache(maxsize=4096)
        def get(pid: str) -> dict[str, Any] | None:
            i = index.get(pid)
            return None if i is None else ds[i]

        return get

    def items(self) -> Iterator[Any]:
        """(problem, rationale) tuples, or Done/Fresh wrappers with --retry-failed."""
        problem = self._problem_lookup()
        old = iter(_rows(self.retry_from.load())) if self.retry_from else None
        for n, rat in enumerate(_rows(self.rationales.load())):
            prob = problem(rat["problem_id"])
            if prob is None:
                raise InputError(f"problem '{rat['problem_id']}' is not in {self.problems.ref}",
                                 file=self.rationales.ref, row=n, field="problem_id")
            if old is None:
                yield (prob, rat)
                continue
            prev = next(old, None)
            if prev is None or prev.get("rationale_id") != rat["rationale_id"]:
                raise InputError(f"{self.retry_from.ref} is not aligned with {self.rationales.ref}",
                                 file=self.retry_from.ref, row=n, field="rationale_id")
            yield Done(prev) if prev.get("status") == "ok" else Fresh((prob, rat))


def _rows(ds: Any) -> Iterator[dict[str, Any]]:
    for batch in ds.iter(batch_size=READ_BATCH):
        cols = list(batch)
        for i in range(len(batch[cols[0]]) if cols else 0):
            yield {c: batch[c][i] for c in cols}
