"""Answer accuracy on multiple-choice problems: generate the rationale, then the answer, parse the option.

For each problem (greedy decoding, batched):

1. **Rationale.** The model answers the shared prompt (`ares_train.prompting`, which asks it to finish with
   "So the answer is (X).") with up to `max_new_tokens` tokens.
2. **Answer.** When the rationale states no parseable option, the model is asked once more, with the prompt
   and its rationale followed by the answer trigger `ANSWER_TRIGGER`, for up to `answer_tokens` tokens.
3. **Parsing.** `ares_train.answers.parse_answer` (documented rules; no option -> wrong, never guessed).

Accuracy is reported overall and by the ScienceQA categories where the metadata exists: subject (natural /
social / language science), context (text: the problem has a text context; image: it has an image; none:
neither; a problem with both counts in text and in image, as in the ScienceQA paper), and grade band
(grades 1-6 / 7-12).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ares_data.answers import option_letter, parse_answer

ANSWER_TRIGGER = "\nSo the answer is ("
SUBJECTS = ("natural science", "social science", "language science")


@dataclass
class EvalOptions:
    split: str | None = "test"
    max_new_tokens: int = 96
    answer_tokens: int = 8
    batch_size: int = 16
    limit: int | None = None
    device: str = ""  # default: cuda when available, else cpu
    engine: str = "transformers"  # or "server": an OpenAI-compatible endpoint (see ares_train.serving)
    base_url: str = ""
    served_model: str = ""
    serve_cmd: str = ""
    concurrency: int = 8
    request_timeout: float = 600.0
    max_attempts: int = 3
    startup_timeout: float = 600.0
    log: str = ""


def grade_band(grade: str | None) -> str:
    m = re.search(r"(\d+)", grade or "")
    if not m:
        return ""
    return "1-6" if int(m.group(1)) <= 6 else "7-12"


def context_type(problem: dict) -> str:
    has_text = bool((problem.get("context") or "").strip())
    has_image = problem.get("image") is not None
    if has_text and has_image:
        return "image+text"
    return "image" if has_image else ("text" if has_text else "none")


def _generate(policy: Any, batch: dict[str, Any], max_new_tokens: int) -> list[str]:
    """Greedy decoding with the model's generation_config set aside (no penalties, n-gram blocking,
    forced or suppressed tokens: `sampling.plain_generate` at temperature 0)."""
    import torch

    from .sampling import plain_generate

    tok = policy.tokenizer
    with torch.no_grad():
        out = plain_generate(policy, batch, temperature=0.0, max_new_tokens=max_new_tokens)
    width = batch["input_ids"].shape[1]
    return [tok.decode(row[width:], skip_special_tokens=True) for row in out]


def _encode_texts(policy: Any, texts: list[str], problems: list[dict]) -> dict[str, Any]:
    """Left-padded tensors for full prompt strings (images through the processor for a VLM)."""
    from .prompting import problem_image

    policy.tokenizer.padding_side = "left"
    if policy.is_vlm:
        images = [img for img in (problem_image(p) for p in problems) if img is not None]
        enc = policy.processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                               padding_side="left", add_special_tokens=False)
    else:
        enc = policy.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(policy.model.device) for k, v in dict(enc).items()}


def predict_batch(policy: Any, problems: list[dict], opts: EvalOptions) -> list[dict[str, Any]]:
    """Rationale + answer + parsed option for a batch of problems."""
    from .prompting import encode_prompts

    batch, prompts = encode_prompts(policy, problems)
    batch = {k: v.to(policy.model.device) for k, v in batch.items()}
    rationales = [r.strip() for r in _generate(policy, batch, opts.max_new_tokens)]
    return with_answers(problems, prompts, rationales, opts.answer_tokens, lambda texts, sub: _generate(
        policy, _encode_texts(policy, texts, sub), opts.answer_tokens))


Answerer = Callable[[list[str], list[dict]], list[str]]


def with_answers(problems: list[dict], prompts: list[str], rationales: list[str], answer_tokens: int,
                 answer: Answerer) -> list[dict[str, Any]]:
    """Parse each rationale's option; where none, ask `answer(prompt + rationale + trigger texts, their
    problems)` for the continuation (when answer_tokens > 0) and parse that."""
    parsed = [parse_answer(r, list(p.get("choices") or []))
              for r, p in zip(rationales, problems, strict=True)]
    answers = [""] * len(problems)
    todo = [i for i, pa in enumerate(parsed) if pa.index is None and answer_tokens > 0]
    if todo:
        texts = [prompts[i] + rationales[i] + ANSWER_TRIGGER for i in todo]
        outs = answer(texts, [problems[i] for i in todo])
        for i, out in zip(todo, outs, strict=True):
            answers[i] = ANSWER_TRIGGER.strip() + out
            parsed[i] = parse_answer(answers[i], list(problems[i].get("choices") or []))
    return [{"rationale": r, "answer_text": a, "predicted_index": pa.index, "parse_rule": pa.rule}
            for r, a, pa in zip(rationales, answers, parsed, strict=True)]


def eval_row(problem: dict, pred: dict, model: str, fingerprint: str) -> dict[str, Any]:
    idx = pred["predicted_index"]
    return {
        "problem_id": problem["problem_id"], "split": problem.get("split") or "",
        "question": problem.get("question") or "", "choices": list(problem.get("choices") or []),
        "answer_index": problem.get("answer_index"), "subject": problem.get("subject") or "",
        "grade": problem.get("grade") or "", "context_type": context_type(problem),
        "grade_band": grade_band(problem.get("grade")), **pred,
        "correct": idx is not None and idx == problem.get("answer_index"),
        "model": model, "model_fingerprint": fingerprint,
    }


def _acc(rows: list[dict]) -> dict[str, Any]:
    n = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    return {"n": n, "correct": correct, "accuracy": round(correct / n, 4) if n else None}


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Accuracy overall and by subject / context / grade band (groups without rows are left out)."""
    groups: dict[str, dict[str, Any]] = {"subject": {}, "context": {}, "grade": {}}
    for subject in SUBJECTS:
        sel = [r for r in rows if (r["subject"] or "").lower() == subject]
        if sel:
            groups["subject"][subject] = _acc(sel)
    for name, test in (("text", lambda r: "text" in r["context_type"]),
                       ("image", lambda r: "image" in r["context_type"]),
                       ("none", lambda r: r["context_type"] == "none")):
        sel = [r for r in rows if test(r)]
        if sel:
            groups["context"][name] = _acc(sel)
    for band in ("1-6", "7-12"):
        sel = [r for r in rows if r["grade_band"] == band]
        if sel:
            groups["grade"][band] = _acc(sel)
    picked = [r["predicted_index"] for r in rows if r["predicted_index"] is not None]
    return {"overall": _acc(rows), **{k: v for k, v in groups.items() if v},
            "unparsed": len(rows) - len(picked),
            "predicted": {option_letter(i): picked.count(i) for i in sorted(set(picked))}}


def select_problems(ds: Any, split: str | None, limit: int | None) -> list[int]:
    """Row indices of `split` ("test", "val,test", or None/"all" for every row), at most `limit`."""
    wanted = None if split in (None, "", "all") else {s.strip() for s in split.split(",")}
    idx = [i for i, s in enumerate(ds["split"]) if wanted is None or s in wanted]
    return idx[:limit] if limit else idx


def evaluate(
    policy: Any,
    problems_ds: Any,
    opts: EvalOptions,
    *,
    model_name: str,
    fingerprint: str,
    on_progress: Callable[[int, int], None] | None = None,
    predict: Callable[[Any, list[dict], EvalOptions], list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Eval rows for the selected problems, in dataset order (`predict`: in-process by default)."""
    predict = predict or predict_batch
    idx = select_problems(problems_ds, opts.split, opts.limit)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(idx), opts.batch_size):
        problems = [problems_ds[i] for i in idx[start:start + opts.batch_size]]
        for p, pred in zip(problems, predict(policy, problems, opts), strict=True):
            rows.append(eval_row(p, pred, model_name, fingerprint))
        if on_progress:
            on_progress(len(rows), len(idx))
    return rows


def run_eval(
    store: Any,
    model_path: str,
    problems_ref: str,
    name: str,
    opts: EvalOptions,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    policy: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Evaluate a model folder on a problems dataset; publish an eval dataset -> (Version, summary)."""
    from ares_data.errors import InputError

    from .modeling import load_policy, weights_fingerprint
    from .rollout import validate_engine

    validate_engine(opts)
    pv = store.resolve_kind(problems_ref, "problems")
    ds = pv.load()
    if not select_problems(ds, opts.split, opts.limit):
        have = sorted(set(ds["split"]))
        raise InputError(f"{pv.ref} has no problems in split '{opts.split}' (splits: {', '.join(have)})",
                         hint="choose one with --split, or --split all")
    if opts.engine == "server":
        from .serving.eval import evaluate_on_server

        rows, server, policy = evaluate_on_server(str(model_path), ds, opts, on_progress=on_progress)
        fingerprint = weights_fingerprint(str(model_path))
    else:
        if policy is None:
            import torch

            device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
            policy = load_policy(model_path, device=device)
        fingerprint, server = weights_fingerprint(policy), {}
        rows = evaluate(policy, ds, opts, model_name=str(model_path), fingerprint=fingerprint,
                        on_progress=on_progress)
    summary = summarize(rows)
    from .sampling import sampling_params, stop_token_ids

    params = {"model_fingerprint": fingerprint, "split": opts.split, "max_new_tokens": opts.max_new_tokens,
              "answer_tokens": opts.answer_tokens, "limit": opts.limit, "decoding": "greedy",
              "engine": opts.engine,
              "generation": sampling_params(0.0, opts.max_new_tokens, stop_token_ids(policy))}
    version = store.publish(name, "eval", rows, parents=[pv], params=params,
                            extra={"model": str(model_path), "summary": summary,
                                   **({"server": server} if server else {})})
    return version, summary
