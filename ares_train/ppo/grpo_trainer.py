"""The ARES GRPO trainer: `SentencePPOTrainer`'s buffers, epochs, mini-batches, checkpoints and logs, without
a value model.

What differs from PPO: the advantages come with the rollouts (`GroupRollout.advantages`, computed once over
all rollouts by `group_rollouts`, so a problem's group is never split by processes or buffers); a buffer
needs no forward pass of its own (the old and reference log-probs are the trainer's behaviour pass); the loss
is `ares_train.ppo.grpo.grpo_loss`. TRL's set-up wants a value model: `NoValueModel` stands in, with no
parameters and nothing computed, so the optimizer, the checkpoints and the saved model hold the policy only
(with LoRA and the adapter-disabled reference: one copy of the weights in memory).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ares_data.errors import InputError

from .algorithm import kl_per_token, response_logprobs
from .data import Rollout
from .grpo import GRPOLossOut, group_advantages, grpo_loss
from .trainer import Buffer, SentencePPOTrainer, pad_right

__all__ = ["GRPOTrainer", "GroupRollout", "NoValueModel", "group_rollouts"]


@dataclass
class GroupRollout(Rollout):
    advantages: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # [R] per response token


def group_rollouts(
    rollouts: list[Rollout], counts: Counter, *, advantage: str, scale_rewards: str
) -> list[GroupRollout]:
    """The rollouts with their group advantages; those of constant groups are left out and counted
    (`groups`, `constant_groups`, `constant_group_rollouts`; `used` drops by as many)."""
    res = group_advantages(rollouts, advantage=advantage, scale_rewards=scale_rewards)
    names = [f.name for f in dataclasses.fields(Rollout)]
    out = [
        GroupRollout(**{n: getattr(r, n) for n in names}, advantages=a)
        for r, a, constant in zip(rollouts, res.advantages, res.constant, strict=True)
        if not constant
    ]
    dropped = len(rollouts) - len(out)
    counts.update(groups=res.groups, constant_groups=res.constant_groups, constant_group_rollouts=dropped)
    counts["used"] -= dropped
    if not out:
        raise InputError(
            f"all {res.groups} groups have equal rewards within the group: GRPO has nothing to learn from",
            hint="sample more rationales per problem (ares-train rollout --k) or at a higher temperature",
        )
    return out


class _NoBackbone(nn.Module):
    def forward(self, **kwargs: Any) -> Any:
        return SimpleNamespace(hidden_states=(None,))


class NoValueModel(nn.Module):
    """Stands in for TRL's value model: GRPO has no critic (no parameters; the wrapper's forward returns
    (policy output, None))."""

    base_model_prefix = "backbone"

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _NoBackbone()

    def score(self, hidden: Any) -> None:
        return None


class GRPOTrainer(SentencePPOTrainer):
    """`SentencePPOTrainer` with group advantages and the GRPO loss (see the module doc)."""

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, value_model=NoValueModel(), **kwargs)

    def _policy_logits(self, inputs: dict[str, torch.Tensor], prompt_len: int, resp_len: int) -> torch.Tensor:
        with self._autocast():
            out, _ = self.model(**inputs, use_cache=False)  # through the (DDP) wrapper: gradients sync
        return out.logits[:, prompt_len - 1 : prompt_len - 1 + resp_len]

    @torch.no_grad()
    def _score_buffer(self, first: int, rows: list[Any]) -> Buffer:
        """No forward pass: the behaviour log-probs of rows first.., the rows' own advantages."""
        assert self.behaviour is not None
        device = self.accelerator.device
        length = max(r.response_ids.shape[0] for r in rows)

        def pad(tensors: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
            return pad_right([t.to(device) for t in tensors], length, value)

        picked = {k: v[first : first + len(rows)] for k, v in self.behaviour.items()}
        mask = pad([torch.ones(r.response_ids.shape[0], dtype=torch.bool) for r in rows], False)
        buf = Buffer(rows, mask, pad([r.rewards for r in rows]), pad(picked["logprobs"]),
                     pad(picked["ref_logprobs"]), torch.zeros(mask.shape, device=device))
        buf.advantages = pad([r.advantages for r in rows])
        buf.kl = torch.where(mask, kl_per_token(buf.logprobs, buf.ref_logprobs, "k3"), 0.0)
        buf.rewards, buf.returns = buf.sentence_rewards, torch.zeros_like(buf.values)  # no KL in the reward
        return buf

    def _loss(
        self,
        inputs: dict[str, torch.Tensor],
        responses: torch.Tensor,
        mask: torch.Tensor,
        prompt_len: int,
        pick: dict[str, torch.Tensor],
        n_tokens: torch.Tensor,
    ) -> tuple[GRPOLossOut, torch.Tensor]:
        logits = self._policy_logits(inputs, prompt_len, responses.shape[1])
        new_lp = response_logprobs(logits, responses, self.temperature)
        out = grpo_loss(new_lp, pick["logprobs"], pick["ref_logprobs"], pick["advantages"], mask,
                        cliprange=self.args.cliprange, kl_coef=self.args.kl_coef, n_tokens=n_tokens)
        return out, new_lp

    def _per_token(self, t: torch.Tensor, mask: torch.Tensor) -> float:
        value = (t * mask).sum() / mask.sum().clamp(min=1)
        return self.accelerator.gather_for_metrics(value.reshape(1)).mean().item()

    def _loss_metrics(self, buf: Buffer, outs: list[Any]) -> dict[str, float]:
        return {
            "loss/total": self._avg(outs, "loss"),
            "loss/policy": self._avg(outs, "pg_loss"),
            "loss/kl": self._avg(outs, "kl"),  # k3 per token, before kl_coef
            "reward/sentence": self._per_seq(buf.sentence_rewards),
            "advantage/abs_mean": self._per_token(buf.advantages.abs(), buf.mask),
            "objective/kl": self._per_seq(buf.kl),  # k3 of the behaviour policy vs the reference
            "policy/clipfrac": self._avg(outs, "pg_clipfrac"),
            "policy/approxkl": self._avg(outs, "approx_kl"),
            "policy/ratio": self._avg(outs, "ratio"),
        }
