"""Loading policies (text LMs, VLMs, LoRA adapters) and fingerprinting their weights.

`load_policy(path)` accepts a model folder or hub id, or a folder holding a peft adapter (its base is read
from `adapter_config.json`). VLMs (configs with a `vision_config`) load with `AutoModelForImageTextToText`
and their `AutoProcessor`; text models with `AutoModelForCausalLM` and `AutoTokenizer`.

Mixed precision: a policy loaded for training (`trainable=True`) keeps float32 master weights for everything
it trains (all weights in full fine-tuning; the adapter with LoRA, whose frozen base stays in its stored or
requested dtype) and records `compute_dtype`, the half precision to autocast the forward passes to (the
checkpoint's stored dtype with `dtype="auto"`, or the requested one); `autocast(policy)` gives that context.
Stepping bf16 weights directly rounds most small updates away (measured: 32 PPO steps at lr 1e-5 changed 5.5%
of a bf16 model's weights, 41% in float32). `save_dtype` (see `ares_train.checkpoint.save_model`) decides what
is written: float32 by default, so a later round does not lose the update to rounding either.

`weights_fingerprint(model_or_path)` is the `generator_fingerprint` of rollouts and the weights fingerprint
of checkpoint manifests. It hashes tensor contents (dtype, shape, bytes), ignoring parameter names and
counting tied tensors once, so a model folder and the model loaded from it (in its stored dtype) give the
same value. For a LoRA policy it is the hash of the adapter tensors together with the base fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ares_data.errors import DependencyError, InputError, NotFoundError

from .config import LoraOptions
from .lora import apply_lora, is_adapter_dir, is_peft_model, quiet_peft

_FP_CACHE: dict[tuple[str, float, int], str] = {}


@dataclass
class Policy:
    model: Any
    tokenizer: Any  # the text tokenizer (the processor's tokenizer for a VLM)
    processor: Any | None  # AutoProcessor for VLMs, None for text models
    is_vlm: bool
    path: str  # what it was loaded from (model folder, hub id, or adapter folder)
    base_path: str  # the base model (== path unless `path` is an adapter)
    stored_dtype: Any = None  # the dtype the checkpoint was saved in (torch.dtype; None when unknown)
    compute_dtype: Any = None  # half dtype to autocast forward passes to; None computes in the weights' dtype

    @property
    def processing(self) -> Any:
        """What to save next to the weights and give to TRL as `processing_class`."""
        return self.processor if self.processor is not None else self.tokenizer

    @property
    def is_lora(self) -> bool:
        return is_peft_model(self.model)


DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def _dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise InputError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16") from None


def stored_dtype(config: Any) -> Any:
    """The torch dtype a checkpoint's config says its weights were saved in (None when it does not say)."""
    import torch

    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def _precision(requested: Any, stored: Any, full_training: bool) -> tuple[Any, Any]:
    """-> (dtype to load the weights in, dtype to autocast to or None)."""
    import torch

    want = stored if requested == "auto" else requested
    half = want if want in (torch.bfloat16, torch.float16) else None
    if full_training:  # float32 master weights, the compute autocast to the half dtype
        return torch.float32, half
    return (want or "auto"), half


def autocast(policy_or_dtype: Any, device: Any = None) -> Any:
    """`torch.autocast` to the policy's compute dtype on its device (a no-op context without one)."""
    import contextlib

    import torch

    dtype = getattr(policy_or_dtype, "compute_dtype", policy_or_dtype)
    if dtype is None:
        return contextlib.nullcontext()
    if device is None and hasattr(policy_or_dtype, "model"):
        device = next(policy_or_dtype.model.parameters()).device
    kind = torch.device(device).type if device is not None else "cpu"
    return torch.autocast(device_type=kind, dtype=dtype)


def is_vlm_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def load_policy(
    path: str | Path,
    *,
    lora: LoraOptions | None = None,
    dtype: str = "auto",
    trainable: bool = False,
    device: str | None = None,
) -> Policy:
    """Load a model + its tokenizer/processor; wrap with a new LoRA adapter when `lora` is given.

    An adapter folder loads its base and the adapter (trainable when `trainable`); giving `lora` too then
    keeps training that adapter (the options are ignored). With `trainable` and no adapter, the weights load
    in float32 and `compute_dtype` is the half dtype to autocast to (see the module doc).
    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code draws nothing; the CLI renders its own progress
    path = str(path)
    if path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
        raise NotFoundError(f"model folder {path} not found",
                            hint="pass a model folder or a hub id (org/name)")
    adapter = is_adapter_dir(path)
    base = _adapter_base(path) if adapter else path
    try:
        config = AutoConfig.from_pretrained(base)
    except OSError as e:
        raise NotFoundError(f"cannot load model '{base}': {e}") from None
    vlm = is_vlm_config(config)
    cls = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
    processor = _load_processor(AutoProcessor, base) if vlm else None  # before the weights: fails fast
    stored = stored_dtype(config)
    full_training = trainable and lora is None and not adapter
    load_dtype, compute = _precision(_dtype(dtype), stored, full_training)
    model = _from_pretrained(cls, base, load_dtype, half=compute is not None or _is_half(load_dtype))
    tokenizer = processor.tokenizer if vlm else AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter:
        from peft import PeftModel

        with quiet_peft():
            model = PeftModel.from_pretrained(model, path, is_trainable=trainable or lora is not None)
    elif lora is not None:
        model = apply_lora(model, lora, is_vlm=vlm)
    if device:
        model.to(device)
    if not (trainable or lora is not None):
        model.eval()
    return Policy(model, tokenizer, processor, vlm, path, base, stored, compute)


def _is_half(dtype: Any) -> bool:
    import torch

    return dtype in (torch.bfloat16, torch.float16)


def _from_pretrained(cls: Any, base: str, dtype: Any, *, half: bool) -> Any:
    """The weights with PyTorch's SDPA attention, or FlashAttention 2 for half-precision compute on CUDA
    where `flash_attn` is installed; a model that supports neither loads with its default attention."""
    import importlib.util

    import torch

    flash = half and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    attention = "flash_attention_2" if flash else "sdpa"
    try:
        return cls.from_pretrained(base, dtype=dtype, attn_implementation=attention)
    except (ValueError, ImportError):  # this architecture has no such attention implementation
        return cls.from_pretrained(base, dtype=dtype)


def _load_processor(auto_processor: Any, base: str) -> Any:
    try:
        return auto_processor.from_pretrained(base)
    except ImportError as e:  # e.g. Qwen2-VL's processor builds a video processor that needs torchvision
        reason = " ".join(str(e).split()).split(". ")[0]
        hint = "pip install torchvision (Qwen2-VL / Qwen2.5-VL processors need it)"
        raise DependencyError(f"cannot load the processor of '{base}': {reason}", hint=hint) from None


def _adapter_base(path: str) -> str:
    cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise InputError("adapter_config.json names no base_model_name_or_path", file=path)
    return base


def _tensor_digest(t: Any) -> str:
    import torch

    t = t.detach().cpu().contiguous()
    raw = t.view(torch.uint8) if t.dtype != torch.bool and t.numel() else t
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(raw.numpy().tobytes())
    return h.hexdigest()


def _combine(digests: list[str], salt: str = "") -> str:
    return hashlib.sha256((salt + "\n".join(sorted(digests))).encode()).hexdigest()[:32]


def _module_fingerprint(model: Any) -> str:
    if is_peft_model(model):
        from peft import get_peft_model_state_dict

        adapter = get_peft_model_state_dict(model)
        adapter_ids = {id(t) for t in adapter.values()}
        base_tensors = [t for n, t in model.state_dict().items()
                        if "lora_" not in n and id(t) not in adapter_ids]
        base_fp = _combine(_dedup_digests(base_tensors))
        return _combine([_tensor_digest(t) for t in adapter.values()], salt=f"adapter|{base_fp}|")
    return _combine(_dedup_digests(list(model.state_dict().values())))


def _dedup_digests(tensors: list[Any]) -> list[str]:
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = []
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:  # tied weights (e.g. embeddings and lm_head) count once, as in the saved files
            continue
        seen.add(key)
        out.append(_tensor_digest(t))
    return out


def _files_fingerprint(files: list[Path], salt: str = "") -> str:
    from safetensors import safe_open

    digests = []
    for f in files:
        with safe_open(str(f), framework="pt") as st:  # one tensor at a time: shards are never held whole
            digests += [_tensor_digest(st.get_tensor(name)) for name in st.keys()]  # noqa: SIM118
    return _combine(digests, salt)


def _path_fingerprint(path: str) -> str:
    folder = Path(path)
    if is_adapter_dir(folder):
        base_fp = weights_fingerprint(_adapter_base(path))
        return _files_fingerprint([folder / "adapter_model.safetensors"], salt=f"adapter|{base_fp}|")
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:  # a hub id or a .bin checkpoint: load it
        return _module_fingerprint(load_policy(path).model)
    stats = [f.stat() for f in files]
    stat_key = (str(folder.resolve()), max(s.st_mtime for s in stats), sum(s.st_size for s in stats))
    if stat_key not in _FP_CACHE:
        _FP_CACHE[stat_key] = _files_fingerprint(files)
    return _FP_CACHE[stat_key]


def weights_fingerprint(model_or_path: Any) -> str:
    """Content hash of a model's weights (a folder, hub id, nn.Module, PeftModel or Policy)."""
    if isinstance(model_or_path, Policy):
        model_or_path = model_or_path.model
    if isinstance(model_or_path, (str, Path)):
        return _path_fingerprint(str(model_or_path))
    return _module_fingerprint(model_or_path)
