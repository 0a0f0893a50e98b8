"""`ares-train sft`: fine-tune on teacher corrections or any rationales (TRL SFTTrainer, completion loss)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ares_data.commands.common import JsonOpt, StoreOpt, emit_json, err_console, get_store

from ..sft import SFTConfig
from .train_common import ConfigOpt, config_option, print_warnings, progress_bar

app = typer.Typer()


def _o(name: str, *decls: str) -> typer.models.OptionInfo:
    return config_option(SFTConfig, name, *decls)


@app.command("sft")
def sft_cmd(
    model: Annotated[Optional[str], _o("model")] = None,
    corrections: Annotated[Optional[str], _o("corrections")] = None,
    rationales: Annotated[Optional[str], _o("rationales")] = None,
    output_dir: Annotated[Optional[str], _o("output_dir", "-o", "--output-dir")] = None,
    epochs: Annotated[Optional[float], _o("epochs")] = None,
    lr: Annotated[Optional[float], _o("lr")] = None,
    batch_size: Annotated[Optional[int], _o("batch_size")] = None,
    grad_accum: Annotated[Optional[int], _o("grad_accum")] = None,
    max_steps: Annotated[Optional[int], _o("max_steps")] = None,
    max_length: Annotated[Optional[int], _o("max_length")] = None,
    warmup: Annotated[Optional[float], _o("warmup")] = None,
    weight_decay: Annotated[Optional[float], _o("weight_decay")] = None,
    seed: Annotated[Optional[int], _o("seed")] = None,
    logging_steps: Annotated[Optional[int], _o("logging_steps")] = None,
    save_steps: Annotated[Optional[int], _o("save_steps")] = None,
    save_total_limit: Annotated[Optional[int], _o("save_total_limit")] = None,
    report_to: Annotated[Optional[str], _o("report_to")] = None,
    resume: Annotated[Optional[bool], _o("resume", "--resume/--no-resume")] = None,
    dtype: Annotated[Optional[str], _o("dtype")] = None,
    bf16: Annotated[Optional[bool], _o("bf16", "--bf16/--no-bf16")] = None,
    save_dtype: Annotated[Optional[str], _o("save_dtype")] = None,
    gradient_checkpointing: Annotated[Optional[bool], _o("gradient_checkpointing", "--gradient-checkpointing/"
                                                         "--no-gradient-checkpointing")] = None,
    lora_r: Annotated[Optional[int], _o("lora_r")] = None,
    lora_alpha: Annotated[Optional[int], _o("lora_alpha")] = None,
    lora_dropout: Annotated[Optional[float], _o("lora_dropout")] = None,
    lora_target_modules: Annotated[Optional[str], _o("lora_target_modules")] = None,
    merge: Annotated[Optional[bool], _o("merge", "--merge/--no-merge")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a policy on teacher corrections (the ARES correction stage) or on any rationales dataset
    (the supervised warm start before RL, e.g. on imported reference rationales).

    Each ok correction (or non-empty rationale) is a prompt/completion record with the prompt tokenized as
    rollout and PPO tokenize it (images for VLMs); the loss is on the completion only. Failed and empty rows
    are skipped and counted. A bf16/fp16 checkpoint trains with float32 master weights under autocast and is
    saved in --save-dtype (float32 by default). OUTDIR gets the model (or LoRA adapter; --merge adds
    OUTDIR/merged), resumable checkpoint-N folders and ares-checkpoint.json.

    Example: ares-train sft --model ./policy-rl --corrections rats-fixed -o ./policy-sft --lora-r 16 --merge
    """
    overrides = {k: v for k, v in locals().items() if k not in ("config", "store", "as_json")}
    from ..deps import require_train_extra

    require_train_extra()
    from ..config import build_config
    from ..sft import run_sft

    cfg, warnings = build_config(SFTConfig, config, overrides, section="sft")
    print_warnings(warnings)
    with progress_bar("sft", enabled=not as_json) as progress:
        summary = run_sft(get_store(store), cfg, progress=progress)
    if as_json:
        emit_json(summary)
        return
    c = summary["counts"]
    loss = summary["losses"][-1] if summary["losses"] else summary["train_loss"]
    merged = f" (merged: {summary['merged']})" if "merged" in summary else ""
    mixed = f", autocast {summary['compute_dtype']}" if summary["compute_dtype"] else ""
    err_console().print(
        f"trained {summary['steps']} steps on {c['used']} {summary['kind']} of {summary['dataset']} "
        f"({c['failed']} failed and {c['empty']} empty skipped){mixed}, final loss {loss:.4f}\n"
        f"saved to {summary['output_dir']}{merged}", highlight=False)
