"""The GRPO arithmetic of the ARES RL stage: group-normalised sentence rewards as advantages (no critic), and
the clipped policy loss with the KL to the reference as a loss term.

Process supervision (DeepSeekMath, arXiv 2402.03300, section 4.1.3): the k rationales of one problem form a
group; every sentence reward of the group is normalised by the mean and standard deviation of all sentence
rewards in the group, r~ = (r - mean) / (std + eps), and response token t gets the advantage
A_t = sum of r~ over the sentences of its rationale that end at or after t (tokens after the last sentence
end get 0). `outcome` is the ablation: one score per rationale (the mean of its sentence rewards),
normalised over the group's rationales and put on every token. With `scale_rewards="none"` the group mean is
subtracted and nothing is divided (Dr. GRPO's choice). A group whose rewards are all equal has no advantage
anywhere: it is marked constant and its rationales are not trained on.

`std` is the sample standard deviation (n - 1), eps = 1e-4, as TRL's GRPOTrainer. Sentence rewards are
`score - neutral_score`; the group mean removes `neutral_score`, so GRPO does not depend on it.

Pure tensor functions (no models, no I/O), tested against hand computations in tests/test_grpo.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .algorithm import clipped_policy_loss, kl_per_token

__all__ = ["ADVANTAGES", "SCALES", "GroupAdvantages", "GroupMember", "GRPOLossOut", "group_advantages",
           "grpo_loss"]

ADVANTAGES = ("process", "outcome")
SCALES = ("group", "none")
EPS = 1e-4


class GroupMember(Protocol):
    """What GRPO needs of a rollout (`ares_train.ppo.data.Rollout` is one)."""

    problem_id: str
    response_ids: torch.Tensor  # [R]: only its length is used
    sentence_ends: list[int]  # per sentence: index of the response token holding its last character
    sentence_rewards: list[float]  # per sentence: score - neutral


@dataclass
class GroupAdvantages:
    advantages: list[torch.Tensor]  # per member: [R] float32 advantage of every response token
    constant: list[bool]  # per member: its group's rewards are all equal (no gradient; not trained on)
    groups: int
    constant_groups: int


def group_advantages(
    members: Sequence[GroupMember], *, advantage: str = "process", scale_rewards: str = "group"
) -> GroupAdvantages:
    """Advantages of every member, grouped by `problem_id` (see the module doc)."""
    if advantage not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {ADVANTAGES}, got {advantage!r}")
    if scale_rewards not in SCALES:
        raise ValueError(f"scale_rewards must be one of {SCALES}, got {scale_rewards!r}")
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(members):
        by_group[m.problem_id].append(i)
    advantages: list[torch.Tensor] = [torch.zeros(0)] * len(members)
    constant = [False] * len(members)
    n_constant = 0
    for idx in by_group.values():
        group = [members[i] for i in idx]
        advs = _process(group, scale_rewards) if advantage == "process" else _outcome(group, scale_rewards)
        if advs is None:
            n_constant += 1
            advs = [torch.zeros(m.response_ids.shape[0]) for m in group]
            for i in idx:
                constant[i] = True
        for i, a in zip(idx, advs, strict=True):
            advantages[i] = a
    return GroupAdvantages(advantages, constant, len(by_group), n_constant)


def _normalise(rewards: torch.Tensor, scale_rewards: str) -> torch.Tensor | None:
    """(r - mean) / (std + eps) over the group, or r - mean; None when the rewards are all equal."""
    if rewards.numel() == 0 or bool((rewards == rewards[0]).all()):
        return None
    centred = rewards - rewards.mean()
    return centred / (rewards.std() + EPS) if scale_rewards == "group" else centred


def _process(group: list[GroupMember], scale_rewards: str) -> list[torch.Tensor] | None:
    counts = [len(m.sentence_rewards) for m in group]
    flat = torch.tensor([r for m in group for r in m.sentence_rewards], dtype=torch.float64)
    normalised = _normalise(flat, scale_rewards)
    if normalised is None:
        return None
    out = []
    for m, norm in zip(group, normalised.split(counts), strict=True):
        at_end = torch.zeros(m.response_ids.shape[0], dtype=torch.float64)
        at_end.index_add_(0, torch.tensor(m.sentence_ends, dtype=torch.long), norm)
        out.append(at_end.flip(0).cumsum(0).flip(0).float())  # sum over the sentences ending at or after t
    return out


def _outcome(group: list[GroupMember], scale_rewards: str) -> list[torch.Tensor] | None:
    scored = [i for i, m in enumerate(group) if m.sentence_rewards]  # a rationale without sentences: no score
    means = torch.tensor([sum(group[i].sentence_rewards) / len(group[i].sentence_rewards) for i in scored],
                         dtype=torch.float64)
    normalised = _normalise(means, scale_rewards)
    if normalised is None:
        return None
    out = [torch.zeros(m.response_ids.shape[0]) for m in group]
    for i, value in zip(scored, normalised.tolist(), strict=True):
        out[i] = torch.full((group[i].response_ids.shape[0],), value, dtype=torch.float32)
    return out


@dataclass
class GRPOLossOut:
    ADDITIVE = ("loss",)  # a share of the mini-batch mean; the rest are this micro-batch's means (mean_loss)

    loss: torch.Tensor  # what backward() takes: (policy + kl_coef * KL) summed over tokens / tokens
    pg_loss: torch.Tensor  # per-token means over this micro-batch (statistics, detached)
    kl: torch.Tensor
    pg_clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    ratio: torch.Tensor


def grpo_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float = 0.2,
    kl_coef: float = 0.04,
    n_tokens: torch.Tensor | float | None = None,
) -> GRPOLossOut:
    """Clipped-ratio policy loss + kl_coef * k3 KL(policy || reference), per token, token-weighted.

    The loss is the sum over the masked tokens divided by `n_tokens`: the response-token count of the whole
    mini-batch when micro-batches accumulate into one step (so the step does not depend on the micro-batch
    size), this micro-batch's count by default. The statistics are this micro-batch's per-token means.
    """
    mask_f = mask.to(new_logprobs.dtype)
    count = mask_f.sum().clamp(min=1)
    pg, clipped, ratio, diff = clipped_policy_loss(new_logprobs, old_logprobs, advantages, cliprange)
    kl = kl_per_token(new_logprobs, ref_logprobs, "k3")
    loss = ((pg + kl_coef * kl) * mask_f).sum() / (count if n_tokens is None else n_tokens)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x.detach() * mask_f).sum() / count

    return GRPOLossOut(loss=loss, pg_loss=mean(pg), kl=mean(kl), pg_clipfrac=mean(clipped.float()),
                       approx_kl=mean(0.5 * diff**2), ratio=mean(ratio))
