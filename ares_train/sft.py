"""SFT on teacher corrections (the ARES correction stage) with TRL's `SFTTrainer`.

Each corrected rationale becomes a prompt/completion record: the prompt is `render_prompt` of the parent
problem (found through the corrections' parents), the completion the corrected text + EOS, and the loss
is on the completion only (`completion_only_loss`). VLMs get the problem image. Failed or empty
corrections are skipped and counted. The output folder holds the model (or, with LoRA, the adapter), its
processor/tokenizer, resumable `checkpoint-N` folders and `ares-checkpoint.json` (every checkpoint-N too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ares_data.errors import ConfigError, InputError
from ares_data.store import Store, Version

from .checkpoint import write_checkpoint_manifest
from .config import LoraFields, opt

Progress = Callable[[int, int], None]


@dataclass
class SFTConfig(LoraFields):
    model: str = opt("", "Model to fine-tune: model folder, hub id, or LoRA adapter folder (trains it on).")
    corrections: str = opt("", "Corrections dataset (NAME or NAME@vN).")
    output_dir: str = opt("", "Folder for the trained model, checkpoints and ares-checkpoint.json.")
    epochs: float = opt(1.0, "Passes over the corrections.")
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
    dtype: str = opt("auto", "Weights dtype: auto (as stored), float32, bfloat16, float16.")
    bf16: bool = opt(False, "Mixed precision bf16 (GPU).")
    gradient_checkpointing: bool = opt(False, "Trade compute for memory.")

    def validate(self) -> list[str]:
        warnings = super().validate()
        for name in ("model", "corrections", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"sft needs '{name}'", hint="pass it as a flag or in the --config file")
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
    corrections: Version
    problems: Version


def build_records(store: Store, corrections: Version, policy: Any) -> SFTData:
    """Prompt/completion (+ images for VLMs) records from the ok corrections."""
    from .prompting import problem_image, render_prompt

    problems = store.parent_chain(corrections, "problems")
    pds = problems.load()
    if not policy.is_vlm and "image" in pds.column_names:
        pds = pds.remove_columns(["image"])
    by_id = {pid: i for i, pid in enumerate(pds.data.column("problem_id").to_pylist())}
    counts = {"used": 0, "failed": 0, "empty": 0}
    records = []
    eos = policy.tokenizer.eos_token
    for row in corrections.load().remove_columns(["raw_response"]):
        if row.get("status") != "ok":
            counts["failed"] += 1
            continue
        text = (row.get("corrected") or "").strip()
        if not text:
            counts["empty"] += 1
            continue
        if row["problem_id"] not in by_id:
            raise InputError(f"problem '{row['problem_id']}' is not in {problems.ref}",
                             row=row["rationale_id"], field="problem_id")
        problem = pds[by_id[row["problem_id"]]]
        rec: dict[str, Any] = {"prompt": render_prompt(policy, problem), "completion": text + eos}
        if policy.is_vlm:
            img = problem_image(problem)
            rec["images"] = [img] if img is not None else []
        records.append(rec)
        counts["used"] += 1
    if not records:
        raise InputError(f"{corrections.ref} has no usable corrections ({counts['failed']} failed, "
                         f"{counts['empty']} empty)")
    return SFTData(records, counts, corrections, problems)


def trl_args(cfg: SFTConfig) -> Any:
    from trl import SFTConfig as TRLSFTConfig

    return TRLSFTConfig(
        output_dir=cfg.output_dir, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_steps=cfg.max_steps, max_length=cfg.max_length,
        warmup_steps=int(cfg.warmup) if cfg.warmup >= 1 else cfg.warmup,
        weight_decay=cfg.weight_decay, seed=cfg.seed, logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=[r.strip() for r in cfg.report_to.split(",") if r.strip()] or "none",
        bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing, completion_only_loss=True,
        remove_unused_columns=False, disable_tqdm=True, use_cpu=not _cuda(), dataloader_pin_memory=False,
    )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _callbacks(cfg: SFTConfig, data: SFTData, base_fp: str, progress: Progress | None) -> list[Any]:
    from transformers import TrainerCallback

    class AresCallback(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                _manifest(folder, cfg, data, base_fp, {"global_step": state.global_step})

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps)

    return [AresCallback()]


def _manifest(folder: Path, cfg: SFTConfig, data: SFTData, base_fp: str, extra: dict[str, Any]) -> Path:
    return write_checkpoint_manifest(
        folder, "sft", cfg.model, [data.corrections, data.problems], cfg.to_dict(), base_fingerprint=base_fp,
        extra={"counts": data.counts, "lora": cfg.lora_r > 0, **extra})


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
    corrections = store.resolve_kind(cfg.corrections, "corrections")
    base_fp = weights_fingerprint(cfg.model)
    policy = load_policy(cfg.model, lora=cfg.lora_options(), dtype=cfg.dtype, trainable=True)
    data = build_records(store, corrections, policy)
    dataset = Dataset.from_list(data.records)
    trainer = SFTTrainer(model=policy.model, args=trl_args(cfg), train_dataset=dataset,
                         processing_class=policy.processing,
                         callbacks=_callbacks(cfg, data, base_fp, progress))
    trainer.remove_callback(PrinterCallback)  # library code never prints; losses are in the summary/logs
    with quiet_peft():
        result = trainer.train(resume_from_checkpoint=True if cfg.resume else None)
    trainer.save_model(str(out))
    policy.processing.save_pretrained(str(out))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    extra = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    manifest = _manifest(out, cfg, data, base_fp, extra)
    summary: dict[str, Any] = {"output_dir": str(out), "steps": trainer.state.global_step,
                               "train_loss": result.training_loss, "losses": losses, "counts": data.counts,
                               "manifest": str(manifest), "weights_fingerprint": weights_fingerprint(out)}
    if cfg.merge and policy.is_lora:
        merged = save_merged(trainer.model, policy.processing, out / "merged")
        _manifest(merged, cfg, data, base_fp, {**extra, "merged_from": str(out)})
        summary["merged"] = str(merged)
    return summary
