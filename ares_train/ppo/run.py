"""`ares-train ppo` as a library call: `run_ppo(PPORunConfig(...))`.

Loads the policy (float32 master weights with autocast to its stored half dtype, or a new LoRA adapter), the
value model, the frozen reference, builds the rollouts from the rationales + scores datasets, trains with
`ares_train.ppo.trainer.SentencePPOTrainer` and writes the policy (or adapter), the value model
(OUTDIR/value) and `ares-checkpoint.json` to OUTDIR. A run interrupted after some PPO epochs resumes from
OUTDIR/checkpoint when started again.

The reference (`ref_model`) is what the KL term keeps the policy near. ARES pins it to the model the whole
run started from (the SFT / warm-start policy) in every round, as the paper's released code does:
`ares-train loop` passes its starting model. Left out, it is the initial policy of this call (with LoRA the
adapter-disabled policy when that is the same model, so no second copy is loaded). Which reference was used
is in the result, the manifest and the CLI output.

The value model starts from `value_model`: a folder written by an earlier run (OUTDIR/value: the loop
carries the critic from round to round this way), or any model folder (its backbone + a new zero head),
else the policy. Defaults and where each comes from: `ares-train ppo --help` and the README ("PPO
defaults"); "paper" means the authors' released code (run_mm_cot_rl.py), "TRL" TRL's PPOConfig.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ares_data.errors import ConfigError, InputError
from ares_data.store import Store

from ..checkpoint import MANIFEST, check_save_dtype, save_dtype_help
from ..config import LoraFields, opt, params_json
from .rewards import NEUTRAL_SCORE, REWARD_LEVELS, REWARD_NORMALIZATIONS

LOG_FILE = "ppo_log.jsonl"
VALUE_DIR = "value"
VALUE_HEAD = "value_head.safetensors"  # beside the backbone's model files in a saved value model


@dataclass
class PPORunConfig(LoraFields):
    """PPO with sentence-level rewards (the ARES RL stage). Each default says where it comes from."""

    model: str = opt("", "The policy to train: a model folder, hub id, or LoRA adapter folder.")
    rationales: str = opt("", "Rationales dataset NAME[@vN] (rollouts of --model, with token ids).")
    scores: str = opt("", "Scores dataset NAME[@vN] (teacher sentence scores of those rationales).")
    output_dir: str = opt("", "Checkpoint folder to write (policy or adapter + ares-checkpoint.json).")
    ref_model: str | None = opt(
        None,
        "Frozen reference of the KL term: the model the ARES run started from (`loop` passes its starting "
        "model every round, as the paper does). Left out: the initial policy of this call (with LoRA the "
        "adapter-disabled policy, no second copy).",
    )
    value_model: str | None = opt(
        None,
        "Value model to start from: OUTDIR/value of an earlier ppo run (the critic carried across rounds; "
        "`loop` does this), or a model folder (its backbone + a new head). Left out: the policy.",
    )
    kl_coef: float = opt(0.05, "Weight of the per-token KL penalty in the reward (paper: 0.05, fixed).")
    kl_estimator: str = opt("k1", "KL estimator in the reward: k1 (log-ratio; paper) or k3 (lower variance).")
    neutral_score: float = opt(
        NEUTRAL_SCORE, "Sentence score that earns zero reward: reward = score - this (paper: 0.5)."
    )
    reward_level: str = opt(
        "sentence",
        "Where rewards land: sentence (each sentence's reward on its last token; ARES) or sequence (the "
        "rationale's total on its last token: the ablation that shows what sentence-level credit buys).",
    )
    reward_normalization: str = opt(
        "sum",
        "sum: every sentence earns score - neutral (paper); mean: divided by the number of sentences, so "
        "writing more sentences cannot raise the total.",
    )
    gamma: float = opt(1.0, "Discount factor (paper: 1.0; its released code's default is 0.99).")
    lam: float = opt(0.95, "GAE lambda (paper: 0.95).")
    cliprange: float = opt(0.2, "Policy ratio clip range (paper: 0.2).")
    cliprange_value: float = opt(
        0.0,
        "Clip value predictions to the buffer's values +- this (PPO2-style); 0 = no clipping (paper: none). "
        "Returns here are sums of sentence rewards (often beyond +-1): a small clip stalls the critic.",
    )
    vf_coef: float = opt(1.0, "Weight of the value loss (paper: 1.0; the critic's gradients are clipped "
                         "separately from the policy's).")
    ppo_epochs: int = opt(3, "PPO epochs over each buffer (paper: 3).")
    mini_batch_size: int = opt(24, "Rollouts per optimizer step, per process (paper: 6 x 4 accumulation).")
    micro_batch_size: int = opt(
        0, "Rollouts per forward/backward pass (gradient accumulation up to the mini-batch); 0 = automatic: "
        "the largest that fits, found by halving on out-of-memory.",
    )
    buffer_size: int = opt(0, "Rollouts per buffer (per process); 0 = all of them in one buffer.")
    forward_batch_size: int = opt(
        16, "Rollouts per no-grad pass (log-probs before the update, the critic's estimates); halved on "
        "out-of-memory."
    )
    lr: float = opt(1e-5, "Learning rate (AdamW) of the policy and the value model (paper: 1e-5).")
    lr_scheduler: str = opt(
        "constant",
        "LR schedule within this call: constant (paper), linear, cosine, ... (a decaying schedule restarts "
        "every round of a loop).",
    )
    optim: str = opt(
        "auto",
        "Optimizer (transformers names): auto = adamw_torch_fused on GPU, adamw_torch on "
        "CPU (the fused CPU kernel pays ~1 s of set-up per optimizer).",
    )
    max_grad_norm: float = opt(1.0, "Gradient clipping norm, policy and value each (TRL: 1.0; the paper "
                               "clips nothing); 0 disables.")
    seed: int = opt(0, "Random seed (mini-batch order, value head init).")
    dtype: str = opt(
        "auto",
        "Compute dtype: auto (as the checkpoint is stored), float32, bfloat16, float16. Trained weights are "
        "float32 masters with autocast to a half dtype.",
    )
    save_dtype: str = opt("float32", save_dtype_help())
    gradient_checkpointing: bool = opt(
        False, "Recompute activations in the backward passes of every trained model (the policy, and ppo's "
        "critic): less memory, ~1/3 more compute."
    )
    allow_off_policy: bool = opt(
        False,
        "Train anyway on rationales that PPO's ratio does not model: generated by other weights than "
        "--model, from another prompt, sampled otherwise than softmax(logits / T) (truncation, penalties, "
        "greedy, mixed temperatures), or by an older rollout that recorded no sampling parameters. Counted.",
    )
    report_to: str = opt("none", "Trainer loggers, comma-separated: none, tensorboard, wandb, ...")
    save_checkpoints: bool = opt(
        True, "Save a resumable checkpoint after every PPO epoch (OUTDIR/checkpoint)."
    )

    def validate(self) -> list[str]:
        warnings = super().validate()
        for name in ("model", "rationales", "scores", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(
                    f"missing setting '{name}'", hint="give it as a flag or in the --config file"
                )
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.reward_level not in REWARD_LEVELS:
            raise ConfigError(f"reward_level must be one of {', '.join(REWARD_LEVELS)}, "
                              f"got {self.reward_level!r}")
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            raise ConfigError(f"reward_normalization must be one of {', '.join(REWARD_NORMALIZATIONS)}, "
                              f"got {self.reward_normalization!r}")
        if self.cliprange_value < 0:
            raise ConfigError(f"cliprange_value must be >= 0 (0 = no value clipping), "
                              f"got {self.cliprange_value}")
        check_save_dtype(self.save_dtype)
        for name in ("ppo_epochs", "mini_batch_size", "forward_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.micro_batch_size and self.mini_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"mini_batch_size {self.mini_batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}"
            )
        if self.kl_coef == 0:
            warnings.append(
                "kl_coef = 0: nothing keeps the policy near the reference; the paper uses a KL term"
            )
        if self.lora_r and self.ref_model:
            warnings.append(
                "--ref-model with LoRA loads a second model; leave it out to use the "
                "adapter-disabled policy as the reference"
            )
        return warnings


@dataclass
class PPOResult:
    output_dir: Path
    history: list[dict[str, float]]
    counts: dict[str, int]
    resumed: bool
    manifest: Path
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the KL term was taken against
    value_start: str = ""  # what the value model started from


@dataclass(frozen=True)
class RLMethod:
    """What an RL method sharing this run code sets: PPO (`ppo_method`) or GRPO (`ppo.grpo_run`)."""

    stage: str  # the manifest's stage; the log is OUTDIR/<stage>_log.jsonl
    settings: Any  # the user's config: written to the manifest, and the key a resumed checkpoint must match
    make_trainer: Callable[..., Any]  # (cfg, outdir, policy, data, collate_fn, on_step) -> trainer
    critic: bool = True  # a value model is trained and written to OUTDIR/value

    @property
    def log_file(self) -> str:
        return f"{self.stage}_log.jsonl"


def ppo_method(cfg: PPORunConfig) -> RLMethod:
    return RLMethod("ppo", cfg, _make_trainer)


def _same_model(a: str, b: str) -> bool:
    def norm(x: str) -> str:
        path = Path(x).expanduser()
        return str(path.resolve()) if path.exists() else x

    return norm(a) == norm(b)


@dataclass
class Reference:
    """The frozen reference: a loaded module, or None for TRL's own (adapter-disabled policy or frozen copy
    of the initial policy), and how it was obtained."""

    module: Any
    model: str
    how: str
    initial_policy: bool = False  # the policy's own starting weights: its log-probs are the old log-probs

    def describe(self) -> dict[str, Any]:
        from ..modeling import weights_fingerprint

        return {"model": self.model, "how": self.how, "fingerprint": weights_fingerprint(self.model)}


def resolve_reference(cfg: PPORunConfig, policy: Any) -> Reference:
    """The KL reference (see the module doc); loads a second model only when no copy can stand in."""
    from ..modeling import load_policy

    ref = cfg.ref_model or cfg.model
    fresh_adapter = cfg.lora_options() is not None and policy.path == policy.base_path
    if _same_model(ref, cfg.model) and policy.path == policy.base_path:
        how = "adapter-disabled policy" if fresh_adapter else "frozen copy of the initial policy"
        return Reference(None, ref, how, initial_policy=True)
    if policy.is_lora and _same_model(ref, policy.base_path):  # the adapter's base is the reference
        return Reference(None, ref, "adapter-disabled policy")
    return Reference(load_policy(ref, dtype=cfg.dtype).model, ref, "loaded")


def _value_model(cfg: PPORunConfig, policy: Any) -> Any:
    import torch

    from ..lora import peft_config
    from .value import ValueModel

    src = cfg.value_model or cfg.model
    torch.manual_seed(cfg.seed)
    full = cfg.lora_options() is None
    if (Path(src) / VALUE_HEAD).is_file():  # a critic an earlier run wrote (OUTDIR/value)
        value = ValueModel.load(src, dtype=torch.float32 if full else policy.stored_dtype)
    else:
        from ..modeling import load_policy

        lm = load_policy(src, dtype=cfg.dtype).model
        if hasattr(lm, "merge_and_unload"):  # an adapter: the value model starts from the merged policy
            lm = lm.merge_and_unload()
        value = ValueModel.from_causal_lm(lm.float() if full else lm)  # float32 masters when fully trained
        value.score.to(dtype=next(value.backbone.parameters()).dtype)
    if not full:  # train the value backbone through its own adapter too: no full optimizer state
        from peft import get_peft_model

        lora = dataclasses.replace(peft_config(cfg.lora_options(), is_vlm=policy.is_vlm), task_type=None)
        value.backbone = get_peft_model(value.backbone, lora)
    if cfg.gradient_checkpointing:
        value.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    value.train()
    return value


def resolve_optim(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch"


def ppo_config(cfg: PPORunConfig, outdir: Path) -> Any:
    import torch

    from .trl_base import PPOConfig

    return PPOConfig(
        output_dir=str(outdir),
        learning_rate=cfg.lr,
        optim=resolve_optim(cfg.optim),
        use_cpu=not torch.cuda.is_available(),  # also makes CPU processes under torchrun one gloo DDP group
        lr_scheduler_type=cfg.lr_scheduler,
        per_device_train_batch_size=cfg.micro_batch_size or cfg.mini_batch_size,
        num_ppo_epochs=cfg.ppo_epochs,
        kl_coef=cfg.kl_coef,
        kl_estimator=cfg.kl_estimator,
        cliprange=cfg.cliprange,
        cliprange_value=cfg.cliprange_value,
        vf_coef=cfg.vf_coef,
        gamma=cfg.gamma,
        lam=cfg.lam,
        seed=cfg.seed,
        report_to=[r.strip() for r in cfg.report_to.split(",") if r.strip()],
        bf16=False,
        fp16=False,
        max_grad_norm=cfg.max_grad_norm,
        num_sample_generations=0,
        save_strategy="steps" if cfg.save_checkpoints else "no",
        gradient_checkpointing=False,
        logging_steps=1,
        disable_tqdm=True,
    )


def build_trainer(
    cfg: PPORunConfig,
    store: Store | None = None,
    on_step: Callable[[int, int], None] | None = None,
    method: RLMethod | None = None,
) -> tuple[Any, Any, Any, list[Any]]:
    """Load models + rollouts and set up the trainer -> (trainer, policy, rollouts, [rationales, scores])."""
    from ..deps import require_train_extra

    require_train_extra()
    cfg.validate()
    from ..modeling import load_policy, weights_fingerprint
    from .data import collate, load_rollouts

    store = store or Store()
    rationales = store.resolve_kind(cfg.rationales, "rationales")
    scores = store.resolve_kind(cfg.scores, "scores")
    for version in (rationales, scores):  # the checkpoint records these fingerprints: they must still hold
        version.verify_fingerprint()
    outdir = Path(cfg.output_dir)
    policy = load_policy(cfg.model, lora=cfg.lora_options(), dtype=cfg.dtype, trainable=True)
    data = load_rollouts(
        store,
        rationales,
        scores,
        policy,
        neutral_score=cfg.neutral_score,
        model_fingerprint=weights_fingerprint(cfg.model),
        allow_off_policy=cfg.allow_off_policy,
        reward_level=cfg.reward_level,
        reward_normalization=cfg.reward_normalization,
    )
    if not data.rollouts:
        raise InputError(
            f"no usable rollouts in {rationales.ref} with {scores.ref} (counts: {dict(data.counts)})",
            hint="check that the scores belong to these rationales and did not all fail",
        )
    if cfg.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    outdir.mkdir(parents=True, exist_ok=True)
    pad_id = policy.tokenizer.pad_token_id

    def collate_fn(rows: list[Any], device: Any) -> Any:
        return collate(rows, device, pad_id, position_ids=not policy.is_vlm)

    with warnings.catch_warnings():  # TRL/transformers' own deprecation notices on gradient checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        trainer = (method or ppo_method(cfg)).make_trainer(cfg, outdir, policy, data, collate_fn, on_step)
    if trainer.left_out:  # rollouts beyond a multiple of the process count are not trained on
        data.counts["used"] -= trainer.left_out
        data.counts["uneven_remainder"] = trainer.left_out
    return trainer, policy, data, [rationales, scores]


def _make_trainer(
    cfg: PPORunConfig, outdir: Path, policy: Any, data: Any, collate_fn: Any, on_step: Any
) -> Any:
    from .trainer import SentencePPOTrainer

    return make_rl_trainer(SentencePPOTrainer, cfg, outdir, policy, data, collate_fn, on_step,
                           log_file=LOG_FILE, value_model=_value_model(cfg, policy))


def make_rl_trainer(
    cls: type, cfg: PPORunConfig, outdir: Path, policy: Any, data: Any, collate_fn: Any, on_step: Any, *,
    log_file: str, **extra: Any,
) -> Any:
    """`cls` (SentencePPOTrainer or a subclass) over `data.rollouts`, with the reference resolved."""
    reference = resolve_reference(cfg, policy)
    trainer = cls(
        ppo_config(cfg, outdir),
        model=policy.model,
        processing_class=policy.processing,
        ref_model=reference.module,
        rollouts=data.rollouts,
        collate=collate_fn,
        temperature=data.temperature,
        buffer_size=cfg.buffer_size,
        forward_batch_size=cfg.forward_batch_size,
        mini_batch_size=cfg.mini_batch_size,
        log_path=outdir / log_file,
        on_step=on_step,
        compute_dtype=policy.compute_dtype,
        micro_batch_size=cfg.micro_batch_size,
        **extra,
    )
    trainer.reference = reference
    return trainer


def run_ppo(
    cfg: PPORunConfig, store: Store | None = None, on_step: Callable[[int, int], None] | None = None
) -> PPOResult:
    """Train and save; see the module doc. `on_step(step, total)` reports optimizer steps."""
    return run_rl(cfg, ppo_method(cfg), store, on_step)


def run_rl(
    cfg: PPORunConfig,
    method: RLMethod,
    store: Store | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> PPOResult:
    """Train with `method` on the settings `cfg` and save (a resumed run must have the same settings)."""
    trainer, policy, data, datasets = build_trainer(cfg, store, on_step, method)
    eos = trainer.eos_token_id
    outdir = Path(cfg.output_dir)
    resume = outdir / "checkpoint"
    resumed = (resume / "progress.json").is_file()
    trainer.run_key = params_json(method.settings, drop=("output_dir", "report_to", "allow_off_policy"))
    if resumed and json.loads((resume / "progress.json").read_text()).get("run_key") != trainer.run_key:
        raise ConfigError(
            f"{resume} holds a checkpoint of a {method.stage.upper()} run with other settings",
            hint="use another -o OUTDIR, or delete that checkpoint folder to start over",
        )
    if not resumed:  # a fresh run: an earlier run's log and manifests no longer describe OUTDIR
        for stale in (outdir / method.log_file, outdir / MANIFEST, outdir / "merged" / MANIFEST):
            stale.unlink(missing_ok=True)
    history = trainer.train(resume_from=resume if resumed else None)
    reference = trainer.reference.describe()
    value_start = str(cfg.value_model or cfg.model) if method.critic else ""
    extra = {"counts": dict(data.counts), "final_metrics": history[-1] if history else {},
             "reference": reference}
    if method.critic:
        extra["value_model"] = {"started_from": value_start, "saved": VALUE_DIR}
    manifest = _save(cfg, trainer, policy, eos, outdir, datasets, extra, method)
    return PPOResult(outdir, history, dict(data.counts), resumed, manifest, reference, value_start)


def _save(
    cfg: PPORunConfig,
    trainer: Any,
    policy: Any,
    eos: Any,
    outdir: Path,
    datasets: list[Any],
    extra: dict[str, Any],
    method: RLMethod,
) -> Path:
    """Write the policy (in `save_dtype`), the value model (OUTDIR/value, float32; methods with a critic)
    and the manifest.

    Under FSDP / DeepSpeed the full state dict is gathered first (every process takes part), so sharded
    parameters are written whole; one process writes."""
    from accelerate.utils import DistributedType

    from ..checkpoint import save_model, write_checkpoint_manifest
    from ..lora import save_merged

    acc = trainer.accelerator
    acc.wait_for_everyone()
    model = trainer.unwrapped_policy()
    model.generation_config.eos_token_id = eos  # TRL's PPOTrainer resets it when no stop token is set
    full = None
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        full = acc.get_state_dict(trainer.model)  # collective: gathers the sharded weights
    manifest = outdir / MANIFEST
    if acc.is_main_process:  # one writer under `accelerate launch`
        save_model(model, outdir, save_dtype=cfg.save_dtype, stored_dtype=policy.stored_dtype,
                   state_dict=_part(full, "policy."))
        policy.processing.save_pretrained(outdir)
        if method.critic:
            value = acc.unwrap_model(trainer.model).value_model
            value.save(outdir / VALUE_DIR, state_dict=_part(full, "value_model."))
        params = {k: v for k, v in method.settings.to_dict().items() if k not in ("output_dir",)}
        manifest = write_checkpoint_manifest(outdir, method.stage, cfg.model, datasets, params, extra=extra)
        if cfg.merge and policy.is_lora:
            merged = save_merged(model, policy.processing, outdir / "merged")
            write_checkpoint_manifest(merged, method.stage, cfg.model, datasets, params,
                                      extra={**extra, "merged_from": str(outdir)})
        for name in ("checkpoint", "checkpoint.tmp", "checkpoint.old"):
            shutil.rmtree(outdir / name, ignore_errors=True)
    acc.wait_for_everyone()
    return manifest


def _part(state: dict[str, Any] | None, prefix: str) -> dict[str, Any] | None:
    """The entries of a gathered wrapper state dict under `prefix`, with the prefix removed."""
    if state is None:
        return None
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def read_log(outdir: str | Path, stage: str = "ppo") -> list[dict[str, Any]]:
    """The JSONL training log of a PPO (or GRPO: `stage="grpo"`) run, one line per epoch over a buffer."""
    path = Path(outdir) / f"{stage}_log.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )
