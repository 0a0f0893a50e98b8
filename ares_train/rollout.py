"""Rollout: sample k rationales per problem with a policy and publish them as a `rationales` dataset.

Prompts come from `prompting` (images go through the processor for VLMs), generation is batched with left
padding, every sample is segmented into sentences (`ares_data.rationales.build_rationale`), and each row
records the generator (model path), `generator_fingerprint` (`weights_fingerprint` of the checkpoint), the
sampling parameters (JSON), the round, the exact prompt and the generated token ids (EOS and padding
stripped; `text` is decoded from them with special tokens skipped).

Deterministic for a given seed and batch size. A rollout of the same checkpoint on the same problems with
the same parameters reuses the published version without generating anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
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
        warnings = []
        if self.temperature == 0 and self.k > 1:
            warnings.append(f"temperature 0 is greedy: all {self.k} samples per problem will be identical; "
                            "use --temperature 0.7..1.0 or --k 1")
        return warnings

    def generation_params(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "do_sample": self.temperature > 0, "seed": self.seed, "batch_size": self.batch_size,
                "dtype": self.dtype}


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


def _batches(n_problems: int, k: int, size: int) -> Iterator[list[tuple[int, int]]]:
    items = [(p, s) for p in range(n_problems) for s in range(k)]
    for i in range(0, len(items), size):
        yield items[i:i + size]


def strip_response(ids: list[int], eos_ids: set[int], pad_id: int | None) -> list[int]:
    """The response up to (not including) the first EOS, without padding."""
    out = []
    for t in ids:
        if t in eos_ids:
            break
        if t != pad_id:
            out.append(t)
    return out


def _eos_ids(policy: Any) -> set[int]:
    eos = policy.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids | {policy.tokenizer.eos_token_id}


def generate_rows(policy: Any, problems: Any, cfg: RolloutConfig, fingerprint: str,
                  progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Yield one rationales row per (problem, sample), in problem order."""
    import torch

    from .prompting import build_inputs

    torch.manual_seed(cfg.seed)
    params = cfg.generation_params()
    params_json = json.dumps(params, sort_keys=True)
    eos, pad = _eos_ids(policy), policy.tokenizer.pad_token_id
    device = next(policy.model.parameters()).device
    total, done = len(problems) * cfg.k, 0
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p} if cfg.temperature > 0 else {}
    for batch in _batches(len(problems), cfg.k, cfg.batch_size):
        rows = [problems[p] for p, _ in batch]
        inputs = build_inputs(policy, rows)
        tensors = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            out = policy.model.generate(**tensors, max_new_tokens=cfg.max_new_tokens,
                                        do_sample=cfg.temperature > 0, pad_token_id=pad, **sampling)
        responses = out[:, inputs.prompt_length:]
        for (_, sample), problem, prompt, seq in zip(batch, rows, inputs.prompts, responses, strict=True):
            ids = strip_response(seq.tolist(), eos, pad)
            text = policy.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            yield build_rationale(
                problem["problem_id"], text, sample_index=sample, round=cfg.round, generator=cfg.model,
                generator_fingerprint=fingerprint, generation_params=params_json, prompt=prompt,
                token_ids=ids, drop_repeats=cfg.drop_repeats)
        done += len(batch)
        if progress is not None:
            progress(done, total)


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
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_policy(cfg.model, dtype=cfg.dtype, device=device)
    rows = select_problems(problems, cfg.split, cfg.limit, with_images=policy.is_vlm)
    extra = {"generator": cfg.model, "generator_fingerprint": fingerprint}
    with store.writer(cfg.output, "rationales", parents=[problems], params=params, extra=extra,
                      command=command) as w:
        w.counts.update({"problems": len(rows), "empty": 0, "sentences": 0})
        for row in generate_rows(policy, rows, cfg, fingerprint, progress):
            w.write(row)
            w.count("sentences", len(row["sentences"]))
            if not row["text"].strip():
                w.count("empty")
    return w.result
