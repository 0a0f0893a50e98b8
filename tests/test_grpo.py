"""GRPO with sentence rewards: group advantages and the loss against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from ares_train.ppo.data import Rollout
from ares_train.ppo.grpo import EPS, group_advantages, grpo_loss


def _member(problem: str, length: int, ends: list[int], rewards: list[float]) -> Rollout:
    ids = torch.arange(length)
    return Rollout(f"{problem}{length}{ends}", ids[:1], {}, ids, torch.zeros(length), problem, ends, rewards)


def _members() -> list[Rollout]:
    """Group a: 3 rationales with 2, 1 and 3 sentences (two of them end in the same token, the last token
    of the first ends no sentence); group b: 1 and 2 sentences; group c: all rewards equal."""
    return [
        _member("a", 6, [1, 4], [0.5, -0.5]),
        _member("b", 3, [2], [0.3]),
        _member("a", 3, [2], [0.5]),
        _member("c", 2, [0, 1], [0.2, 0.2]),
        _member("a", 4, [0, 3, 3], [-0.5, 0.5, 0.5]),
        _member("b", 4, [1, 2], [-0.1, 0.1]),
        _member("c", 3, [2], [0.2]),
    ]


def _rows(result) -> list[list[float]]:
    return [a.tolist() for a in result.advantages]


def test_process_advantages_by_hand() -> None:
    res = group_advantages(_members())
    # group a: rewards 0.5, -0.5, 0.5, -0.5, 0.5, 0.5: mean 1/6, sample std 2/sqrt(15)
    s = 2 / math.sqrt(15)
    p, q = (1 / 3) / (s + EPS), (-2 / 3) / (s + EPS)
    # group b: 0.3, -0.1, 0.1: mean 0.1, sample std 0.2
    u = 0.2 / (0.2 + EPS)
    want = [
        [p + q, p + q, q, q, q, 0.0],
        [u, u, u],
        [p, p, p],
        [0.0, 0.0],
        [q + 2 * p, 2 * p, 2 * p, 2 * p],
        [-u, -u, 0.0, 0.0],
        [0.0, 0.0, 0.0],
    ]
    for got, exp in zip(_rows(res), want, strict=True):
        assert got == pytest.approx(exp, abs=1e-6)
    assert res.constant == [False, False, False, True, False, False, True]
    assert (res.groups, res.constant_groups) == (3, 1)


def test_outcome_advantages_by_hand() -> None:
    res = group_advantages(_members(), advantage="outcome")
    # group a: rationale means 0, 0.5, 1/6 -> mean 2/9, sample std sqrt(7/108)
    sa = math.sqrt(7 / 108)
    a1, a2, a3 = [(m - 2 / 9) / (sa + EPS) for m in (0.0, 0.5, 1 / 6)]
    # group b: means 0.3, 0.0 -> mean 0.15, sample std 0.15 * sqrt(2)
    b = 0.15 / (0.15 * math.sqrt(2) + EPS)
    want = [[a1] * 6, [b] * 3, [a2] * 3, [0.0] * 2, [a3] * 4, [-b] * 4, [0.0] * 3]
    for got, exp in zip(_rows(res), want, strict=True):
        assert got == pytest.approx(exp, abs=1e-6)
    assert (res.groups, res.constant_groups) == (3, 1)


def test_unscaled_advantages_only_subtract_the_group_mean() -> None:
    res = group_advantages(_members(), scale_rewards="none")
    p, q = 1 / 3, -2 / 3
    assert _rows(res)[0] == pytest.approx([p + q, p + q, q, q, q, 0.0], abs=1e-6)
    assert _rows(res)[5] == pytest.approx([-0.2, -0.2, 0.0, 0.0], abs=1e-6)
    outcome = group_advantages(_members(), advantage="outcome", scale_rewards="none")
    assert _rows(outcome)[1] == pytest.approx([0.15] * 3) and _rows(outcome)[3] == [0.0, 0.0]


def test_a_lone_rationale_is_a_group_of_its_sentences() -> None:
    lone = [_member("x", 3, [0, 2], [0.4, -0.2])]
    assert not group_advantages(lone).constant[0]  # its sentences differ: process credit within it
    assert group_advantages(lone, advantage="outcome").constant == [True]  # one score: nothing to compare
    no_sentences = [_member("y", 2, [], []), _member("y", 2, [1], [0.3]), _member("y", 2, [1], [-0.3])]
    res = group_advantages(no_sentences, advantage="outcome")
    assert res.advantages[0].tolist() == [0.0, 0.0] and res.advantages[1][0] > 0 > res.advantages[2][0]


def test_neutral_score_does_not_change_the_advantages() -> None:
    shifted = [_member(m.problem_id, m.response_ids.shape[0], m.sentence_ends,
                       [r + 0.37 for r in m.sentence_rewards]) for m in _members()]
    for mode in ("process", "outcome"):
        for a, b in zip(_rows(group_advantages(_members(), advantage=mode)),
                        _rows(group_advantages(shifted, advantage=mode)), strict=True):
            assert a == pytest.approx(b, abs=1e-5)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="advantage"):
        group_advantages(_members(), advantage="sequence")
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(_members(), scale_rewards="batch")


# ---- the loss on a fixed mini-batch, against plain loops ------------------------------------------
def _reference_loss(new, old, ref, adv, lengths, *, clip: float, kl_coef: float) -> float:
    total, count = 0.0, 0
    for i, n in enumerate(lengths):
        for t in range(n):
            ratio = math.exp(new[i][t] - old[i][t])
            clipped = min(max(ratio, 1 - clip), 1 + clip)
            pg = max(-adv[i][t] * ratio, -adv[i][t] * clipped)
            log_r = ref[i][t] - new[i][t]
            total += pg + kl_coef * (math.exp(log_r) - log_r - 1)
            count += 1
    return total / count


def _batch(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    lengths, width = [5, 2, 4, 3], 6
    mask = torch.tensor([[t < n for t in range(width)] for n in lengths])

    def rand(scale: float = 1.0) -> torch.Tensor:
        values = torch.randn(len(lengths), width, generator=g, dtype=torch.float64)
        return torch.where(mask, values * scale, 0.0)

    old, ref, adv = rand(), rand(), rand()
    new = (old + rand(0.3)).requires_grad_()  # ratios around 1, some beyond the clip range
    return lengths, mask, new, old, ref, adv


def test_loss_matches_direct_computation() -> None:
    lengths, mask, new, old, ref, adv = _batch()
    out = grpo_loss(new, old, ref, adv, mask, cliprange=0.2, kl_coef=0.1)
    want = _reference_loss(*(x.tolist() for x in (new, old, ref, adv)), lengths, clip=0.2, kl_coef=0.1)
    assert out.loss.item() == pytest.approx(want, abs=1e-9)
    assert 0 < out.pg_clipfrac.item() < 1  # the clip was exercised
    out.loss.backward()
    assert new.grad[~mask].abs().sum() == 0 and new.grad[mask].abs().sum() > 0  # padding gets no gradient


def test_micro_batches_weighted_by_tokens_add_up_to_the_mini_batch() -> None:
    lengths, mask, new, old, ref, adv = _batch(seed=9)
    whole = grpo_loss(new, old, ref, adv, mask).loss
    tokens = float(mask.sum())
    parts = [grpo_loss(new[s], old[s], ref[s], adv[s], mask[s], tokens=tokens).loss
             for s in (slice(0, 1), slice(1, 4))]  # 5 and 9 tokens: a per-sequence weighting would differ
    assert sum(parts).item() == pytest.approx(whole.item(), abs=1e-12)


def test_kl_term_is_k3_and_zero_at_the_reference() -> None:
    lengths, mask, new, old, ref, adv = _batch()
    at_ref = grpo_loss(ref, ref, ref, torch.zeros_like(adv), mask, kl_coef=1.0)
    assert at_ref.loss.item() == 0 and at_ref.kl.item() == 0
    out = grpo_loss(new, old, ref, torch.zeros_like(adv), mask, kl_coef=1.0)
    log_r = (ref - new.detach())[mask]
    assert out.loss.item() == pytest.approx((log_r.exp() - log_r - 1).mean().item(), abs=1e-12)
