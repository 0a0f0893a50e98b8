"""Supervised fine-tuning with TRL's `SFTTrainer`: the ARES correction stage and the warm start.

The training rows come from a corrections dataset (teacher-fixed rationales: the correction stage) or from
any rationales dataset (e.g. imported reference rationales: the supervised warm start before RL). Each
usable row becomes a prompt + completion whose loss is on the completion only; failed corrections and
empty texts are skipped and counted.

The token ids are those rollout and PPO use (`ares_train.prompting`): the prompt is `encode_prompts` of the
parent problem (the rendered prompt tokenized without special tokens, so a tokenizer that prepends BOS by
default, as Llama, Mistral and Gemma do, gets none that rollout would not see) and the completion
`response_ids` of the text (+ EOS; a rollout rationale's text too, re-tokenized as PPO does for imported
rationales, not its sampled `token_ids`). Text models get these ids pre-tokenized; VLMs get the prompt
string and image, which TRL's vision collator tokenizes with the processor without special tokens, as
rollout does.

Mixed precision: `load_policy(trainable=True)` keeps float32 master weights; a bf16/fp16 checkpoint (or
`dtype`) trains under autocast to that half dtype, and the result is written in `save_dtype` (float32 by
default, so a later round keeps every update). The output folder holds the model (or, with LoRA, the
adapter), its processor/tokenizer, resumable `checkpoint-N` folders and `ares-checkpoint.json` (every
checkpoint-N too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ares_data.errors import ConfigError, InputError
from ares_data.store import Store, Version

from .checkpoint import check_save_dtype, save_dtype_help, save_model, write_checkpoint_manifest
from .config import LoraFields, opt

Progress = Callable[[int, int], None]


@dataclass
class SFTConfig(LoraFields):
    model: str = opt("", "Model to fine-tune: model folder, hub id, or LoRA adapter folder (trains it on).")
    corrections: str = opt("", "Corrections dataset to train on (NAME or NAME@vN); or give --rationales.")
    rationales: str = opt("", "Rationales dataset to train on instead (NAME or NAME@vN), e.g. imported "
                          "reference rationales for the warm start before RL.")
    output_dir: str = opt("", "Folder for the trained model, checkpoints and ares-checkpoint.json.")
    epochs: float = opt(1.0, "Passes over the training rows.")
    lr: float = opt(2e-5, "Peak learning rate (LoRA usually wants ~1e-4..2e-4).")
    batch_size: int = opt(4, "Per-device batch size.")
    grad_accum: int = opt(1, "Gradient accumulation steps.")
    max_steps: int = opt(-1, "Stop after this many optimizer steps (-1: run the epochs).")
    max_length: int = opt(1024, "Truncate prompt + completion to this many tokens.")
    warmup: float = opt(0.0, "Linear warm-up: a fraction of the steps (< 1) or a number of steps (>= 1).")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    seed: int = opt(0, "Random seed.")
    logging_steps: int = opt(10, "Log loss every N steps.")
    save_steps: int = opt(500, "Save a resumable checkpoint every N steps.")
    save_total_limit: int = opt(2, "Keep at most N checkpoint-* folders.")
    report_to: str = opt("none", "Where to log: none, tensorboard (offline), wandb, ... (comma-separated).")
    resume: bool = opt(False, "Resume from the newest checkpoint-* in the output folder.")
    dtype: str = opt("auto", "Compute dtype: auto (the checkpoint's), float32, bfloat16, float16. Full "
                     "fine-tuning keeps float32 master weights and autocasts to a half dtype.")
    bf16: bool = opt(False, "Autocast to bf16 even when the checkpoint is float32 (as --dtype bfloat16).")
    save_dtype: str = opt("float32", save_dtype_help())
    gradient_checkpointing: bool = opt(False, "Trade compute for memory.")

    def validate(self) -> list[str]:
        warnings = super().validate()
        for name in ("model", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"sft needs '{name}'", hint="pass it as a flag or in the --config file")
        if bool(self.corrections) == bool(self.rationales):
            raise ConfigError("sft trains on exactly one dataset: give --corrections or --rationales",
                              hint="--corrections NAME (teacher corrections) or --rationales NAME (e.g. "
                                   "reference rationales for a warm start)")
        check_save_dtype(self.save_dtype)
        if self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("lr must be > 0, batch_size and grad_accum >= 1")
        if self.max_steps == 0 or self.epochs <= 0:
            raise ConfigError("nothing to train: max_steps is 0 or epochs <= 0", hint="drop --max-steps 0")
        if self.lora_r and self.lr < 1e-5:
            warnings.append(f"lr={self.lr} is very low for LoRA; adapters usually train at 1e-4..2e-4")
        if not self.lora_r and self.lr > 1e-3:
            warnings.append(f"lr={self.lr} is high for full fine-tuning; try 1e-5..5e-5 or use --lora-r")
        out = Path(self.output_dir)
        if not self.resume and any(out.glob("checkpoint-*")):
            warnings.append(f"{out} holds checkpoints of an earlier run that this run will overwrite; pass "
                            "--resume to continue it, or choose another -o")
        return warnings


@dataclass
class SFTData:
    records: list[dict[str, Any]]
    counts: dict[str, int]
    source: Version  # the corrections or rationales trained on
    problems: Version


# the text column of each dataset kind SFT trains on
TEXT_COLUMN = {"corrections": "corrected", "rationales": "text"}


def training_texts(source: Version, counts: dict[str, int]) -> Iterator[tuple[str, str, str]]:
    """(rationale_id, problem_id, completion text) of each usable row; failed and empty rows are counted."""
    column = TEXT_COLUMN[source.kind]
    ds = source.load()
    wanted = [c for c in ("rationale_id", "problem_id", "status", column) if c in ds.column_names]
    for row in ds.select_columns(wanted):
        if row.get("status", "ok") != "ok":  # rationales have no status: every row is a candidate
            counts["failed"] += 1
            continue
        text = (row[column] or "").strip()
        if not text:
            counts["empty"] += 1
            continue
        yield row["rationale_id"], row["problem_id"], text


def build_records(store: Store, source: Version, policy: Any) -> SFTData:
    """Training records from the usable rows of a corrections or rationales dataset (see the module doc)."""
    from .prompting import response_ids

    problems = store.parent_chain(source, "problems")
    pds = problems.load()
    if not policy.is_vlm and "image" in pds.column_names:
        pds = pds.remove_columns(["image"])
    by_id = {pid: i for i, pid in enumerate(pds.data.column("problem_id").to_pylist())}
    counts = {"used": 0, "failed": 0, "empty": 0}
    prompts: dict[str, list[int]] = {}
    records = []
    for rid, problem_id, text in training_texts(source, counts):
        if problem_id not in by_id:
            raise InputError(f"problem '{problem_id}' is not in {problems.ref}", file=source.ref, row=rid,
                             field="problem_id")
        problem = pds[by_id[problem_id]]
        if policy.is_vlm:
            records.append(vision_record(policy, problem, text))
        else:
            if problem_id not in prompts:
                prompts[problem_id] = prompt_ids(policy, problem)
            records.append(token_record(prompts[problem_id], response_ids(policy, text)))  # text + EOS
        counts["used"] += 1
    if not records:
        raise InputError(f"{source.ref} has nothing to train on ({counts['failed']} failed, "
                         f"{counts['empty']} empty rows)")
    return SFTData(records, counts, source, problems)


def prompt_ids(policy: Any, problem: dict[str, Any]) -> list[int]:
    """The prompt's token ids exactly as rollout and PPO encode them (no special tokens added)."""
    from .prompting import encode_prompts

    batch, _ = encode_prompts(policy, [problem])
    return [int(i) for i in batch["input_ids"][0]]


def token_record(prompt: list[int], completion: list[int]) -> dict[str, Any]:
    """A pre-tokenized SFTTrainer row; TRL builds labels from `completion_mask` (loss on the completion)."""
    return {"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}


def vision_record(policy: Any, problem: dict[str, Any], text: str) -> dict[str, Any]:
    """A prompt/completion row with the problem image; TRL's vision collator tokenizes it without special
    tokens (as rollout does)."""
    from .prompting import problem_image, render_prompt

    img = problem_image(problem)
    return {"prompt": render_prompt(policy, problem), "completion": text + policy.tokenizer.eos_token,
            "images": [img] if img is not None else []}


def precision(cfg: SFTConfig, policy: Any) -> dict[str, bool]:
    """TrainingArguments' autocast flags: the policy's half compute dtype (or bf16 when `cfg.bf16`)."""
    import torch

    compute = policy.compute_dtype if policy.compute_dtype is not None else (
        torch.bfloat16 if cfg.bf16 else None)
    return {"bf16": compute == torch.bfloat16, "fp16": compute == torch.float16}


def trl_args(cfg: SFTConfig, policy: Any) -> Any:
    from trl import SFTConfig as TRLSFTConfig

    return TRLSFTConfig(
        output_dir=cfg.output_dir, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_steps=cfg.max_steps, max_length=cfg.max_length,
        warmup_steps=int(cfg.warmup) if cfg.warmup >= 1 else cfg.warmup,
        weight_decay=cfg.weight_decay, seed=cfg.seed, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=[r.strip() for r in cfg.report_to.split(",") if r.strip()] or "none",
        **precision(cfg, policy), **padding_options(policy),
        activation_checkpointing=cfg.gradient_checkpointing, completion_only_loss=True,
        remove_unused_columns=False, disable_tqdm=True, use_cpu=not _cuda(), dataloader_pin_memory=False,
    )


def padding_options(policy: Any) -> dict[str, Any]:
    """Less padding for text models: padding-free batches (rows concatenated, position ids restarting) where
    the model attends through FlashAttention, which keeps the rows apart; batches of similar lengths
    otherwise (SDPA would let concatenated rows attend to each other). VLM rows are tokenized by the
    collator, so their lengths are unknown beforehand: no change."""
    if policy.is_vlm:
        return {}
    if str(getattr(policy.model.config, "_attn_implementation", "")).startswith("flash_attention"):
        return {"padding_free": True}
    return {"train_sampling_strategy": "group_by_length"}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _callbacks(cfg: SFTConfig, data: SFTData, base_fp: str, progress: Progress | None,
               extra: dict[str, Any]) -> list[Any]:
    from transformers import TrainerCallback

    class AresCallback(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                _manifest(folder, cfg, data, base_fp, {**extra, "global_step": state.global_step})

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps)

    return [AresCallback()]


def _manifest(folder: Path, cfg: SFTConfig, data: SFTData, base_fp: str, extra: dict[str, Any]) -> Path:
    return write_checkpoint_manifest(
        folder, "sft", cfg.model, [data.source, data.problems], cfg.to_dict(), base_fingerprint=base_fp,
        extra={"counts": data.counts, "lora": cfg.lora_r > 0, **extra})


def _dtype_name(dtype: Any) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None


def _save(trainer: Any, policy: Any, cfg: SFTConfig, out: Path) -> None:
    """The trained weights in `cfg.save_dtype`; float32 (the master weights) and adapters as the trainer
    writes them (gathered under FSDP/DeepSpeed), other dtypes through `checkpoint.save_model`."""
    if cfg.save_dtype == "float32" or policy.is_lora:
        trainer.save_model(str(out))
        return
    state = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.args.should_save:
        save_model(trainer.accelerator.unwrap_model(trainer.model), out, save_dtype=cfg.save_dtype,
                   stored_dtype=policy.stored_dtype, state_dict=state)


def run_sft(store: Store, cfg: SFTConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Train; returns a summary (output_dir, steps, losses, counts, weights fingerprint, merged path)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from .lora import quiet_peft, save_merged
    from .modeling import load_policy, weights_fingerprint

    disable_progress_bar()
    out = Path(cfg.output_dir)
    if cfg.resume and not any(out.glob("checkpoint-*")):
        raise ConfigError(f"--resume: no checkpoint-* folder in {out}", hint="run without --resume first")
    source = (store.resolve_kind(cfg.corrections, "corrections") if cfg.corrections
              else store.resolve_kind(cfg.rationales, "rationales"))
    source.verify_fingerprint()  # the checkpoint records its fingerprint: it must still hold
    base_fp = weights_fingerprint(cfg.model)
    policy = load_policy(cfg.model, lora=cfg.lora_options(), dtype=cfg.dtype, trainable=True)
    data = build_records(store, source, policy)
    args = trl_args(cfg, policy)
    precision_info = {"compute_dtype": "bfloat16" if args.bf16 else "float16" if args.fp16 else None,
                      "stored_dtype": _dtype_name(policy.stored_dtype)}
    trainer = SFTTrainer(model=policy.model, args=args, train_dataset=Dataset.from_list(data.records),
                         processing_class=policy.processing,
                         callbacks=_callbacks(cfg, data, base_fp, progress, precision_info))
    trainer.remove_callback(PrinterCallback)  # library code never prints; losses are in the summary/logs
    with quiet_peft():
        result = trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    _save(trainer, policy, cfg, out)
    policy.processing.save_pretrained(str(out))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    extra = {"global_step": trainer.state.global_step, "train_loss": result.training_loss, **precision_info}
    manifest = _manifest(out, cfg, data, base_fp, extra)
    summary: dict[str, Any] = {"output_dir": str(out), "steps": trainer.state.global_step,
                               "train_loss": result.training_loss, "losses": losses, "counts": data.counts,
                               "dataset": source.ref, "kind": source.kind, **precision_info,
                               "manifest": str(manifest), "weights_fingerprint": weights_fingerprint(out)}
    if cfg.merge and policy.is_lora:
        merged = save_merged(trainer.model, policy.processing, out / "merged")
        _manifest(merged, cfg, data, base_fp, {**extra, "merged_from": str(out)})
        summary["merged"] = str(merged)
    return summary
