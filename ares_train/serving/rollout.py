"""Rollout rows sampled by a serving engine (`ares-train rollout --engine server`).

The rows are those of the in-process path: the prompt is built locally by `ares_train.prompting` (the same
string, the same token ids), the generated ids end in the stop token that ended the response, `text` is
decoded from them, and `generation_params` records every sampling parameter plus `server` (how the
requests were made: `client.Protocol`, the base URL, the served model id). Only the tokenizer/processor and
the generation_config of the checkpoint are loaded here, never its weights.

Before sampling, the distribution is checked: every field an engine may apply by default (`top_k` always,
since transformers defaults it to 50; any non-neutral field of the checkpoint's generation_config.json)
must be carried by the requests or pinned in the served folder (`--serve-cmd`), else the rollout refuses
unless `allow_off_policy` (then those fields are recorded as "served default" and `ares-train ppo` refuses
the rows unless it, too, is told --allow-off-policy).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ares_data.errors import UsageError
from ares_data.rationales import build_rationale

from ..sampling import NEUTRAL, UNSET_FIELDS, is_off
from .client import Choice, Prompt, ServerClient, ServerError, choices_of

SERVED_DEFAULT = "served default"


@dataclass
class Processing:
    """What the prompt helpers need of a policy, without its weights."""

    model: Any  # has .generation_config only
    tokenizer: Any
    processor: Any | None
    is_vlm: bool
    path: str


def load_processing(path: str) -> Processing:
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoProcessor, AutoTokenizer, GenerationConfig

    from ..modeling import is_vlm_config

    config = AutoConfig.from_pretrained(path)
    try:
        gen = GenerationConfig.from_pretrained(path)
    except OSError:
        gen = GenerationConfig.from_model_config(config)
    if is_vlm_config(config):
        processor = AutoProcessor.from_pretrained(path)
        return Processing(SimpleNamespace(generation_config=gen), processor.tokenizer, processor, True, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return Processing(SimpleNamespace(generation_config=gen), tokenizer, None, False, path)


def checkpoint_generation_config(path: str) -> dict[str, Any]:
    gen = Path(path) / "generation_config.json"
    return json.loads(gen.read_text(encoding="utf-8")) if gen.is_file() else {}


def uncarried(carried: set[str], checkpoint_gen: dict[str, Any], *, pinned: bool) -> list[str]:
    """Fields that may change the distribution that neither the requests nor the served folder pin."""
    if pinned:
        return []
    needed = {"top_k"} | {k for k in NEUTRAL if k in checkpoint_gen and not is_off(k, checkpoint_gen[k])}
    needed |= {k for k in UNSET_FIELDS if checkpoint_gen.get(k) is not None}
    return sorted(needed - carried)


def matches_checkpoint(model_id: str, checkpoint: str) -> bool:
    """The id a server reports names the checkpoint (its path, or a folder of the same name)."""
    ck = Path(checkpoint).expanduser()
    return model_id in (checkpoint, str(ck), str(ck.resolve())) or Path(model_id).name == ck.resolve().name


@dataclass
class ServerSampler:
    client: ServerClient
    processing: Processing
    params: dict[str, Any]  # the rollout's generation params (sampling fields, stop ids, seed)
    k: int
    checkpoint: str
    served_model: str = ""  # the model id to ask for ("" = the only one the server lists)
    pinned: bool = False
    allow_off_policy: bool = False
    counts: dict[str, int] = field(default_factory=lambda: {"requests": 0, "completion_tokens": 0,
                                                            "stop_token_inferred": 0})
    progress: Callable[[int, int], None] | None = None

    async def sample(self, prompts: list[Prompt]) -> list[list[list[int]]]:
        """k responses (token ids, ending in their stop token) for every prompt, in order."""
        if not prompts:
            return []
        self.client.model = self._pick_model(await self.client.models())
        first = await self.client.negotiate(prompts[0], self.k, self._request_params(0))
        self._check_distribution()
        out: list[Any] = [None] * len(prompts)
        out[0] = await self._complete_from(0, prompts[0], first)
        total, done = len(prompts) * self.k, [self.k]
        if self.progress:
            self.progress(done[0], total)

        async def one(i: int) -> None:
            out[i] = await self._complete_from(i, prompts[i], None)
            done[0] += self.k
            if self.progress:
                self.progress(done[0], total)

        tasks = [asyncio.ensure_future(one(i)) for i in range(1, len(prompts))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return out

    def _pick_model(self, ids: list[str]) -> str:
        """The served model to sample from; it must be the checkpoint rolled out (unless allowed)."""
        url = self.client.base_url
        if self.served_model and self.served_model not in ids:
            raise ServerError(f"the server at {url} does not serve {self.served_model!r} (it lists {ids})")
        if not self.served_model and len(ids) != 1:
            raise ServerError(f"the server at {url} lists {len(ids)} models ({ids}): name one with "
                              "--served-model")
        model = self.served_model or ids[0]
        if not matches_checkpoint(model, self.checkpoint):
            if not self.allow_off_policy:
                raise UsageError(
                    f"the server at {url} serves {model!r}, not the checkpoint {self.checkpoint} being "
                    "rolled out (the rows would carry its weights fingerprint)",
                    hint="serve the checkpoint folder under its path (vLLM's default), use --serve-cmd, or "
                    "pass --allow-off-policy")
            self.counts["model_unverified"] = 1
        return model

    def _request_params(self, i: int, sample: int = 0) -> dict[str, Any]:
        pad = self.processing.tokenizer.pad_token_id
        seed = (self.params["seed"] * 1_000_003 + i * self.k + sample) % 2**31
        return {**self.params, "request_seed": seed, "pad_token_id": pad}

    def _check_distribution(self) -> None:
        gen = checkpoint_generation_config(self.processing.path)
        missing = uncarried(self.client.protocol.carried(), gen, pinned=self.pinned)
        if not missing:
            return
        if not self.allow_off_policy:
            raise UsageError(
                f"the server at {self.client.base_url} does not take {', '.join(missing)} in a request "
                f"(it rejected {', '.join(self.client.protocol.dropped) or 'them'}), so it would sample with "
                "its own defaults for them: not the distribution PPO scores",
                hint="start the engine with --serve-cmd (the toolkit serves a copy of the checkpoint with "
                "a pinned generation_config), or pass --allow-off-policy to accept off-policy rollouts")
        for name in missing:
            self.params[name] = SERVED_DEFAULT

    async def _complete_from(self, i: int, prompt: Prompt, first: dict | None) -> list[list[int]]:
        ids = prompt.ids
        choices: list[Choice] = []
        if first is not None:
            choices += self._checked(first, ids)
        if first is None and self.client.protocol.n:
            body = self.client.body(prompt, self.k, self._request_params(i))
            reply = await self.client.complete(body, f"p{i}")
            choices += self._checked(reply, ids)
        if len(choices) < self.k:
            if first is not None:
                self.client.protocol.n = len(choices) >= self.k
            for s in range(len(choices), self.k):
                body = self.client.body(prompt, 1, self._request_params(i, s))
                choices += self._checked(await self.client.complete(body, f"p{i}s{s}"), ids)[:1]
        return [self._response_ids(c) for c in choices[: self.k]]

    def _checked(self, reply: dict[str, Any], prompt_ids: list[int]) -> list[Choice]:
        self.counts["requests"] += 1
        choices = choices_of(reply)
        if not choices:
            raise ServerError(f"the server at {self.client.base_url} answered without choices")
        served = reply.get("prompt_token_ids") or next(
            (c.get("prompt_token_ids") for c in reply["choices"] if c.get("prompt_token_ids")), None)
        used = (reply.get("usage") or {}).get("prompt_tokens")
        self.counts["completion_tokens"] += int((reply.get("usage") or {}).get("completion_tokens") or 0)
        if (served is not None and list(served) != prompt_ids) or (served is None and used is not None
                                                                   and used != len(prompt_ids)):
            raise ServerError(
                f"the server tokenized the prompt into {len(served) if served else used} tokens, the "
                f"in-process path into {len(prompt_ids)}: it did not sample from the prompt ppo scores",
                hint="a tokenizer that adds BOS to a text prompt? serve with an engine that takes token-id "
                "prompts (vLLM)")
        return choices

    def _response_ids(self, c: Choice) -> list[int]:
        stops = self.params["stop_token_ids"]
        if c.token_ids is not None:
            ids = list(c.token_ids)
        else:
            self.client.protocol.token_ids = "retokenized"
            ids = self.processing.tokenizer(c.text, add_special_tokens=False)["input_ids"]
        if c.finish_reason == "stop" and not (ids and ids[-1] in stops):
            ids.append(self._stop_token(c, stops))
        return ids

    def _stop_token(self, c: Choice, stops: list[int]) -> int:
        """The stop token that ended a response the server returned without it."""
        if isinstance(c.stop_reason, int) and c.stop_reason in stops:
            return int(c.stop_reason)
        if len(stops) == 1:
            return stops[0]
        self.counts["stop_token_inferred"] += 1  # several stop ids and the server did not say which
        eos = self.processing.tokenizer.eos_token_id
        return int(eos) if eos in stops else stops[0]


def server_rows(sampler: ServerSampler, problems: Any, *, model: str, fingerprint: str, round: int,
                drop_repeats: bool, served: dict[str, Any]) -> list[dict[str, Any]]:
    """Sample k responses per problem through the server; the rationales rows, in problem order."""
    from ..rollout import response_text

    proc = sampler.processing
    prompts = [problem_prompt(proc, problems[i]) for i in range(len(problems))]
    responses = asyncio.run(_sample_and_close(sampler, prompts))
    params = {**sampler.params, "server": {**sampler.client.describe(), **served}}
    params_json = json.dumps(params, sort_keys=True)
    stops = set(params["stop_token_ids"])
    rows = []
    for i, samples in enumerate(responses):
        for s, ids in enumerate(samples):
            rows.append(build_rationale(
                problems[i]["problem_id"], response_text(proc.tokenizer, ids, stops), sample_index=s,
                round=round, generator=model, generator_fingerprint=fingerprint,
                generation_params=params_json, prompt=prompts[i].text, token_ids=ids,
                drop_repeats=drop_repeats))
    return rows


def problem_prompt(proc: Processing, problem: dict[str, Any]) -> Prompt:
    """The prompt of a problem as the in-process path builds it (ids, text); a VLM's also as chat messages
    with the image as a PNG data URI (the served model's chat template renders the same prompt)."""
    from ..prompting import build_inputs, build_prompt, problem_image

    enc = build_inputs(proc, [problem])
    ids = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
    if not proc.is_vlm:
        return Prompt(ids, enc.prompts[0])
    image = problem_image(problem)
    parts: list[dict[str, Any]] = [] if image is None else [{"type": "image_url", "image_url": {
        "url": png_data_uri(image)}}]
    return Prompt(ids, enc.prompts[0], [{"role": "user", "content": [
        *parts, {"type": "text", "text": build_prompt(problem)}]}])


def png_data_uri(image: Any) -> str:
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


async def _sample_and_close(sampler: ServerSampler, prompts: list[Prompt]) -> Any:
    try:
        return await sampler.sample(prompts)
    finally:
        await sampler.client.close()
