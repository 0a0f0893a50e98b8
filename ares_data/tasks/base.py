"""Shared machinery of teacher tasks: prompt templates (versioned by sha256), rendering, images, retries.

A template file has two sections, each starting with a marker line:

    <<system>>
    ...system prompt...
    <<user>>
    ...user message with {{placeholders}}...

Known placeholders: question, choices, context, answer, sentences, n_sentences, rationale,
reference_rationale. An unknown placeholder is a ConfigError naming the file.

Every user message ends with a `<ares_task_data>` block: a compact JSON copy of the task inputs. It makes a
request self-describing, which is what lets the offline reference teacher and the fake teacher server answer
through the same path as a real provider. The block costs a few hundred input tokens per request (the
reference rationale is capped at MAX_REFERENCE_CHARS); `--dry-run` estimates include it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError
from ..teachers.base import Reply, Request

MAX_REFERENCE_CHARS = 2000  # caps what the task-data block adds to a request (~500 tokens at most)
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DATA_OPEN, DATA_CLOSE = "<ares_task_data>", "</ares_task_data>"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
KNOWN_FIELDS = frozenset(
    {
        "question",
        "choices",
        "context",
        "answer",
        "sentences",
        "n_sentences",
        "rationale",
        "reference_rationale",
    }
)


class ValidationError(Exception):
    """A teacher reply that does not satisfy the task (wrong count, out of range, truncated, empty)."""


def load_template(path: Path, required: set[str]) -> tuple[str, str, str]:
    """Read a template file -> (system, user, sha256 of the file bytes)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read prompt template {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: a prompt template must be UTF-8 ({e.reason} at byte {e.start})") from None
    m = re.match(r"\s*<<system>>\n(.*?)\n<<user>>\n(.*)\Z", text, re.S)
    if not m:
        raise ConfigError(
            f"{path}: a prompt template needs a '<<system>>' line, then a '<<user>>' line",
            hint=f"see the default template {PROMPTS_DIR / 'score.txt'}",
        )
    system, user = m.group(1).strip(), m.group(2).strip()
    used = set(_PLACEHOLDER.findall(system + user))
    unknown = used - KNOWN_FIELDS
    if unknown:
        raise ConfigError(f"{path}: unknown placeholder(s) {sorted(unknown)}; known: {sorted(KNOWN_FIELDS)}")
    missing = required - used
    if missing:
        raise ConfigError(f"{path}: the template must use {{{{{sorted(missing)[0]}}}}}")
    return system, user, hashlib.sha256(raw).hexdigest()


def render(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def letter(i: int) -> str:
    return chr(ord("A") + i) if 0 <= i < 26 else str(i + 1)


def format_choices(choices: list[str]) -> str:
    return "\n".join(f"({letter(i)}) {c}" for i, c in enumerate(choices or []))


def format_answer(problem: dict) -> str:
    choices, idx = problem.get("choices") or [], problem.get("answer_index")
    answer = problem.get("answer") or ""
    if idx is not None and 0 <= idx < len(choices):
        return f"({letter(idx)}) {choices[idx]}"
    return answer


def sentence_texts(rationale: dict) -> list[str]:
    return [s["text"] if isinstance(s, dict) else str(s) for s in rationale.get("sentences") or []]


_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
]


def image_block(image: Any) -> dict | None:
    """Turn a problem's image (HF Image dict, PIL image, raw bytes or None) into a provider-neutral block.

    PNG/JPEG/GIF/WEBP bytes are sent unchanged (stable cache keys); anything else is re-encoded as PNG."""
    if image is None:
        return None
    data: bytes | None = None
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, dict):
        data = image.get("bytes")
        if data is None and image.get("path"):
            data = Path(image["path"]).read_bytes()
    elif hasattr(image, "save"):  # PIL image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    if not data:
        return None
    media = next((m for sig, m in _MAGIC if data.startswith(sig)), None)
    if media is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        media = "image/webp"
    if media is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buf, format="PNG")
        data, media = buf.getvalue(), "image/png"
    return {"type": "image", "media_type": media, "data_b64": base64.b64encode(data).decode("ascii")}


def embed_data(text: str, data: dict) -> str:
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{text}\n\n{DATA_OPEN}{blob}{DATA_CLOSE}"


def extract_data(request_text: str) -> dict | None:
    """The JSON task block embedded by `embed_data`, or None."""
    start = request_text.find(DATA_OPEN)
    end = request_text.find(DATA_CLOSE, start + 1)
    if start < 0 or end < 0:
        return None
    try:
        return json.loads(request_text[start + len(DATA_OPEN) : end])
    except json.JSONDecodeError:
        return None


class Task(ABC):
    """A kind of teacher feedback. Subclasses set `kind`, `name`, `default_prompt`, `required_fields`."""

    kind: ClassVar[str]
    name: ClassVar[str]
    default_prompt: ClassVar[str]
    required_fields: ClassVar[set[str]]
    max_tokens: int = 1024  # default reply budget; `max_tokens=` overrides it per instance

    def __init__(
        self, prompt_path: Path | None = None, include_images: bool = True, max_tokens: int | None = None
    ) -> None:
        self.prompt_path = Path(prompt_path) if prompt_path else PROMPTS_DIR / self.default_prompt
        self.custom_prompt = prompt_path is not None
        self.system_template, self.user_template, self.prompt_sha = load_template(
            self.prompt_path, self.required_fields
        )
        self.include_images = include_images
        if max_tokens is not None:  # the reply budget (reasoning models spend part of it thinking)
            self.max_tokens = max_tokens

    def values(self, problem: dict, rationale: dict) -> dict[str, str]:
        sents = sentence_texts(rationale)
        return {
            "question": problem.get("question") or "",
            "choices": format_choices(problem.get("choices") or []) or "(none: free-form answer)",
            "context": problem.get("context") or "(none)",
            "answer": format_answer(problem),
            "sentences": "\n".join(f"Sentence {i}: {s}" for i, s in enumerate(sents, 1)),
            "n_sentences": str(len(sents)),
            "rationale": rationale.get("text") or "",
            "reference_rationale": problem.get("reference_rationale") or "(none)",
        }

    def task_data(self, problem: dict, rationale: dict) -> dict:
        """Machine-readable copy of the inputs (read by the reference teacher and the fake server)."""
        return {
            "task": self.name,
            "question": problem.get("question") or "",
            "choices": list(problem.get("choices") or []),
            "answer_index": problem.get("answer_index"),
            "answer": problem.get("answer") or "",
            "reference": (problem.get("reference_rationale") or "")[:MAX_REFERENCE_CHARS],
            "sentences": sentence_texts(rationale),
        }

    def build(self, problem: dict, rationale: dict) -> Request:
        values = self.values(problem, rationale)
        user = embed_data(render(self.user_template, values), self.task_data(problem, rationale))
        content: list[dict] = []
        img = image_block(problem.get("image")) if self.include_images else None
        if img:
            content.append(img)
        content.append({"type": "text", "text": user})
        return Request(
            system=render(self.system_template, values),
            messages=[{"role": "user", "content": content}],
            max_tokens=self.max_tokens,
            temperature=0.0,
            response_schema=self.schema(),
            schema_name=self.name,
        )

    def row_ids(self, problem: dict, rationale: dict) -> dict[str, Any]:
        return {"rationale_id": rationale.get("rationale_id"), "problem_id": rationale.get("problem_id")}

    def retry_request(self, request: Request, reply: Reply, error: str) -> Request:
        """The original conversation + the invalid reply + a user message stating what was wrong."""
        note = (
            f"Your previous reply was not usable: {error}. "
            f"Reply again following the instructions exactly{self.retry_hint()}."
        )
        said = (reply.text or "").strip() or "(empty reply)"  # the Messages API rejects blank text blocks
        messages = [
            *request.messages[:1],
            {"role": "assistant", "content": [{"type": "text", "text": said}]},
            {"role": "user", "content": [{"type": "text", "text": note}]},
        ]
        return Request(
            system=request.system,
            messages=messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            response_schema=request.response_schema,
            schema_name=request.schema_name,
        )

    def retry_hint(self) -> str:
        return ""

    @abstractmethod
    def schema(self) -> dict: ...

    @abstractmethod
    def parse(self, reply: Reply, problem: dict, rationale: dict) -> dict: ...

    @abstractmethod
    def failed_fields(self, problem: dict, rationale: dict) -> dict: ...


def check_finished(reply: Reply, what: str = "the reply") -> None:
    """A cut-off reply, a refusal or a content-filtered reply is never parsed as an answer."""
    if reply.truncated:
        raise ValidationError(f"{what} was cut off (stop reason {reply.stop_reason})")
    if reply.refused:
        said = " ".join((reply.text or "").split())[:200]
        raise ValidationError(f"the teacher declined to answer (stop reason {reply.stop_reason}): {said!r}")


def first_json_object(text: str) -> dict | None:
    """The first JSON object in `text` (also inside ``` fences or after prose), or None."""
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos >= 0:
        try:
            obj, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict):
            return obj
        pos = text.find("{", pos + 1)
    return None


def reply_object(reply: Reply) -> dict | None:
    """Structured data of a reply: the provider's parsed object, else the first JSON object in its text."""
    if isinstance(reply.data, dict):
        return reply.data
    return first_json_object(reply.text or "")
