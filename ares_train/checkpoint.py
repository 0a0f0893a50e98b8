"""The manifest every checkpoint folder carries: `ares-checkpoint.json`.

It names the stage, the base model and its weights fingerprint, the datasets trained on (`name@version` +
fingerprint), the parameters, and the fingerprint of the resulting weights (the adapter's, with LoRA), so a
checkpoint can be traced back to what made it and rollouts can be matched to it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from ares_data.redact import redact_argv

from . import __version__

MANIFEST = "ares-checkpoint.json"


def write_checkpoint_manifest(
    outdir: str | Path,
    stage: str,
    base_model: str,
    datasets: list[Any],
    params: dict[str, Any],
    *,
    base_fingerprint: str | None = None,
    weights_fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
    command: list[str] | None = None,
) -> Path:
    """Write `outdir/ares-checkpoint.json`; fingerprints are computed from the folders when not given."""
    import sys

    from .modeling import weights_fingerprint as fingerprint

    out = Path(outdir)
    local = Path(base_model).expanduser()
    manifest = {
        "stage": stage,
        "base_model": str(local.resolve()) if local.exists() else str(base_model),  # hub ids as given
        "base_fingerprint": base_fingerprint or fingerprint(base_model),
        "datasets": [v.as_parent() for v in datasets],
        "params": params,
        "weights_fingerprint": weights_fingerprint or fingerprint(out),
        "command": redact_argv(command if command is not None else sys.argv),
        "tool_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path = out / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_checkpoint_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest of a checkpoint folder, or None when it has none."""
    f = Path(path) / MANIFEST
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


SAVE_DTYPES = ("float32", "original", "bfloat16", "float16")


def save_dtype_help() -> str:
    return ("dtype of the written weights: float32 (default: keeps every update for the next round), "
            "original (the dtype the starting checkpoint was stored in, e.g. bf16 for export), bfloat16, "
            "float16. LoRA adapters are always written in float32.")


def check_save_dtype(name: str) -> None:
    from ares_data.errors import ConfigError

    if name not in SAVE_DTYPES:
        raise ConfigError(f"save_dtype must be one of {', '.join(SAVE_DTYPES)}, got {name!r}")


def save_model(
    model: Any,
    outdir: str | Path,
    *,
    save_dtype: str = "float32",
    stored_dtype: Any = None,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write `model` (full weights, or a peft adapter) to `outdir` in `save_dtype` (see SAVE_DTYPES).

    `state_dict`: the full (gathered) state dict when the model is sharded (FSDP/DeepSpeed ZeRO-3, from
    `accelerator.get_state_dict`); its tensors are what gets written.
    """
    import torch

    from .lora import is_peft_model

    check_save_dtype(save_dtype)
    if is_peft_model(model):
        model.save_pretrained(outdir, state_dict=state_dict)
        return
    target = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
              "original": stored_dtype or torch.float32}[save_dtype]
    tensors = state_dict if state_dict is not None else model.state_dict()
    cast = {k: (v.to(target) if v.is_floating_point() else v) for k, v in tensors.items()}
    model.save_pretrained(outdir, state_dict=cast)
    config = Path(outdir) / "config.json"  # save_pretrained writes the in-memory model's dtype there
    data = json.loads(config.read_text(encoding="utf-8"))
    data["dtype"] = str(target).removeprefix("torch.")
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
