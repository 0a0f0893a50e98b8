"""Exports for other trainers: each one is a versioned dataset whose parent is the source dataset.

- `export_sft(corrections)`: corrected rationales as TRL prompt/completion records (kind `sft`), or as
  conversational `messages` (kind `sft-chat`), with the problem image in `images`.
- `export_prm(scores, threshold)`: TRL stepwise supervision (kind `prm`): `prompt`, `completions` (the
  sentences), `labels` (score >= threshold), plus the raw `scores`.
- `export_dpo(scores, pair_by)`: one preference pair per problem (kind `dpo`): `prompt`, `chosen`,
  `rejected`, `images`, from the highest vs lowest mean sentence score, or a correct vs an incorrect
  final answer.

Prompts come from `ares_data.prompting.format_problem`, the formatter the trainer uses too. Images are
kept when any problem in the export has one (`images=None`), or forced on/off. With images, `prompt`,
`completion`, `chosen` and `rejected` are conversational (one-message lists), the form TRL's vision path
needs; an export without images gets the `-text` kind: plain strings and no `images` column, which
text-only models need (TRL treats any `images` column as vision data).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from datasets import Features, Image, Sequence, Value

from .answers import parse_answer
from .errors import UsageError
from .prompting import format_problem
from .schema import KINDS, register_kind
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


def problems_by_id(store: Store, source: Version) -> dict[str, dict[str, Any]]:
    """The problems behind `source` (found through its parents), keyed by problem_id; images undecoded."""
    problems = store.parent_chain(source, "problems").load().cast_column("image", Image(decode=False))
    return {row["problem_id"]: row for row in problems}


def rationale_texts(store: Store, source: Version) -> dict[str, str]:
    try:
        rats = store.parent_chain(source, "rationales").load().select_columns(["rationale_id", "text"])
    except Exception:  # noqa: BLE001 - no rationales parent: fall back to joined sentences
        return {}
    return dict(zip(rats["rationale_id"], rats["text"], strict=True))


def _images(problem: dict[str, Any] | None) -> list[dict[str, Any]]:
    img = (problem or {}).get("image")
    return [img] if img and (img.get("bytes") or img.get("path")) else []


def _want_images(problems: dict[str, dict[str, Any]], ids: set[str], images: bool | None) -> bool:
    if images is not None:
        return images
    return any(_images(problems.get(pid)) for pid in ids)


def _publish(store: Store, name: str, kind: str, rows: list[dict[str, Any]], source: Version,
             params: dict[str, Any], counts: dict[str, int], with_images: bool) -> Version:
    kind = kind if with_images else f"{kind}-text"
    for r in rows:
        if not with_images:
            r.pop("images", None)
        elif kind != "sft-chat":  # conversational texts for the vision kinds
            for key, role in (("prompt", "user"), ("completion", "assistant"), ("chosen", "assistant"),
                              ("rejected", "assistant")):
                if key in r:
                    r[key] = [{"role": role, "content": r[key]}]
    with store.writer(name, kind, parents=[source], params=params) as w:
        w.write_all(rows)
        for key, n in counts.items():
            w.count(key, n)
    return w.result


def export_sft(store: Store, ref: str, name: str, *, conversational: bool = False,
               images: bool | None = None) -> Version:
    """Corrections -> SFT records (only rows with status ok and a non-empty correction)."""
    source = store.resolve_kind(ref, "corrections")
    problems = problems_by_id(store, source)
    ds = source.load().select_columns(["rationale_id", "problem_id", "corrected", "status"])
    rows, counts = [], defaultdict(int)
    for r in ds:
        if r["status"] != "ok" or not (r["corrected"] or "").strip():
            counts["skipped_failed"] += 1
            continue
        problem = problems.get(r["problem_id"])
        if problem is None:
            counts["skipped_no_problem"] += 1
            continue
        prompt = format_problem(problem)
        row: dict[str, Any] = {"problem_id": r["problem_id"], "rationale_id": r["rationale_id"],
                               "images": _images(problem)}
        if conversational:
            row["messages"] = [{"role": "user", "content": prompt},
                               {"role": "assistant", "content": r["corrected"]}]
        else:
            row.update(prompt=prompt, completion=r["corrected"])
        rows.append(row)
    with_images = _want_images(problems, {r["problem_id"] for r in rows}, images)
    params = {"export": "sft", "conversational": conversational, "images": with_images}
    return _publish(store, name, "sft-chat" if conversational else "sft", rows, source, params,
                    dict(counts), with_images)


def export_prm(store: Store, ref: str, name: str, *, threshold: float = 0.5) -> Version:
    """Scores -> TRL stepwise supervision: one label per sentence, `score >= threshold`."""
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {threshold}")
    source = store.resolve_kind(ref, "scores")
    problems = problems_by_id(store, source)
    rows, counts = [], defaultdict(int)
    for r in _ok_scores(source, counts):
        problem = problems.get(r["problem_id"])
        if problem is None:
            counts["skipped_no_problem"] += 1
            continue
        rows.append({"problem_id": r["problem_id"], "rationale_id": r["rationale_id"],
                     "prompt": format_problem(problem), "completions": r["sentences"],
                     "labels": [float(s) >= threshold for s in r["scores"]], "scores": r["scores"]})
    params = {"export": "prm", "threshold": threshold}
    with store.writer(name, "prm", parents=[source], params=params) as w:
        w.write_all(rows)
        for key, n in counts.items():
            w.count(key, n)
    return w.result


def _ok_scores(source: Version, counts: dict[str, int]) -> Iterator[dict[str, Any]]:
    ds = source.load().select_columns(["rationale_id", "problem_id", "sentences", "scores", "status"])
    for r in ds:
        if r["status"] != "ok" or not r["scores"] or len(r["scores"]) != len(r["sentences"]):
            counts["skipped_failed"] += 1
            continue
        yield r


def export_dpo(store: Store, ref: str, name: str, *, pair_by: str = "score", min_margin: float = 0.0,
               images: bool | None = None) -> Version:
    """Scores -> one (chosen, rejected) pair per problem.

    `pair_by="score"`: the rationale with the highest mean sentence score vs the lowest, when the gap is
    more than `min_margin`. `pair_by="answer"`: the best-scored rationale whose final answer is correct vs
    the worst-scored one whose answer is wrong (the LLaVA-Reasoner-DPO recipe).
    """
    if pair_by not in ("score", "answer"):
        raise UsageError(f"--pair-by must be 'score' or 'answer', got '{pair_by}'")
    source = store.resolve_kind(ref, "scores")
    problems = problems_by_id(store, source)
    texts = rationale_texts(store, source)
    groups: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for r in _ok_scores(source, counts):
        mean = sum(r["scores"]) / len(r["scores"])
        text = texts.get(r["rationale_id"]) or " ".join(r["sentences"])
        groups[r["problem_id"]].append((mean, r["rationale_id"], text))
    rows = []
    for pid, cands in groups.items():
        problem = problems.get(pid)
        pair = _pick_pair(cands, problem, pair_by, min_margin) if problem else None
        if pair is None:
            counts["no_pair"] += 1
            continue
        (cs, cid, ctext), (rs, rid, rtext) = pair
        rows.append({"problem_id": pid, "prompt": format_problem(problem), "chosen": ctext, "rejected": rtext,
                     "chosen_rationale_id": cid, "rejected_rationale_id": rid, "chosen_score": cs,
                     "rejected_score": rs, "images": _images(problem)})
    with_images = _want_images(problems, {r["problem_id"] for r in rows}, images)
    params = {"export": "dpo", "pair_by": pair_by, "min_margin": min_margin, "images": with_images}
    return _publish(store, name, "dpo", rows, source, params, dict(counts), with_images)


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


def summary(version: Version) -> dict[str, Any]:
    """What the CLI prints after an export."""
    return {"ref": version.ref, "kind": version.kind, "rows": version.manifest["rows"],
            "counts": version.manifest.get("counts", {}), "reused": version.reused,
            "params": version.manifest.get("params", {})}
