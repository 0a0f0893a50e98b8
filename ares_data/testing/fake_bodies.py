"""Reply and error bodies in the Anthropic Messages and OpenAI Chat Completions formats, computed by the
reference teacher from the `<ares_task_data>` block of the prompt, with content faults applied on demand."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from ..tasks.base import extract_data
from ..teachers.reference import answer_task

CONTENT_FAULTS = frozenset({"malformed", "wronglen", "refusal"})
REFUSAL = "I'm sorry, but I can't help with that request."


@dataclass
class Answer:
    obj: dict | None  # structured reply (None when the content is prose or malformed)
    text: str  # text form of the reply
    truncated: bool = False
    images: int = 0
    refused: bool = False  # a safety refusal (OpenAI message.refusal, Anthropic stop_reason "refusal")


def _texts_and_images(body: dict) -> tuple[list[str], int]:
    texts, images = [], 0
    for m in body.get("messages") or []:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content or []:
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text", ""))
            elif kind == "image" or (kind == "image_url" and "base64," in block["image_url"]["url"]):
                images += 1
    return texts, images


def _prose(obj: dict) -> str:
    if "scores" in obj:
        lines = [f"Sentence {x['sentence']}: {x['score']:.1f}" for x in obj["scores"]]
        return "Here are my scores for each sentence.\n" + "\n".join(lines)
    return obj.get("corrected", "")


def compute_answer(body: dict, fault: str | None, plain_text: bool, echo: str = "") -> Answer:
    """What the fake teacher answers to a request body (either provider's format); a valid reply that
    repeats `echo` (the request's key header) when it is given."""
    texts, images = _texts_and_images(body)
    data = next((d for d in map(extract_data, texts) if d is not None), None)
    if data is None:
        return Answer(None, f"OK {echo}".strip(), images=images)
    obj = answer_task(data)
    if echo and "corrected" in obj:
        obj = {**obj, "corrected": f"{obj['corrected']} The request came with {echo}."}
    elif echo:
        obj = {**obj, "note": f"the request came with {echo}"}
    if fault == "refusal":
        return Answer(None, REFUSAL, images=images, refused=True)
    if fault == "malformed":
        return Answer(None, 'Sure, here you go: {"scores": [{"sentence": 1, "score": ', images=images)
    if fault == "wronglen":
        if "scores" in obj:
            scores = obj["scores"]
            obj = {"scores": scores[:-1] if scores else [{"sentence": 1, "score": 0.5}]}
        else:
            text = obj["corrected"]
            return Answer(None, text[: max(len(text) // 2, 1)], truncated=True, images=images)
    if plain_text:
        return Answer(None, _prose(obj), images=images)
    return Answer(obj, json.dumps(obj), images=images)


def _tokens(text_len: int, images: int) -> int:
    return text_len // 4 + 1 + 85 * images


def anthropic_message(body: dict, ans: Answer) -> dict:
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    use_tool = ans.obj is not None and tools and choice.get("type") in ("tool", "any")
    if use_tool:
        name = choice.get("name") or tools[0]["name"]
        content = [
            {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": name, "input": ans.obj}
        ]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": ans.text}]
        stop = "refusal" if ans.refused else "max_tokens" if ans.truncated else "end_turn"
    prompt_len = sum(len(t) for t in _texts_and_images(body)[0]) + len(str(body.get("system") or ""))
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": _tokens(prompt_len, ans.images),
            "output_tokens": _tokens(len(ans.text), 0),
        },
    }


def openai_completion(body: dict, ans: Answer) -> dict:
    texts, images = _texts_and_images(body)
    system = " ".join(
        m["content"]
        for m in body.get("messages") or []
        if m.get("role") == "system" and isinstance(m.get("content"), str)
    )
    prompt = _tokens(sum(map(len, texts)) + len(system), images)
    completion = _tokens(len(ans.text), 0)
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "length" if ans.truncated else "stop",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": None if ans.refused else ans.text,
                    "refusal": ans.text if ans.refused else None,
                },
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


def anthropic_error(status: int, message: str) -> dict:
    """{"type": "error", "error": {"type", "message"}, "request_id"} as the Messages API sends it."""
    return {
        "type": "error",
        "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id(),
    }


def openai_error(status: int, message: str, param: str | None = None) -> dict:
    """{"error": {"message", "type", "param", "code"}}: client errors are invalid_request_error (the code
    says which), 429s are typed by the limit ("requests"), 5xx server_error."""
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    code = {429: "rate_limit_exceeded", 401: "invalid_api_key", 404: "model_not_found"}.get(status)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def unsupported_param(param: str, style: str = "openai") -> tuple[int, dict]:
    """(status, body) rejecting a parameter the model or server does not accept: OpenAI's 400 (e.g.
    temperature 0 on reasoning models, json_schema on older models), a FastAPI-style 422 (older
    `transformers serve` for response_format) or LM Studio's 400 whose `error` is a plain string."""
    if style == "fastapi":
        return 422, {"detail": f"Unused fields in the request: {{'{param}'}}"}
    if style == "lmstudio":
        return 400, {"error": f"'{param}' is not supported by this server"}
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    code = "unsupported_parameter"
    return 400, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def quota_error(provider: str) -> dict:
    """The 429 a provider sends when the account is out of credit / over its spend limit (no retry-after)."""
    if provider == "anthropic":
        error = {
            "type": "rate_limit_error",
            "message": "injected fault quota: the monthly usage limit of this organization is reached",
            "details": {"error_code": "enforced_spend_limit_reached"},
        }
        return {"type": "error", "error": error, "request_id": request_id()}
    message = "injected fault quota: you exceeded your current quota, please check your plan and billing"
    code = "insufficient_quota"
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def strict_schema_problem(schema: object, where: str = "root") -> str | None:
    """What OpenAI's strict json_schema mode rejects: an object without `additionalProperties: false` or
    whose `required` does not list every property (checked recursively)."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object":
        props = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return f"In context={where}, 'additionalProperties' is required to be supplied and to be false."
        missing = sorted(set(props) - set(schema.get("required") or []))
        if missing:
            return (f"In context={where}, 'required' is required to be supplied and to be an array including "
                    f"every key in properties. Missing '{missing[0]}'.")
        for name, sub in props.items():
            problem = strict_schema_problem(sub, f"{where}.{name}")
            if problem:
                return problem
    return strict_schema_problem(schema.get("items"), f"{where}.items")
