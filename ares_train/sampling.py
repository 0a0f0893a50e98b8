"""The sampling distribution PPO assumes, how rollouts sample from it, and the check that they did.

PPO scores every response token with log softmax(logits / T) (`ares_train.ppo.algorithm`), so a rollout meant
for PPO must sample from exactly that distribution: no top-k / top-p / min-p / typical truncation, no
repetition, frequency or presence penalty, no n-gram blocking, no forced or suppressed tokens, one
temperature T > 0. Engines apply a model's `generation_config.json` by default (and transformers adds
`top_k=50` when nothing sets it), so every such field is overridden explicitly:

- in-process (`plain_generate`): `generate` runs with a clean GenerationConfig holding only the token ids of
  the model's config (eos/pad/bos) and the neutral value of every field, while the model's own config is set
  aside, so nothing in its `generation_config.json` reaches the logits processors;
- through a server (`ares_train.serving`): the request carries the neutral values the server accepts, and a
  folder served with `--serve-cmd` gets a pinned `generation_config.json`.

Every rationale row records what was used (`generation_params`, JSON): the fields of `NEUTRAL` with their
values, `temperature`, `do_sample`, `max_new_tokens` and `stop_token_ids` (the ids that end a response; the
one that ended it is the last of the row's `token_ids`). `differences(params)` lists what keeps a row from
being plain sampling; `ares-train ppo` refuses such rows unless --allow-off-policy. Rows that record no
`stop_token_ids` come from an older `ares-train rollout` or an import: their sampling is unknown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# The value of every distribution-changing knob at which it does nothing (what rollouts record).
NEUTRAL: dict[str, Any] = {
    "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
}
# Other spellings of "off" (vLLM: top_k=-1; unset fields are None).
_ALSO_OFF: dict[str, set[Any]] = {"top_k": {-1}}
# GenerationConfig fields with no neutral non-None value: they must stay unset.
UNSET_FIELDS = ("sequence_bias", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                "forced_bos_token_id", "forced_eos_token_id", "exponential_decay_length_penalty",
                "guidance_scale", "watermarking_config", "top_h", "min_p")
_IDS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")
REQUIRED = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "stop_token_ids")


def sampling_params(temperature: float, max_new_tokens: int, stop_token_ids: list[int], *,
                    top_p: float = 1.0) -> dict[str, Any]:
    """The `generation_params` sampling fields of a rollout (plain sampling unless top_p < 1 or T = 0)."""
    return {**NEUTRAL, "top_p": top_p, "temperature": temperature, "do_sample": temperature > 0,
            "max_new_tokens": max_new_tokens, "stop_token_ids": sorted(int(i) for i in stop_token_ids)}


def is_off(name: str, value: Any) -> bool:
    return value is None or value == NEUTRAL[name] or value in _ALSO_OFF.get(name, set())


def differences(params: dict[str, Any]) -> list[str]:
    """What keeps `params` (a row's generation_params) from plain softmax(logits / T) sampling ([] = none)."""
    missing = [k for k in REQUIRED if k not in params]
    if missing:
        return [f"sampling parameters not recorded ({', '.join(missing)} missing: a rollout from an older "
                "ares-train or an import)"]
    out = []
    temperature = params.get("temperature")
    if not params.get("do_sample") or not isinstance(temperature, (int, float)) or temperature <= 0:
        out.append(f"greedy decoding (do_sample={params.get('do_sample')}, temperature={temperature})")
    out += [f"{k}={params[k]}" for k in NEUTRAL if k in params and not is_off(k, params[k])]
    return out + [f"{k}={params[k]}" for k in UNSET_FIELDS if k != "min_p" and params.get(k) is not None]


def stop_token_ids(policy: Any) -> list[int]:
    """Every id that ends a response: the generation config's EOS ids and the tokenizer's EOS."""
    eos = getattr(policy.model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if policy.tokenizer.eos_token_id is not None:
        ids.add(policy.tokenizer.eos_token_id)
    return sorted(int(i) for i in ids)


def generation_config(policy: Any, *, temperature: float, max_new_tokens: int, top_p: float = 1.0) -> Any:
    """A GenerationConfig with the model's token ids and every other field explicit (see module doc)."""
    from transformers import GenerationConfig

    own = policy.model.generation_config
    ids = {k: getattr(own, k, None) for k in _IDS}
    ids["eos_token_id"] = stop_token_ids(policy)
    if ids["pad_token_id"] is None:
        ids["pad_token_id"] = policy.tokenizer.pad_token_id
    sample = temperature > 0
    values = {k: v for k, v in NEUTRAL.items() if k not in ("frequency_penalty", "presence_penalty", "min_p")}
    if not sample:
        values.pop("top_k")  # greedy: no warper runs (and transformers warns about a set top_k)
    values.update(max_new_tokens=max_new_tokens, do_sample=sample, num_beams=1,
                  temperature=temperature if sample else 1.0, top_p=top_p if sample else 1.0,
                  encoder_repetition_penalty=1.0, encoder_no_repeat_ngram_size=0, renormalize_logits=False,
                  remove_invalid_values=False)
    cfg = GenerationConfig(**{k: v for k, v in ids.items() if v is not None}, **values)
    for name in UNSET_FIELDS:
        setattr(cfg, name, None)
    return cfg


@contextlib.contextmanager
def _own_config_set_aside(model: Any) -> Iterator[None]:
    """generate() fills every unset field from `model.generation_config`: replace it by one that holds
    only the token ids while generating."""
    from transformers import GenerationConfig

    own = model.generation_config
    model.generation_config = GenerationConfig(**{k: getattr(own, k) for k in _IDS
                                                  if getattr(own, k, None) is not None})
    try:
        yield
    finally:
        model.generation_config = own


def plain_generate(policy: Any, inputs: dict[str, Any], *, temperature: float, max_new_tokens: int,
                   top_p: float = 1.0, **extra: Any) -> Any:
    """`model.generate(**inputs)` sampling from softmax(logits / T) (greedy at T = 0), whatever the model's
    generation_config says; `extra` are output options (return_dict_in_generate, output_scores, ...)."""
    cfg = generation_config(policy, temperature=temperature, max_new_tokens=max_new_tokens, top_p=top_p)
    model_kwargs = cfg.update(**extra)
    with _own_config_set_aside(policy.model):
        return policy.model.generate(**inputs, **model_kwargs, generation_config=cfg)
