"""The PPO arithmetic of the ARES RL stage: per-token KL, per-token rewards, GAE, the clipped policy and value
loss, and response log-probs at the sampling temperature.

Pure tensor functions (no models, no I/O), tested against hand computations in tests/test_ppo.py. The
sentence rewards they take come from `ares_train.ppo.rewards` (placement at sentence-end tokens); the trainer
that feeds buffers through them is `ares_train.ppo.trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .trl_base import masked_mean, masked_whiten, selective_log_softmax

__all__ = [
    "clipped_policy_loss",
    "gae",
    "kl_per_token",
    "ppo_loss",
    "token_rewards",
    "LossOut",
    "mean_loss",
    "response_logprobs",
]


# ---- the arithmetic ------------------------------------------------------------------------------
def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled-token log-probs (TRL's k1 or k3)."""
    logr = ref_logprobs - logprobs
    return -logr if estimator == "k1" else logr.exp() - 1 - logr


def token_rewards(
    sentence_rewards: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """r_t = -kl_coef * KL_t + (sum of score - neutral over sentences ending at t); zero on padding."""
    return torch.where(mask, sentence_rewards - kl_coef * kl, torch.zeros_like(kl))


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation -> (advantages, returns); values past a response's end count as 0."""
    values = torch.where(mask, values, torch.zeros_like(values))
    last = torch.zeros_like(values[:, 0])
    out = []
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        last = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * last
        out.append(last)
    advantages = torch.stack(out[::-1], dim=1)
    returns = advantages + values
    if whiten:
        advantages = masked_whiten(advantages, mask)
    return torch.where(mask, advantages, torch.zeros_like(advantages)), returns


@dataclass
class LossOut:
    ADDITIVE = ("loss", "pg_loss", "vf_loss")  # shares of the mini-batch's per-token mean (see mean_loss)

    loss: torch.Tensor
    pg_loss: torch.Tensor
    vf_loss: torch.Tensor
    pg_clipfrac: torch.Tensor
    vf_clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    ratio: torch.Tensor


def clipped_policy_loss(
    new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per token: max(-A * ratio, -A * clip(ratio, 1 +- cliprange)), whether the clipped term won, the
    ratio and the log-ratio (PPO's and GRPO's policy loss)."""
    diff = new_logprobs - old_logprobs
    ratio = torch.exp(diff)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return torch.max(pg1, pg2), pg2 > pg1, ratio, diff


def ppo_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    vpred: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float = 0.2,
    cliprange_value: float = 0.0,
    vf_coef: float = 0.1,
    n_tokens: torch.Tensor | float | None = None,
) -> LossOut:
    """Clipped policy loss + vf_coef * value loss, summed over the masked tokens and divided by `n_tokens`.

    `n_tokens` is the number of response tokens of the whole mini-batch when this is one micro-batch of it
    (default: this batch's own count), so the micro-batch losses add up to the mini-batch's per-token mean
    whatever the micro-batch size. `cliprange_value` > 0 clips the value prediction to old value +- that
    (PPO2-style); 0 trains the value model on the plain squared error (the paper's code).
    """
    mask_f = mask.to(new_logprobs.dtype)
    denom = mask_f.sum() if n_tokens is None else n_tokens

    def token_mean(x: torch.Tensor) -> torch.Tensor:
        return (x * mask_f).sum() / denom

    vf1 = (vpred - returns) ** 2
    if cliprange_value > 0:
        vclipped = torch.clamp(vpred, old_values - cliprange_value, old_values + cliprange_value)
        vf2 = (vclipped - returns) ** 2
        vf_loss = 0.5 * token_mean(torch.max(vf1, vf2))
    else:
        vf2, vf_loss = vf1, 0.5 * token_mean(vf1)
    pg, clipped, ratio, diff = clipped_policy_loss(new_logprobs, old_logprobs, advantages, cliprange)
    pg_loss = token_mean(pg)
    with torch.no_grad():
        stats = dict(
            pg_clipfrac=masked_mean(clipped.float(), mask),
            vf_clipfrac=masked_mean((vf2 > vf1).float(), mask),
            approx_kl=0.5 * masked_mean(diff**2, mask),
            ratio=masked_mean(ratio, mask),
        )
    return LossOut(loss=pg_loss + vf_coef * vf_loss, pg_loss=pg_loss, vf_loss=vf_loss, **stats)


def mean_loss(outs: list[Any]) -> Any:
    """The mini-batch's (detached) losses and statistics from its micro-batches' (`LossOut`s, or another such
    dataclass): fields named in the class's `ADDITIVE` are each micro-batch's share of the mini-batch mean
    (divided by the mini-batch's token count), so they add up; the other statistics are averaged."""
    cls = type(outs[0])
    additive = getattr(cls, "ADDITIVE", ())

    def combine(f: str) -> torch.Tensor:
        values = torch.stack([getattr(o, f).detach() for o in outs])
        return values.sum() if f in additive else values.mean()

    return cls(*[combine(f) for f in cls.__dataclass_fields__])


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs of the response tokens at the sampling temperature (float32 for the PPO arithmetic)."""
    return selective_log_softmax(logits / (temperature + 1e-7), responses).float()
