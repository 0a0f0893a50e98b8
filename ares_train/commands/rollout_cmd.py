"""`ares-train rollout`: sample k rationales per problem and publish them as a rationales dataset."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ares_data.commands.common import JsonOpt, StoreOpt, emit_json, err_console, get_store, published_message

from ..rollout import RolloutConfig
from .train_common import ConfigOpt, config_option, print_warnings, progress_bar

app = typer.Typer()


def _o(name: str, *decls: str) -> typer.models.OptionInfo:
    return config_option(RolloutConfig, name, *decls)


@app.command("rollout")
def rollout_cmd(
    model: Annotated[Optional[str], _o("model")] = None,
    problems: Annotated[Optional[str], _o("problems")] = None,
    output: Annotated[Optional[str], _o("output", "-o", "--output")] = None,
    k: Annotated[Optional[int], _o("k", "--k")] = None,
    split: Annotated[Optional[str], _o("split")] = None,
    max_new_tokens: Annotated[Optional[int], _o("max_new_tokens")] = None,
    temperature: Annotated[Optional[float], _o("temperature")] = None,
    top_p: Annotated[Optional[float], _o("top_p")] = None,
    batch_size: Annotated[Optional[int], _o("batch_size")] = None,
    round: Annotated[Optional[int], _o("round", "--round")] = None,
    seed: Annotated[Optional[int], _o("seed")] = None,
    limit: Annotated[Optional[int], _o("limit")] = None,
    drop_repeats: Annotated[Optional[bool], _o("drop_repeats", "--drop-repeats/--keep-repeats")] = None,
    dtype: Annotated[Optional[str], _o("dtype")] = None,
    device: Annotated[Optional[str], _o("device")] = None,
    engine: Annotated[Optional[str], _o("engine")] = None,
    base_url: Annotated[Optional[str], _o("base_url")] = None,
    served_model: Annotated[Optional[str], _o("served_model")] = None,
    serve_cmd: Annotated[Optional[str], _o("serve_cmd")] = None,
    concurrency: Annotated[Optional[int], _o("concurrency")] = None,
    request_timeout: Annotated[Optional[float], _o("request_timeout")] = None,
    max_attempts: Annotated[Optional[int], _o("max_attempts")] = None,
    startup_timeout: Annotated[Optional[float], _o("startup_timeout")] = None,
    log: Annotated[Optional[str], _o("log")] = None,
    allow_off_policy: Annotated[Optional[bool], _o("allow_off_policy", "--allow-off-policy")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample --k rationales per problem with a policy (text LM or VLM), segment them into sentences and
    publish a rationales dataset recording the generator, its weights fingerprint, the sampling parameters,
    the prompt and the generated token ids. The same checkpoint, problems and settings reuse the version.

    Sampling is plain softmax(logits / T) (no top-k/top-p/penalties, whatever the model's generation_config
    says), the distribution `ares-train ppo` scores. With --engine server it goes through an OpenAI-compatible
    completions endpoint (vLLM, transformers serve): --base-url URL, or --serve-cmd "vllm serve {model}
    --port {port}" to start the engine on the checkpoint for the rollout and stop it afterwards.

    Example: ares-train rollout --model ./policy --problems sqa --k 4 --max-new-tokens 256 -o rats"""
    overrides = {k_: v for k_, v in locals().items() if k_ not in ("config", "store", "as_json")}
    from ..deps import require_train_extra

    require_train_extra()
    from ..config import build_config
    from ..rollout import run_rollout

    cfg, warnings = build_config(RolloutConfig, config, overrides, section="rollout")
    print_warnings(warnings)
    with progress_bar("rollout", enabled=not as_json) as progress:
        version = run_rollout(get_store(store), cfg, progress=progress, command=sys.argv)
    if as_json:
        emit_json({"ref": version.ref, "path": str(version.path), "rows": version.manifest["rows"],
                   "reused": version.reused, "counts": version.manifest.get("counts", {}),
                   "generator_fingerprint": version.manifest.get("generator_fingerprint")})
    else:
        err_console().print(published_message(version), highlight=False)
