"""Accelerate config files for multi-GPU training, shipped with the package.

    accelerate launch --config_file "$(python -m ares_train.configs deepspeed_zero2)" \
        -m ares_train.cli sft --model ... --corrections ... -o OUTDIR

- `deepspeed_zero2.yaml`: DeepSpeed ZeRO-2 (optimizer states and gradients sharded; bf16).
- `deepspeed_zero3.yaml`: DeepSpeed ZeRO-3 (parameters sharded too; the final model is gathered to 16 bit).
- `fsdp.yaml`: PyTorch FSDP full sharding, wrapping each transformer block.

`num_processes` is 8 (one node, 8 GPUs): override with `accelerate launch --num_processes N`.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).parent
NAMES = ("deepspeed_zero2", "deepspeed_zero3", "fsdp")


def config_path(name: str) -> Path:
    """Path of a shipped accelerate config ('deepspeed_zero2', 'deepspeed_zero3' or 'fsdp')."""
    path = CONFIG_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no accelerate config '{name}' (shipped: {', '.join(NAMES)})")
    return path
