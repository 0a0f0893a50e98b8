"""Rollout: sample k rationales per problem with a policy and publish them as a `rationales` dataset.

Prompts come from `prompting` (images go through the processor for VLMs), generation is batched with left
padding, every sample is segmented into sentences (`ares_data.rationales.build_rationale`), and each row
records the generator (model path), `generator_fingerprint` (`weights_fingerprint` of the checkpoint), the
sampling parameters (JSON: every field `ares_train.sampling` defines, the model's stop token ids), the round,
the exact prompt and the generated token ids, ending in the stop token that ended the response when one did
(padding stripped; `text` is decoded from them without it and with special tokens skipped).

Sampling is plain softmax(logits / T) whatever the model's generation_config says (`sampling.plain_generate`),
the distribution `ares-train ppo` scores; `--top-p` < 1 or temperature 0 make rows that ppo refuses.

Deterministic for a given seed and batch size. A rollout of the same checkpoint on the same problems with
the same parameters reuses the published version without generating anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ares_data.errors import ConfigError, InputError
from ares_data.rationales import build_rationale
from ares_data.store import Store, Version, build_key

from .config import BaseConfig, opt

Progress = Callable[[int, int], None]


@dataclass
class RolloutConfig(BaseConfig):
    model: str = opt("", "Policy to sample from: model folder, hub id, or LoRA adapter folder.")
    problems: str = opt("", "Problems dataset (NAME or NAME@vN).")
    output: str = opt("", "Name of the rationales dataset to publish.")
    k: int = opt(4, "Rationales sampled per problem.")
    split: str = opt("train", "Problems split to use ('all' for every split).")
    max_new_tokens: int = opt(256, "Longest rationale, in tokens.")
    temperature: float = opt(1.0, "Sampling temperature (0 = greedy).")
    top_p: float = opt(1.0, "Nucleus sampling: keep the smallest token set with this much probability.")
    batch_size: int = opt(16, "Sequences generated together (prompts x samples).")
    round: int = opt(0, "ARES round recorded on every row.")
    seed: int = opt(0, "Random seed; the same seed and settings give the same rationales.")
    limit: int = opt(0, "Use only the first N problems of the split (0 = all).")
    drop_repeats: bool = opt(False, "Leave repeated sentences out of `sentences` (listed as dropped).")
    dtype: str = opt("auto", "Weights dtype: auto (as stored), float32, bfloat16, float16.")
    device: str = opt("", "Device (default: cuda when available, else cpu).")
    engine: str = opt("transformers", "Who samples: transformers (model.generate in this process) or server "
                      "(an OpenAI-compatible completions endpoint: --base-url, or --serve-cmd to start one).")
    base_url: str = opt("", "engine server: the endpoint, e.g. http://localhost:8000/v1.")
    served_model: str = opt("", "engine server: the model id to request (default: the only one listed).")
    serve_cmd: str = opt("", "engine server: start this engine on the checkpoint for the rollout, e.g. "
                         "'vllm serve {model} --port {port}' ({model}: a copy with a pinned "
                         "generation_config; {port}: a free port); it is stopped afterwards.")
    concurrency: int = opt(8, "engine server: requests in flight.")
    request_timeout: float = opt(600.0, "engine server: seconds per request attempt.")
    max_attempts: int = opt(3, "engine server: attempts per request (connection errors, 429, 5xx).")
    startup_timeout: float = opt(600.0, "engine server: seconds --serve-cmd may take to answer /v1/models.")
    log: str = opt("", "engine server: append one JSON line per request attempt to this file.")
    allow_off_policy: bool = opt(False, "engine server: accept a server that cannot pin the sampling "
                                 "distribution or serves another model (recorded; ppo refuses such rows).")

    def validate(self) -> list[str]:
        for name in ("model", "problems", "output"):
            if not getattr(self, name):
                raise ConfigError(f"rollout needs '{name}'", hint=f"pass --{name.replace('_', '-')} "
                                  "or set it in the --config file")
        if self.k < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("k, max_new_tokens and batch_size must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1] (got {self.temperature}, "
                              f"{self.top_p})")
        validate_engine(self)
        warnings = []
        if self.temperature == 0 and self.k > 1:
            warnings.append(f"temperature 0 is greedy: all {self.k} samples per problem will be identical; "
                            "use --temperature 0.7..1.0 or --k 1")
        if self.top_p < 1 or self.temperature == 0:
            warnings.append("top_p < 1 or temperature 0 is not the distribution PPO scores: `ares-train ppo` "
                            "refuses these rationales unless --allow-off-policy")
        return warnings

    def generation_params(self, stop_token_ids: list[int] | None = None) -> dict[str, Any]:
        """Every sampling parameter (`sampling.sampling_params`) plus seed, batch size and dtype; the rows
        also record the model's `stop_token_ids` (left out of the build key: they come with the weights)."""
        from .sampling import sampling_params

        params = sampling_params(self.temperature, self.max_new_tokens, stop_token_ids or [],
                                 top_p=self.top_p)
        if stop_token_ids is None:
            params.pop("stop_token_ids")
        if self.engine == "server":
            return {**params, "engine": "server", "seed": self.seed}
        return {**params, "engine": "transformers", "seed": self.seed, "batch_size": self.batch_size,
                "dtype": self.dtype}


def validate_engine(cfg: Any) -> None:
    """The engine fields shared by rollout and eval configs (engine, base_url, serve_cmd, ...)."""
    if cfg.engine not in ("transformers", "server"):
        raise ConfigError(f"unknown engine {cfg.engine!r}: use transformers or server")
    server = bool(cfg.base_url or cfg.serve_cmd)
    if cfg.engine == "transformers" and server:
        raise ConfigError("--base-url / --serve-cmd sample through a server", hint="add --engine server")
    if cfg.engine == "server" and bool(cfg.base_url) == bool(cfg.serve_cmd):
        raise ConfigError("--engine server needs exactly one of --base-url URL and --serve-cmd CMD")
    if cfg.concurrency < 1 or cfg.max_attempts < 1:
        raise ConfigError("concurrency and max_attempts must be >= 1")


def select_problems(version: Version, split: str, limit: int, *, with_images: bool) -> Any:
    """The problems of `split` (datasets.Dataset); image decoding is skipped for text-only policies."""
    ds = version.load()
    if not with_images and "image" in ds.column_names:
        ds = ds.remove_columns(["image"])
    if split and split != "all":
        splits = ds.data.column("split").to_pylist()
        keep = [i for i, s in enumerate(splits) if s == split]
        if not keep:
            raise InputError(f"no problems with split '{split}' in {version.ref} "
                             f"(splits: {', '.join(sorted(set(splits)))})", field="split")
        ds = ds.select(keep)
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def prompt_order(policy: Any, problems: Any) -> list[int]:
    """Problem indices, shortest prompt first (batches of similar lengths need less left padding)."""
    from .prompting import render_prompt

    tok = policy.tokenizer
    lengths = [len(tok(render_prompt(policy, problems[i]), add_special_tokens=False)["input_ids"])
               for i in range(len(problems))]
    return sorted(range(len(problems)), key=lambda i: (lengths[i], i))


def until_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    """The response up to and including the first stop token (what was sampled; the rest is padding)."""
    for n, t in enumerate(ids):
        if t in stop_ids:
            return ids[: n + 1]
    return ids


def response_text(tokenizer: Any, ids: list[int], stop_ids: set[int]) -> str:
    """The rationale text of a response: its ids decoded without the stop token and special tokens."""
    body = ids[:-1] if ids and ids[-1] in stop_ids else ids
    return tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def generate_rows(policy: Any, problems: Any, cfg: RolloutConfig, fingerprint: str,
                  progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Yield one rationales row per (problem, sample), in problem order.

    Prompts are generated shortest first (`prompt_order`), so a batch pads little; the rows are put back in
    problem order. Sampling is `sampling.plain_generate` (the model's generation_config set aside)."""
    import torch

    from .prompting import build_inputs
    from .sampling import plain_generate, stop_token_ids

    torch.manual_seed(cfg.seed)
    stops = stop_token_ids(policy)
    params_json = json.dumps(cfg.generation_params(stops), sort_keys=True)
    device = next(policy.model.parameters()).device
    items = [(p, s) for p in prompt_order(policy, problems) for s in range(cfg.k)]
    done: dict[tuple[int, int], dict[str, Any]] = {}
    for start in range(0, len(items), cfg.batch_size):
        batch = items[start:start + cfg.batch_size]
        rows = [problems[p] for p, _ in batch]
        inputs = build_inputs(policy, rows)
        tensors = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            out = plain_generate(policy, tensors, temperature=cfg.temperature, top_p=cfg.top_p,
                                 max_new_tokens=cfg.max_new_tokens)
        for item, problem, prompt, seq in zip(batch, rows, inputs.prompts, out[:, inputs.prompt_length:],
                                              strict=True):
            ids = until_stop(seq.tolist(), set(stops))
            done[item] = build_rationale(
                problem["problem_id"], response_text(policy.tokenizer, ids, set(stops)), sample_index=item[1],
                round=cfg.round, generator=cfg.model, generator_fingerprint=fingerprint,
                generation_params=params_json, prompt=prompt, token_ids=ids, drop_repeats=cfg.drop_repeats)
        if progress is not None:
            progress(len(done), len(items))
    for p in range(len(problems)):
        for s in range(cfg.k):
            yield done.pop((p, s))


def rollout_key(problems: Version, cfg: RolloutConfig, fingerprint: str) -> tuple[str, dict[str, Any]]:
    params = {"generator": cfg.model, "generator_fingerprint": fingerprint, "k": cfg.k, "split": cfg.split,
              "round": cfg.round, "limit": cfg.limit, "drop_repeats": cfg.drop_repeats,
              "generation": cfg.generation_params()}
    return build_key("rationales", [problems.as_parent()], params), params


def run_rollout(store: Store, cfg: RolloutConfig, *, progress: Progress | None = None,
                command: list[str] | None = None) -> Version:
    """Sample, segment and publish; returns the (possibly reused) rationales Version."""
    from .modeling import load_policy, weights_fingerprint

    problems = store.resolve_kind(cfg.problems, "problems")
    fingerprint = weights_fingerprint(cfg.model)
    key, params = rollout_key(problems, cfg, fingerprint)
    found = store.find_build(cfg.output, key)
    if found is not None:
        found.reused = True
        return found
    if cfg.engine == "server":
        from .serving.session import publish_server_rollout

        return publish_server_rollout(store, cfg, problems, fingerprint, params, progress=progress,
                                      command=command)
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_policy(cfg.model, dtype=cfg.dtype, device=device)
    rows = select_problems(problems, cfg.split, cfg.limit, with_images=policy.is_vlm)
    return publish_rows(store, cfg, problems, params, generate_rows(policy, rows, cfg, fingerprint, progress),
                        len(rows), fingerprint, command=command)


def publish_rows(store: Store, cfg: RolloutConfig, problems: Version, params: dict[str, Any],
                 rows: Iterable[dict[str, Any]], n_problems: int, fingerprint: str, *,
                 extra: dict[str, Any] | None = None, counts: dict[str, int] | None = None,
                 command: list[str] | None = None) -> Version:
    """Write the rows (streaming) and publish the rationales version atomically."""
    extra = {"generator": cfg.model, "generator_fingerprint": fingerprint, **(extra or {})}
    with store.writer(cfg.output, "rationales", parents=[problems], params=params, extra=extra,
                      command=command) as w:
        w.counts.update({"problems": n_problems, "empty": 0, "sentences": 0, **(counts or {})})
        for row in rows:
            w.write(row)
            w.count("sentences", len(row["sentences"]))
            if not row["text"].strip():
                w.count("empty")
    return w.result
