"""A small synthetic lineage (problems -> rationales -> scores / corrections) for tests and benchmarks.

Rows are built directly with `Store.publish`, with the same columns the real pipeline writes, so hub,
card, export and stats code can be exercised without a teacher or a trainer.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from typing import Any

from ..store import Store, Version

SUBJECTS = ("natural science", "social science", "language science")
TEACHER = "reference:offline-v1"
PROMPT_SHA = hashlib.sha256(b"score prompt").hexdigest()


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def problem_rows(n: int, *, images_every: int = 2) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        image = {"bytes": png_bytes((40 * i % 255, 90, 160)), "path": None} if i % images_every == 0 else None
        rows.append({
            "problem_id": f"p{i}", "source": "synthetic", "split": "train",
            "question": f"Which option is number {i % 2}?", "choices": ["zero", "one"],
            "answer_index": i % 2, "answer": ["zero", "one"][i % 2], "context": "Count carefully.",
            "image": image, "reference_rationale": "Count the items.",
            "subject": SUBJECTS[i % len(SUBJECTS)], "grade": f"grade{1 + i % 3}",
            "metadata": json.dumps({"topic": "counting"}),
        })
    return rows


def rationale_text(i: int, k: int) -> str:
    answer = ["zero", "one"][(i + k) % 2]  # sample 0 of even problems is right, sample 1 wrong, ...
    return f"We look at the options. Option {answer} matches the count. So the answer is {answer}."


def rationale_rows(n_problems: int, k: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n_problems):
        for s in range(k):
            text = rationale_text(i, s)
            sents, start = [], 0
            for part in text.split(". "):
                piece = part if part.endswith(".") else part + "."
                at = text.index(piece, start)
                sents.append({"text": piece, "start": at, "end": at + len(piece)})
                start = at + len(piece)
            rows.append({
                "rationale_id": hashlib.sha256(f"{i}/{s}/{text}".encode()).hexdigest()[:16],
                "problem_id": f"p{i}", "sample_index": s, "round": 0, "text": text, "sentences": sents,
                "dropped_sentences": [], "generator": "tiny", "generator_fingerprint": "",
                "generation_params": "{}", "prompt": "", "token_ids": [],
            })
    return rows


def _teacher_cols(rng: random.Random, failed: bool) -> dict[str, Any]:
    return {"status": "failed" if failed else "ok", "error": "unparseable reply" if failed else "",
            "raw_response": "{}", "teacher": TEACHER, "prompt_sha": PROMPT_SHA,
            "input_tokens": rng.randint(100, 200), "output_tokens": rng.randint(10, 40),
            "cost_usd": 0.0001, "attempts": 1 + int(failed), "cached": False}


def score_rows(rationales: list[dict[str, Any]], *, fail_every: int = 7,
               seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for j, r in enumerate(rationales):
        failed = fail_every > 0 and j % fail_every == fail_every - 1
        sents = [s["text"] for s in r["sentences"]]
        good = r["sample_index"] % 2 == 0
        scores = [] if failed else [round(rng.uniform(0.5, 1.0) if good else rng.uniform(0.0, 0.5), 1)
                                    for _ in sents]
        rows.append({"rationale_id": r["rationale_id"], "problem_id": r["problem_id"], "sentences": sents,
                     "scores": scores, **_teacher_cols(rng, failed)})
    return rows


def correction_rows(rationales: list[dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for j, r in enumerate(rationales):
        failed = j % 5 == 4
        corrected = "" if failed else r["text"].replace("We look", "First we look")
        rows.append({"rationale_id": r["rationale_id"], "problem_id": r["problem_id"], "original": r["text"],
                     "corrected": corrected, "corrected_sentences": [], "kept": 2,
                     "edited": 0 if failed else 1, "added": 0, "removed": 0, **_teacher_cols(rng, failed)})
    return rows


def build_lineage(store: Store, *, n_problems: int = 6, k: int = 3, prefix: str = "") -> dict[str, Version]:
    """Publish problems, rationales, scores and corrections; returns them by kind."""
    problems = store.publish(f"{prefix}sqa", "problems", problem_rows(n_problems), command=["ingest", "x"])
    rats = rationale_rows(n_problems, k)
    rationales = store.publish(f"{prefix}rats", "rationales", rats, parents=[problems],
                               command=["import-rationales", "r.jsonl"])
    extra = {"teacher": {"provider": "reference", "model": "offline-v1"}, "prompt_sha": PROMPT_SHA,
             "prompt_text": "Grade each sentence between 0.0 and 1.0.",
             "usage": {"input_tokens": 1500, "output_tokens": 300}, "cost_usd": 0.0018}
    scores = store.publish(f"{prefix}scores", "scores", score_rows(rats), parents=[rationales],
                           params={"teacher": TEACHER}, extra=extra,
                           command=["score", f"{prefix}rats", "--teacher", TEACHER])
    corrections = store.publish(f"{prefix}fixes", "corrections", correction_rows(rats), parents=[rationales],
                                params={"teacher": TEACHER}, extra=extra,
                                command=["correct", f"{prefix}rats", "--teacher", TEACHER])
    return {"problems": problems, "rationales": rationales, "scores": scores, "corrections": corrections}
