"""LoRA through peft: wrap a model from `LoraOptions`, save the adapter, optionally a merged copy."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import LoraOptions

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def peft_config(options: LoraOptions, *, is_vlm: bool = False) -> Any:
    from peft import LoraConfig

    targets = options.targets()
    if is_vlm and targets == "all-linear":
        # adapt the language model only: the vision tower and projector stay frozen, as in LLaVA fine-tuning
        targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    return LoraConfig(r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers a deprecated question (`is_gradient_checkpointing`); nothing for users to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def apply_lora(model: Any, options: LoraOptions, *, is_vlm: bool = False) -> Any:
    """`model` wrapped as a trainable PeftModel (only the adapter weights require grad)."""
    from peft import get_peft_model

    with quiet_peft():
        return get_peft_model(model, peft_config(options, is_vlm=is_vlm))


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is in the train extra
        return False
    return isinstance(model, PeftModel)


def save_merged(model: Any, processing: Any, out_dir: str | Path) -> Path:
    """Merge the adapter of a PeftModel into a copy of its base weights and save a plain model folder."""
    import copy

    out = Path(out_dir)
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(out)
    processing.save_pretrained(out)
    return out
