"""The value model (a scalar head on the policy's backbone) and the stand-in for TRL's reward model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class ValueModel(nn.Module):
    """A scalar head on a language-model backbone (text or vision-language), as TRL's wrapper expects:
    `getattr(model, model.base_model_prefix)` is the backbone, `model.score` maps hidden states to values."""

    base_model_prefix = "backbone"

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    @classmethod
    def from_causal_lm(cls, lm: nn.Module) -> ValueModel:
        """Take the backbone of a loaded causal LM / VLM (its output head is dropped)."""
        hidden = lm.get_output_embeddings().in_features
        backbone = getattr(lm, lm.base_model_prefix)
        return cls(backbone, hidden)

    def forward(self, **kwargs: Any) -> torch.Tensor:
        kwargs["output_hidden_states"] = True
        out = self.backbone(**kwargs)
        return self.score(out.hidden_states[-1]).squeeze(-1)

    def save(self, folder: Path, *, state_dict: dict[str, Any] | None = None) -> None:
        """Write the value model so a later run can start from it (`ValueModel.load`): the backbone as a
        model folder (float32; a LoRA backbone merged first) plus `value_head.safetensors`.
        `state_dict`: the gathered full state dict under FSDP/DeepSpeed (keys `backbone.*`, `score.*`)."""
        from safetensors.torch import save_file

        from ..checkpoint import save_model
        from ..lora import is_peft_model
        from .run import VALUE_HEAD

        backbone = self.backbone
        if is_peft_model(backbone):  # merged: the next round adds a fresh adapter on top of it
            backbone = backbone.merge_and_unload()
        sub = None if state_dict is None else {
            k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        if sub is not None and any("lora_" in k for k in sub):
            sub = None  # a LoRA backbone under FSDP: the merged module's own weights
        folder.mkdir(parents=True, exist_ok=True)
        save_model(backbone, folder, save_dtype="float32", state_dict=sub)
        head = {k: v.detach().float().cpu().contiguous() for k, v in self.score.state_dict().items()}
        if state_dict is not None and "score.weight" in state_dict:
            head = {k: state_dict[f"score.{k}"].detach().float().cpu().contiguous()
                    for k in ("weight", "bias")}
        save_file(head, str(folder / VALUE_HEAD))

    @classmethod
    def load(cls, folder: str | Path, *, dtype: Any = None) -> ValueModel:
        """A value model written by `save` (backbone weights in `dtype`, default float32)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        from .run import VALUE_HEAD

        head = load_file(str(Path(folder) / VALUE_HEAD))
        backbone = AutoModel.from_pretrained(str(folder), dtype=dtype or torch.float32)
        model = cls(backbone, head["weight"].shape[1])
        model.score.load_state_dict(head)
        model.score.to(dtype=next(backbone.parameters()).dtype)
        return model


class DatasetRewards(nn.Module):
    """Stands in for TRL's reward model: ARES rewards come from the scores dataset, not a model."""

    def forward(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
        raise RuntimeError("ARES PPO takes its rewards from the scores dataset")
