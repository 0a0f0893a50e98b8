"""Exports for other trainers: each one is a versioned dataset whose parent is the source dataset.

- `export_sft(corrections)`: corrected rationales as TRL prompt/completion records (kind `sft`), or as
  conversational `messages` (kind `sft-chat`), with the problem image in `images`.
- `export_prm(scores, threshold)`: TRL stepwise supervision (kind `prm`): `prompt`, `completions` (the
  sentences), `labels` (score >= threshold), plus the raw `scores`. Text only: TRL's PRMTrainer tokenizes
  `prompt` as a string and has no vision path, so problem images are left out, and the manifest says so
  (`images_left_out`: how many rows had one, and why).
- `export_dpo(scores, pair_by)`: one preference pair per problem (kind `dpo`): `prompt`, `chosen`,
  `rejected`, `images`, from the highest vs lowest mean sentence score, or a correct vs an incorrect
  final answer.

Prompts come from `ares_data.prompting.format_problem`, the formatter the trainer uses too. Images are
kept when any problem in the export has one (`images=None`), or forced on/off. With images, `prompt`,
`completion`, `chosen` and `rejected` are conversational (one-message lists), the form TRL's vision path
needs; an export without images gets the `-text` kind: plain strings and no `images` column, which
text-only models need (TRL treats any `images` column as vision data).

Exports stream: the source is read memory-mapped, BATCH_ROWS rows at a time, and written through
`Store.writer`; the files are byte-identical to building every row in memory first
(tests/test_export_stream.py).
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features, Image, Sequence, Value

from .answers import parse_answer
from .arrow_batches import Rebatch, take_rows
from .errors import UsageError
from .prompting import format_problem
from .schema import KINDS, register_kind
from .stats import read_table
from .store import Store, Version

_IDS = {"problem_id": Value("string"), "rationale_id": Value("string")}
_MESSAGE = [{"role": Value("string"), "content": Value("string")}]
_DPO_IDS = {"problem_id": Value("string"), "chosen_rationale_id": Value("string"),
            "rejected_rationale_id": Value("string"), "chosen_score": Value("float32"),
            "rejected_score": Value("float32")}
# (kind with images, kind without): with images, texts are conversational (lists of messages), which is what
# TRL's vision path needs (it inserts the image placeholders into the user turn); without, plain strings.
_KINDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sft": ({**_IDS, "prompt": _MESSAGE, "completion": _MESSAGE},
            {**_IDS, "prompt": Value("string"), "completion": Value("string")}),
    "sft-chat": ({**_IDS, "messages": _MESSAGE}, {**_IDS, "messages": _MESSAGE}),
    "dpo": ({**_DPO_IDS, "prompt": _MESSAGE, "chosen": _MESSAGE, "rejected": _MESSAGE},
            {**_DPO_IDS, "prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string")}),
}
PRM = Features({**_IDS, "prompt": Value("string"), "completions": Sequence(Value("string")),
                "labels": Sequence(Value("bool")), "scores": Sequence(Value("float32"))})
EXPORT_KINDS = ("sft", "sft-chat", "prm", "dpo")


def _register() -> None:
    for kind, (vision, text) in _KINDS.items():
        if kind not in KINDS:
            register_kind(kind, Features({**vision, "images": Sequence(Image())}))
            register_kind(f"{kind}-text", Features(text))
    if "prm" not in KINDS:
        register_kind("prm", PRM)


_register()


def base_kind(kind: str) -> str:
    """`sft-text` -> `sft`; other kinds unchanged (cards are written per base kind)."""
    return kind[: -len("-text")] if kind.endswith("-text") else kind


BATCH_ROWS = 10_000  # source rows turned into Python objects at a time


def problems_by_id(store: Store, source: Version) -> dict[str, dict[str, Any]]:
    """The problems behind `source` (found through its parents), keyed by problem_id; images undecoded."""
    problems = store.parent_chain(source, "problems").load().cast_column("image", Image(decode=False))
    return {row["problem_id"]: row for row in problems}


def _rationales_table(store: Store, source: Version) -> pa.Table | None:
    """The rationales parent's `rationale_id` and `text`, memory-mapped; None without such a parent."""
    try:
        return read_table(store.parent_chain(source, "rationales"), ["rationale_id", "text"])
    except Exception:  # noqa: BLE001 - no rationales parent: fall back to joined sentences
        return None


def iter_rows(table: pa.Table, columns: list[str]) -> Iterator[dict[str, Any]]:
    """The rows of some columns of a (memory-mapped) table, converted to Python BATCH_ROWS at a time."""
    for batch in table.select(columns).to_batches(max_chunksize=BATCH_ROWS):
        yield from batch.to_pylist()


class _Prompts(dict):
    """problem_id -> formatted prompt, computed on first use (one per problem, not one per row)."""

    def __init__(self, problems: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.problems = problems

    def __missing__(self, pid: str) -> str:
        self[pid] = prompt = format_problem(self.problems[pid])
        return prompt


def _images(problem: dict[str, Any] | None) -> list[dict[str, Any]]:
    img = (problem or {}).get("image")
    return [img] if img and (img.get("bytes") or img.get("path")) else []


def _want_images(problems: dict[str, dict[str, Any]], ids: set[str], images: bool | None) -> bool:
    if images is not None:
        return images
    return any(_images(problems.get(pid)) for pid in ids)


def _publish(store: Store, name: str, kind: str, rows: Iterable[dict[str, Any]], source: Version,
             params: dict[str, Any], counts: dict[str, int], with_images: bool) -> Version:
    """Stream `rows` into the export's kind; `counts` is read after the last row (it may fill meanwhile)."""
    kind = kind if with_images else f"{kind}-text"
    with store.writer(name, kind, parents=[source], params=params) as w:
        for r in rows:
            if not with_images:
                r.pop("images", None)
            elif kind != "sft-chat":  # conversational texts for the vision kinds
                for key, role in (("prompt", "user"), ("completion", "assistant"), ("chosen", "assistant"),
                                  ("rejected", "assistant")):
                    if key in r:
                        r[key] = [{"role": role, "content": r[key]}]
            w.write(r)
        for key, n in counts.items():
            w.count(key, n)
    return w.result


def _kept_corrections(source: Version, problems: dict[str, Any], counts: dict[str, int]
                      ) -> Iterator[dict[str, Any]]:
    table = read_table(source)
    for r in iter_rows(table, ["rationale_id", "problem_id", "corrected", "status"]):
        if r["status"] != "ok" or not (r["corrected"] or "").strip():
            counts["skipped_failed"] += 1
        elif r["problem_id"] not in problems:
            counts["skipped_no_problem"] += 1
        else:
            yield r


def export_sft(store: Store, ref: str, name: str, *, conversational: bool = False,
               images: bool | None = None) -> Version:
    """Corrections -> SFT records (only rows with status ok and a non-empty correction).

    Two streaming passes: the first finds the problems of the kept rows (whether to keep images decides
    the kind), the second writes the rows."""
    source = store.resolve_kind(ref, "corrections")
    problems = problems_by_id(store, source)
    counts: dict[str, int] = defaultdict(int)
    ids = {r["problem_id"] for r in _kept_corrections(source, problems, counts)}
    with_images = _want_images(problems, ids, images)
    prompts = _Prompts(problems)

    def rows() -> Iterator[dict[str, Any]]:
        for r in _kept_corrections(source, problems, defaultdict(int)):
            pid = r["problem_id"]
            row: dict[str, Any] = {"problem_id": pid, "rationale_id": r["rationale_id"],
                                   "images": _images(problems[pid])}
            if conversational:
                row["messages"] = [{"role": "user", "content": prompts[pid]},
                                   {"role": "assistant", "content": r["corrected"]}]
            else:
                row.update(prompt=prompts[pid], completion=r["corrected"])
            yield row

    params = {"export": "sft", "conversational": conversational, "images": with_images}
    return _publish(store, name, "sft-chat" if conversational else "sft", rows(), source, params,
                    counts, with_images)


def export_prm(store: Store, ref: str, name: str, *, threshold: float = 0.5) -> Version:
    """Scores -> TRL stepwise supervision: one label per sentence, `score >= threshold`."""
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    source = store.resolve_kind(ref, "scores")
    problems = problems_by_id(store, source)
    prompts = _Prompts(problems)
    counts: dict[str, int] = defaultdict(int)
    params = {"export": "prm", "threshold": threshold}
    extra: dict[str, Any] = {}
    with_image = pa.array([pid for pid, p in problems.items() if _images(p)], pa.string())
    left_out = 0
    with store.writer(name, "prm", parents=[source], params=params, extra=extra) as w:
        out = Rebatch(w, w.batch_size)  # the batch size the row-by-row writes would use
        for batch in read_table(source, _SCORE_COLS).to_batches(max_chunksize=BATCH_ROWS):
            rows = _prm_batch(batch, problems, prompts, threshold, counts)
            left_out += pc.sum(pc.is_in(rows["problem_id"], value_set=with_image)).as_py() or 0
            out.add(rows)
        out.flush()
        for key, n in counts.items():
            w.count(key, n)
        if left_out:  # read by the writer when it publishes, after this block
            extra["images_left_out"] = {"rows": left_out, "why": PRM_IMAGES_WHY}
    return w.result


PRM_IMAGES_WHY = ("TRL's PRMTrainer is text-only (it tokenizes `prompt` as a string and drops every other "
                  "column), so a prm export carries no images; they stay in the problems parent, joined "
                  "on problem_id")


_SCORE_COLS = ["rationale_id", "problem_id", "sentences", "scores", "status"]


def _prm_batch(batch: pa.RecordBatch, problems: dict[str, Any], prompts: _Prompts, threshold: float,
               counts: dict[str, int]) -> pa.Table:
    """One source batch as PRM rows, column-wise (the same values the row-by-row form gives)."""
    ok = pc.fill_null(_usable(batch), False)
    batch = batch.filter(ok)
    _add(counts, "skipped_failed", len(ok) - batch.num_rows)
    known = pc.is_in(batch["problem_id"], value_set=pa.array(list(problems), pa.string()))
    if batch.num_rows and not pc.all(known).as_py():
        _add(counts, "skipped_no_problem", batch.num_rows - (pc.sum(known).as_py() or 0))
        batch = batch.filter(known)
    unique = pc.unique(batch["problem_id"])
    prompt = pa.array([prompts[p] for p in unique.to_pylist()], pa.string()).take(
        pc.index_in(batch["problem_id"], value_set=unique))
    scores = batch["scores"]
    offsets = pc.subtract(scores.offsets, scores.offsets[0])
    labels = pc.greater_equal(pc.list_flatten(scores).cast(pa.float64()), threshold)
    return pa.table({"problem_id": batch["problem_id"], "rationale_id": batch["rationale_id"],
                     "prompt": prompt, "completions": batch["sentences"],
                     "labels": pa.ListArray.from_arrays(offsets, labels), "scores": scores})


def _add(counts: dict[str, int], key: str, n: int) -> None:
    if n:  # a count appears in the manifest only once something was counted, as before
        counts[key] += n


def _usable(batch: pa.RecordBatch) -> pa.Array:
    """Status ok and one score per sentence, per row (null where a list is null)."""
    n_scores = pc.list_value_length(batch["scores"])
    return pc.and_(pc.and_(pc.equal(batch["status"], "ok"), pc.greater(n_scores, 0)),
                   pc.equal(n_scores, pc.list_value_length(batch["sentences"])))


def export_dpo(store: Store, ref: str, name: str, *, pair_by: str = "score", min_margin: float = 0.0,
               images: bool | None = None) -> Version:
    """Scores -> one (chosen, rejected) pair per problem.

    `pair_by="score"`: the rationale with the highest mean sentence score vs the lowest, when the gap is
    more than `min_margin`. `pair_by="answer"`: the best-scored rationale whose final answer is correct vs
    the worst-scored one whose answer is wrong (the LLaVA-Reasoner-DPO recipe).

    Memory: one pass keeps (problem, mean score, row number) per usable score row (about 20 bytes each)
    and the rationale-id lookup of the rationales parent; texts are then read one problem group at a time
    from the memory-mapped files, and only the chosen pairs (two texts per problem) are held until written.
    """
    if pair_by not in ("score", "answer"):
        raise UsageError(f"--pair-by must be 'score' or 'answer', got '{pair_by}'")
    source = store.resolve_kind(ref, "scores")
    problems = problems_by_id(store, source)
    table = read_table(source)
    counts: dict[str, int] = defaultdict(int)
    pids, order, starts = _dpo_groups(table, counts)
    prompts = _Prompts(problems)
    rows = []
    for pid, cands in zip(pids, _candidates(store, source, table, order, starts), strict=True):
        problem = problems.get(pid)
        pair = _pick_pair(cands, problem, pair_by, min_margin) if problem else None
        if pair is None:
            counts["no_pair"] += 1
            continue
        (cs, cid, ctext), (rs, rid, rtext) = pair
        rows.append({"problem_id": pid, "prompt": prompts[pid], "chosen": ctext, "rejected": rtext,
                     "chosen_rationale_id": cid, "rejected_rationale_id": rid, "chosen_score": cs,
                     "rejected_score": rs, "images": _images(problem)})
    with_images = _want_images(problems, {r["problem_id"] for r in rows}, images)
    params = {"export": "dpo", "pair_by": pair_by, "min_margin": min_margin, "images": with_images}
    return _publish(store, name, "dpo", rows, source, params, counts, with_images)


def _dpo_groups(table: pa.Table, counts: dict[str, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(problem ids in first-seen order, usable rows as (mean, row) grouped by problem, group starts)."""
    codes: dict[str, int] = {}
    code, means, rows = array("i"), array("d"), array("q")
    first = 0
    for batch in table.select(_SCORE_COLS).to_batches(max_chunksize=BATCH_ROWS):
        ok = pc.fill_null(_usable(batch), False)
        _add(counts, "skipped_failed", len(ok) - (pc.sum(ok).as_py() or 0))
        pids = pc.filter(batch["problem_id"], ok)
        unique = pc.unique(pids)
        batch_codes = pa.array([codes.setdefault(p, len(codes)) for p in unique.to_pylist()], pa.int32())
        code.extend(batch_codes.take(pc.index_in(pids, value_set=unique)).to_numpy())
        means.extend(sum(s) / len(s) for s in pc.filter(batch["scores"], ok).to_pylist())
        rows.extend(first + np.flatnonzero(ok.to_numpy(zero_copy_only=False)))
        first += batch.num_rows
    order = np.argsort(np.frombuffer(code, dtype=np.int32), kind="stable")
    starts = np.searchsorted(np.frombuffer(code, dtype=np.int32)[order], np.arange(len(codes) + 1))
    grouped = np.stack([np.frombuffer(means, dtype=np.float64)[order],
                        np.frombuffer(rows, dtype=np.int64)[order].astype(np.float64)], axis=1)
    return list(codes), grouped, starts


def _candidates(store: Store, source: Version, table: pa.Table, grouped: np.ndarray, starts: np.ndarray
                ) -> Iterator[list[tuple[float, str, str]]]:
    """Per problem group, its (mean, rationale_id, text) candidates, texts read BATCH_ROWS rows at a time."""
    rats = _rationales_table(store, source)
    where = None
    if rats is not None:  # the last row of a repeated rationale_id wins, as a dict built from the rows would
        n = rats.num_rows
        reverse = pa.array(np.arange(n - 1, -1, -1))
        ids = rats["rationale_id"].take(reverse).combine_chunks()
        found = pc.index_in(table["rationale_id"], value_set=ids)
        where = (n - 1 - pc.fill_null(found, n).to_numpy()).astype(np.int64)  # -1: not found
    g = 0
    while g < len(starts) - 1:
        end = g + 1
        while end < len(starts) - 1 and starts[end + 1] - starts[g] <= BATCH_ROWS:
            end += 1
        lo, hi = int(starts[g]), int(starts[end])
        rows = grouped[lo:hi, 1].astype(np.int64)
        part = take_rows(table.select(["rationale_id", "sentences"]), rows)
        joined = pc.binary_join(part["sentences"], " ").to_pylist()
        texts = _texts(rats, where[rows]) if rats is not None else [None] * len(rows)
        cands = [(float(m), r, t or j) for m, r, t, j in
                 zip(grouped[lo:hi, 0], part["rationale_id"].to_pylist(), texts, joined, strict=True)]
        for k in range(g, end):
            yield cands[int(starts[k]) - lo:int(starts[k + 1]) - lo]
        g = end


def _pick_pair(cands: list[tuple[float, str, str]], problem: dict[str, Any], pair_by: str,
               min_margin: float) -> tuple[tuple[float, str, str], tuple[float, str, str]] | None:
    ranked = sorted(cands, key=lambda c: (-c[0], c[1]))
    if pair_by == "score":
        best = ranked[0]
        worse = [c for c in ranked if c[2] != best[2]]  # identical texts make no preference
        return (best, worse[-1]) if worse and best[0] - worse[-1][0] > min_margin else None
    answer = problem.get("answer_index")
    choices = list(problem.get("choices") or [])
    right = [c for c in ranked if parse_answer(c[2], choices).index == answer]
    wrong = [c for c in ranked if parse_answer(c[2], choices).index != answer]
    return (right[0], wrong[-1]) if right and wrong else None


def _texts(rats: pa.Table, positions: np.ndarray) -> list[str | None]:
    """The rationales' texts at `positions` (None where a position is -1)."""
    texts: list[str | None] = [None] * len(positions)
    found = np.flatnonzero(positions >= 0)
    taken = take_rows(rats.select(["text"]), positions[found])["text"].to_pylist()
    for i, text in zip(found.tolist(), taken, strict=True):
        texts[i] = text
    return texts


def summary(version: Version) -> dict[str, Any]:
    """What the CLI prints after an export."""
    out = {"ref": version.ref, "kind": version.kind, "rows": version.manifest["rows"],
           "counts": version.manifest.get("counts", {}), "reused": version.reused,
           "params": version.manifest.get("params", {})}
    if "images_left_out" in version.manifest:
        out["images_left_out"] = version.manifest["images_left_out"]
    return out
