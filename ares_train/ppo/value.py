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

    def save(self, path: Path) -> None:
        torch.save(self.state_dict(), path)


class DatasetRewards(nn.Module):
    """Stands in for TRL's reward model: ARES rewards come from the scores dataset, not a model."""

    def forward(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
        raise RuntimeError("ARES PPO takes its rewards from the scores dataset")
