"""Tiny PPO inputs: problems, rationales 'generated' by a tiny model (its fingerprint, real token ids) and
sentence scores, published in a real store. Shared by tests/test_ppo.py and bench/ppo_vs_trl.py."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

from ares_data.segment import segment
from ares_data.store import Store, Version

RESPONSES = [
    "The sun is hot. So the answer is (A).",
    "Magnets repel when like poles face. Magnets repel when like poles face. So the answer is (B).",
    "Water boils at 100 °C at sea level. Ice is colder. So the answer is (A).",
    "Look at the picture. It shows a café. So the answer is (B).",
]


def _png(seed: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (28, 28), color=(seed * 40 % 255, 90, 160))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def problem_rows(n: int, *, images: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "problem_id": f"p{i}",
            "source": "test",
            "split": "train",
            "question": f"Which is hotter, item {i}?" + " Think carefully." * (i % 3),
            "choices": ["the sun", "the moon"],
            "answer_index": 0,
            "answer": "the sun",
            "context": "",
            "image": {"bytes": _png(i), "path": None} if images and i % 2 == 0 else None,
            "reference_rationale": "",
            "subject": "",
            "grade": "",
            "metadata": "{}",
        }
        for i in range(n)
    ]


def publish_round(
    store: Store,
    model_dir: Path,
    *,
    n_problems: int = 4,
    k: int = 2,
    images: bool = False,
    fingerprint: str | None = None,
    failed: int = 1,
    seed: int = 0,
    name: str = "r",
    max_new_tokens: int | None = None,
) -> tuple[Version, Version]:
    """Publish problems, rationales (token ids from the model's tokenizer, ending in EOS) and scores.

    Rows record the sampling parameters of `ares-train rollout` (plain sampling at T=1, the stop ids).
    With `max_new_tokens`, rows look like an older rollout's output: EOS stripped, only the temperature and
    the limit recorded (ppo refuses them unless allow_off_policy)."""
    from ares_train.modeling import load_policy, weights_fingerprint
    from ares_train.prompting import render_prompt
    from ares_train.sampling import sampling_params, stop_token_ids

    policy = load_policy(model_dir)
    tok = policy.tokenizer
    fp = weights_fingerprint(model_dir) if fingerprint is None else fingerprint
    problems = store.publish(f"{name}-problems", "problems", problem_rows(n_problems, images=images))
    params = (sampling_params(1.0, 64, stop_token_ids(policy)) if max_new_tokens is None
              else {"temperature": 1.0, "max_new_tokens": max_new_tokens})
    rng = random.Random(seed)
    rationales, scores = [], []
    for p in problem_rows(n_problems, images=images):
        for s in range(k):
            text = rng.choice(RESPONSES)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            ids += [] if max_new_tokens else [tok.eos_token_id]
            sents = [x.as_dict() for x in segment(text)]
            rid = hashlib.sha256(f"{p['problem_id']}|{s}|{text}".encode()).hexdigest()[:16]
            rationales.append(
                {
                    "rationale_id": rid,
                    "problem_id": p["problem_id"],
                    "sample_index": s,
                    "round": 1,
                    "text": text,
                    "sentences": sents,
                    "dropped_sentences": [],
                    "generator": str(model_dir),
                    "generator_fingerprint": fp,
                    "generation_params": json.dumps(params),
                    "prompt": render_prompt(policy, p),
                    "token_ids": ids,
                }
            )
            ok = len(scores) >= failed
            scores.append(
                {
                    "rationale_id": rid,
                    "problem_id": p["problem_id"],
                    "sentences": [x["text"] for x in sents],
                    "scores": [round(rng.random(), 3) for _ in sents] if ok else [],
                    "status": "ok" if ok else "failed",
                    "error": "" if ok else "teacher reply did not parse",
                    "raw_response": "",
                    "teacher": "test:fixed",
                    "prompt_sha": "",
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                    "attempts": 1,
                    "cached": False,
                }
            )
    rat = store.publish(f"{name}-rationales", "rationales", rationales, parents=[problems])
    sc = store.publish(f"{name}-scores", "scores", scores, parents=[rat])
    return rat, sc
