"""Arrow schemas (as HF `datasets.Features`) for every dataset kind, in one place.

Each kind has a stable schema; `validate_row` gives errors that name the row and field.
New kinds are added to `KINDS` with one line.
"""

from __future__ import annotations

import re
from typing import Any

from datasets import Features, Image, Sequence, Value

from .errors import InputError

SENTENCE = {"text": Value("string"), "start": Value("int32"), "end": Value("int32")}

PROBLEMS = Features(
    {
        "problem_id": Value("string"),
        "source": Value("string"),
        "split": Value("string"),
        "question": Value("string"),
        "choices": Sequence(Value("string")),
        "answer_index": Value("int32"),
        "answer": Value("string"),
        "context": Value("string"),
        "image": Image(),
        "reference_rationale": Value("string"),
        "subject": Value("string"),
        "grade": Value("string"),
        "metadata": Value("string"),  # JSON object: topic, category, skill, lecture, direct_answers, ...
    }
)

RATIONALES = Features(
    {
        "rationale_id": Value("string"),
        "problem_id": Value("string"),
        "sample_index": Value("int32"),
        "round": Value("int32"),
        "text": Value("string"),
        "sentences": [SENTENCE],
        "dropped_sentences": [SENTENCE],  # repeated sentences removed when --drop-repeats is used
        "generator": Value("string"),  # model name/path
        "generator_fingerprint": Value("string"),  # hash of weights/adapter; "" when unknown
        "generation_params": Value("string"),  # JSON object of sampling parameters
        "prompt": Value("string"),  # the exact prompt text the generator saw ("" when imported)
        "token_ids": Sequence(Value("int32")),  # generated response token ids (empty when imported)
    }
)

_TEACHER_COLUMNS = {
    "status": Value("string"),  # "ok" | "failed"
    "error": Value("string"),
    "raw_response": Value("string"),
    "teacher": Value("string"),  # "provider:model"
    "prompt_sha": Value("string"),
    "input_tokens": Value("int64"),
    "output_tokens": Value("int64"),
    "cost_usd": Value("float64"),
    "attempts": Value("int32"),
    "cached": Value("bool"),
}

SCORES = Features(
    {
        "rationale_id": Value("string"),
        "problem_id": Value("string"),
        "sentences": Sequence(Value("string")),
        "scores": Sequence(Value("float32")),  # one per sentence, empty when status == failed
        **_TEACHER_COLUMNS,
    }
)

CORRECTIONS = Features(
    {
        "rationale_id": Value("string"),
        "problem_id": Value("string"),
        "original": Value("string"),
        "corrected": Value("string"),
        "corrected_sentences": [SENTENCE],
        "kept": Value("int32"),
        "edited": Value("int32"),
        "added": Value("int32"),
        "removed": Value("int32"),
        **_TEACHER_COLUMNS,
    }
)

JUDGMENTS = Features(  # `ares-data judge`: one row per (pair, presentation order)
    {
        "pair_id": Value("string"),
        "problem_id": Value("string"),
        "sample_index": Value("int32"),
        "order": Value("string"),  # "ab": dataset A shown as Option A; "ba": dataset B shown as Option A
        "rationale_id_a": Value("string"),
        "rationale_id_b": Value("string"),
        "preferred": Value("string"),  # position the judge chose: "A" | "B" | "tie" | "" (failed)
        "winner": Value("string"),  # dataset that won: "a" | "b" | "tie" | "" (failed)
        "reason": Value("string"),
        **_TEACHER_COLUMNS,
    }
)

EVALS = Features(  # `ares-train eval`: one row per problem
    {
        "problem_id": Value("string"),
        "split": Value("string"),
        "question": Value("string"),
        "choices": Sequence(Value("string")),
        "answer_index": Value("int32"),
        "subject": Value("string"),
        "grade": Value("string"),
        "context_type": Value("string"),  # "image" | "text" | "none" (ScienceQA IMG / TXT / NO)
        "grade_band": Value("string"),  # "1-6" | "7-12" | ""
        "rationale": Value("string"),  # generated rationale
        "answer_text": Value("string"),  # generated answer (after the rationale)
        "predicted_index": Value("int32"),  # null when no option could be parsed
        "parse_rule": Value("string"),
        "correct": Value("bool"),
        "model": Value("string"),
        "model_fingerprint": Value("string"),
    }
)

KINDS: dict[str, Features] = {
    "problems": PROBLEMS,
    "rationales": RATIONALES,
    "scores": SCORES,
    "corrections": CORRECTIONS,
    "judgments": JUDGMENTS,
    "eval": EVALS,
}

_PY_TYPES = {
    "string": str,
    "int32": int,
    "int64": int,
    "float32": (int, float),
    "float64": (int, float),
    "bool": bool,
}


_INT_LIMITS = {"int32": 2**31, "int64": 2**63}  # a value v fits when -limit <= v < limit
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # valid in JSON escapes, not encodable as UTF-8
LONE_SURROGATE_ERROR = "text with a lone surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode"


def check_int_range(value: Any, dtype: str, *, file: str | None, row: int | str | None, field: str) -> None:
    """InputError naming the field when the integer `value` does not fit the Arrow `dtype` (int32/int64)."""
    limit = _INT_LIMITS.get(dtype)
    if limit is not None and isinstance(value, int) and not -limit <= value < limit:
        raise InputError(f"{value} does not fit {dtype} ({-limit} to {limit - 1})", file=file, row=row,
                         field=field)


def features_for(kind: str) -> Features:
    try:
        return KINDS[kind]
    except KeyError:
        raise InputError(f"unknown dataset kind '{kind}' (known: {', '.join(sorted(KINDS))})") from None


def register_kind(kind: str, features: Features) -> None:
    """Add a dataset kind (exports, judgments, evals) whose schema lives elsewhere."""
    KINDS[kind] = features


def _check(value: Any, feature: Any, where: str, file: str | None, row: int | str | None) -> None:
    if value is None:
        return  # every column is nullable at the Arrow level
    if isinstance(feature, Value):
        expected = _PY_TYPES.get(feature.dtype)
        if expected and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            raise InputError(
                f"expected {feature.dtype}, got {type(value).__name__} ({value!r:.60})",
                file=file, row=row, field=where,
            )
        check_int_range(value, feature.dtype, file=file, row=row, field=where)
        if expected is str and LONE_SURROGATE.search(value):
            raise InputError(LONE_SURROGATE_ERROR, file=file, row=row, field=where)
    elif isinstance(feature, (list, Sequence)):
        inner = feature[0] if isinstance(feature, list) else feature.feature
        if not isinstance(value, (list, tuple)):
            raise InputError(f"expected a list, got {type(value).__name__}", file=file, row=row, field=where)
        for i, item in enumerate(value):
            _check(item, inner, f"{where}[{i}]", file, row)
    elif isinstance(feature, dict):
        if not isinstance(value, dict):
            raise InputError(f"expected an object, got {type(value).__name__}", file=file, row=row,
                             field=where)
        for key, sub in feature.items():
            _check(value.get(key), sub, f"{where}.{key}", file, row)


def validate_row(
    kind: str, row: dict[str, Any], *, file: str | None = None, index: int | str | None = None
) -> None:
    """Raise InputError naming file/row/field when `row` does not fit the kind's schema."""
    features = features_for(kind)
    unknown = set(row) - set(features)
    if unknown:
        raise InputError(f"unknown column(s) {sorted(unknown)} for kind '{kind}'", file=file, row=index)
    for name, feature in features.items():
        if name not in row:
            raise InputError(f"missing column for kind '{kind}'", file=file, row=index, field=name)
        _check(row[name], feature, name, file, index)
