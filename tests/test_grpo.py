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
    parts = [grpo_loss(new[s], old[s], ref[s], adv[s], mask[s], n_tokens=tokens).loss
             for s in (slice(0, 1), slice(1, 4))]  # 5 and 9 tokens: a per-sequence weighting would differ
    assert sum(parts).item() == pytest.approx(whole.item(), abs=1e-12)


def test_kl_term_is_k3_and_zero_at_the_reference() -> None:
    lengths, mask, new, old, ref, adv = _batch()
    at_ref = grpo_loss(ref, ref, ref, torch.zeros_like(adv), mask, kl_coef=1.0)
    assert at_ref.loss.item() == 0 and at_ref.kl.item() == 0
    out = grpo_loss(new, old, ref, torch.zeros_like(adv), mask, kl_coef=1.0)
    log_r = (ref - new.detach())[mask]
    assert out.loss.item() == pytest.approx((log_r.exp() - log_r - 1).mean().item(), abs=1e-12)


# ---- settings and the command line --------------------------------------------------------------------
def test_grpo_settings_are_ppo_settings_without_the_critic() -> None:
    import dataclasses

    from ares_train.ppo.grpo_config import GRPORunConfig
    from ares_train.ppo.run import PPORunConfig

    grpo = {f.name: f for f in dataclasses.fields(GRPORunConfig)}
    ppo = {f.name: f for f in dataclasses.fields(PPORunConfig)}
    for name in ("value_model", "vf_coef", "cliprange_value", "gamma", "lam", "kl_estimator",
                 "neutral_score"):
        assert name in ppo and name not in grpo, name
    for name in ("model", "rationales", "ref_model", "lora_r", "ppo_epochs", "micro_batch_size", "lr"):
        assert grpo[name].default == ppo[name].default, name
    for name, f in grpo.items():  # a setting of the value model would say so
        assert "value" not in f.metadata["help"].lower(), name
    cfg = GRPORunConfig(model="m", rationales="r", scores="s", output_dir="o", lr=3e-4, lora_r=4)
    ppo_cfg = cfg.as_ppo()
    assert (ppo_cfg.lr, ppo_cfg.lora_r, ppo_cfg.kl_coef, ppo_cfg.kl_estimator) == (3e-4, 4, 0.04, "k3")


def test_grpo_help_and_config_errors(tmp_path) -> None:
    from tests.helpers import train

    res = train(["grpo", "--help"])
    assert res.exit_code == 0, res.output
    for flag in ("--advantage", "--scale-rewards", "--kl-coef", "--lora-r", "--ref-model",
                 "--allow-off-policy", "--config", "--json"):
        assert flag in res.stdout, flag
    for flag in ("--value-model", "--neutral-score", "--reward-level"):
        assert flag not in res.stdout, flag
    assert "k3 KL" in res.stdout and "DeepSeekMath" in res.stdout
    cfg = tmp_path / "grpo.toml"
    cfg.write_text("[grpo]\nvf_coef = 0.1\n")
    res = train(["grpo", "--config", cfg])
    assert res.exit_code != 0 and "unknown key 'vf_coef'" in res.stderr
    res = train(["grpo", "--model", "m", "--rationales", "r", "--scores", "s", "-o", tmp_path / "o",
                 "--advantage", "sequence"])
    assert res.exit_code != 0 and "advantage must be one of process, outcome" in res.stderr
    res = train(["grpo", "--model", "m", "--rationales", "r", "--scores", "s", "-o", tmp_path / "o",
                 "--scale-rewards", "batch"])
    assert res.exit_code != 0 and "scale_rewards must be one of group, none" in res.stderr
    assert not (tmp_path / "o").exists()


# ---- real runs on a tiny model -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory):
    from ares_train.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("grpo-text") / "model")


def _round_with_a_constant_group(store_dir, model):
    """publish_round's 8 rationales of 4 problems (one score failed), re-scored so that problem p1's two
    rationales score 0.5 on every sentence: a constant group."""
    from ares_data.store import Store
    from tests.ppo_fixtures import publish_round

    store = Store(store_dir)
    rat, sc = publish_round(store, model)
    rows = [dict(r) for r in sc.load()]
    for r in rows:
        if r["problem_id"] == "p1":
            r["scores"] = [0.5] * len(r["scores"])
    return rat, store.publish("r-scores-const", "scores", rows, parents=[rat])


def _grpo(model, rat: str, sc: str, out, *extra: str):
    from tests.helpers import train

    return train(["grpo", "--model", model, "--rationales", rat, "--scores", sc, "-o", out,
                  "--ppo-epochs", "2", "--mini-batch-size", "4", "--lr", "1e-3", "--json", *extra])


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_grpo_trains_logs_and_saves_without_a_value_model(store_dir, text_model, tmp_path) -> None:
    import json

    rat, sc = _round_with_a_constant_group(store_dir, text_model)
    out = tmp_path / "out"
    res = _grpo(text_model, rat.ref, sc.ref, out, "--micro-batch-size", "2")
    assert res.exit_code == 0, res.output
    summary = res.json()
    counts = summary["counts"]
    assert (counts["rows"], counts["scores_failed"], counts["groups"]) == (8, 1, 4)
    assert (counts["constant_groups"], counts["constant_group_rollouts"], counts["used"]) == (1, 2, 5)
    log = [json.loads(line) for line in (out / "grpo_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and summary["steps"] == 4  # 5 rollouts: 2 mini-batches x 2 epochs
    for key in ("loss/total", "loss/policy", "loss/kl", "objective/kl_current", "policy/clipfrac"):
        assert all(math.isfinite(entry[key]) for entry in log), key
    assert not any(k.startswith(("loss/value", "val/")) for k in log[0])
    assert log[1]["objective/kl_current"] > 0  # the policy moved away from the reference
    before, after = _weights(text_model), _weights(out)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    manifest = json.loads((out / "ares-checkpoint.json").read_text())
    assert manifest["stage"] == "grpo" and manifest["params"]["advantage"] == "process"
    assert "vf_coef" not in manifest["params"] and manifest["counts"]["constant_groups"] == 1
    assert not (out / "value").exists() and not (out / "checkpoint").exists()


def test_loop_schedules_grpo_as_an_rl_step(store_dir, tmp_path) -> None:
    """schedule = ["grpo", "sft"]: rollout -> score -> grpo (KL against the loop's starting model, no
    critic carried), then rollout -> correct -> sft; a [grpo] table holds the stage's settings."""
    import json

    from ares_train.tiny import build_tiny_text_model
    from tests.helpers import train
    from tests.test_loop import _setup

    model = build_tiny_text_model(tmp_path / "model", vocab_size=300)
    grpo_table = "\n[grpo]\nppo_epochs = 1\nmini_batch_size = 8\nlr = 1e-4\nsave_checkpoints = false\n"
    cfg = _setup(tmp_path, model, rounds=1, extra=grpo_table)
    cfg.write_text(cfg.read_text().replace('schedule = ["rl", "sft"]', 'schedule = ["grpo", "sft"]'))
    res = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run", "--json"])
    assert res.exit_code == 0, res.output
    stages = {s["id"]: s for s in res.json()["stages"]}
    assert list(stages) == ["r0-eval", "r1s1-rollout", "r1s1-score", "r1s1-grpo", "r1s2-rollout",
                            "r1s2-correct", "r1s2-sft", "r1-eval"]
    grpo = stages["r1s1-grpo"]
    assert grpo["inputs"]["scores"] == stages["r1s1-score"]["outputs"]["scores"]
    assert grpo["inputs"]["ref_model"] == str(model) and "value_model" not in grpo["outputs"]
    assert stages["r1s2-rollout"]["inputs"]["model"] == grpo["outputs"]["model"]
    ckpt = tmp_path / "run" / "checkpoints" / "r1s1-grpo"
    manifest = json.loads((ckpt / "ares-checkpoint.json").read_text())
    assert manifest["stage"] == "grpo" and manifest["params"]["ppo_epochs"] == 1
    assert manifest["reference"]["model"] == str(model)
    bad = cfg.read_text().replace("[grpo]\n", "[grpo]\nvf_coef = 0.1\n")
    cfg.write_text(bad)
    res = train(["loop", "--config", cfg, "--run-dir", tmp_path / "run2"])
    assert res.exit_code != 0 and "unknown key 'vf_coef' in [grpo]" in res.stderr


def test_grpo_with_lora_holds_one_copy_of_the_weights(store_dir, text_model, tmp_path) -> None:
    """No value model and the adapter-disabled policy as the reference: the trainer's modules hold the
    policy's parameters and nothing else, and only the adapter is optimised."""
    from ares_data.store import Store
    from ares_train.ppo.grpo_config import GRPORunConfig
    from ares_train.ppo.grpo_run import grpo_method
    from ares_train.ppo.run import build_trainer
    from tests.ppo_fixtures import publish_round

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model)
    cfg = GRPORunConfig(model=str(text_model), rationales=rat.ref, scores=sc.ref,
                        output_dir=str(tmp_path / "o"), lora_r=4, mini_batch_size=4)
    trainer, policy, _, _ = build_trainer(cfg.as_ppo(), store, None, grpo_method(cfg))
    assert trainer.ref_model is None and trainer.reference.how == "adapter-disabled policy"
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    assert list(wrapper.value_model.parameters()) == []
    held = {p.data_ptr() for p in wrapper.parameters()}
    assert held == {p.data_ptr() for p in policy.model.parameters()}  # one copy: the policy's
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    names = {id(p): n for n, p in policy.model.named_parameters()}
    assert optimised and all("lora_" in names[id(p)] for p in optimised)
    res = _grpo(text_model, rat.ref, sc.ref, tmp_path / "lora", "--lora-r", "4", "--ppo-epochs", "1")
    assert res.exit_code == 0, res.output
    lora = tmp_path / "lora"
    assert (lora / "adapter_config.json").is_file() and not (lora / "value").exists()


def test_interrupted_grpo_run_resumes(store_dir, text_model, tmp_path) -> None:
    import dataclasses

    from ares_data.errors import ConfigError
    from ares_data.store import Store
    from ares_train.ppo.grpo_config import GRPORunConfig
    from ares_train.ppo.grpo_run import run_grpo
    from ares_train.ppo.run import read_log
    from tests.ppo_fixtures import publish_round

    store = Store(store_dir)
    rat, sc = publish_round(store, text_model)
    cfg = GRPORunConfig(model=str(text_model), rationales=rat.ref, scores=sc.ref,
                        output_dir=str(tmp_path / "o"), ppo_epochs=3, mini_batch_size=4, lr=1e-3)

    def crash(step: int, total: int) -> None:
        if step == 5:  # in the third epoch, after two epochs were checkpointed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grpo(cfg, store, on_step=crash)
    assert [e["ppo_epoch"] for e in read_log(tmp_path / "o", "grpo")] == [0, 1]
    with pytest.raises(ConfigError, match="GRPO run with other settings"):
        run_grpo(dataclasses.replace(cfg, advantage="outcome"), store)
    res = run_grpo(cfg, store)
    assert res.resumed and [e["ppo_epoch"] for e in res.history] == [2] and res.history[0]["step"] == 6
    assert [e["ppo_epoch"] for e in read_log(tmp_path / "o", "grpo")] == [0, 1, 2]


def test_two_processes_share_the_rollouts_after_grouping(store_dir, text_model, tmp_path) -> None:
    """torchrun, 2 CPU processes: the groups are formed over all rollouts before they are shared."""
    import json
    import os
    import subprocess
    import sys

    rat, sc = _round_with_a_constant_group(store_dir, text_model)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "ares_train.cli", "grpo", "--model", str(text_model), "--rationales", rat.ref, "--scores", sc.ref,
           "-o", str(out), "--ppo-epochs", "2", "--mini-batch-size", "2", "--json"]
    env = {**os.environ, "ARES_STORE": str(store_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((out / "grpo_log.jsonl").read_text().splitlines()) == 2
    manifest = json.loads((out / "ares-checkpoint.json").read_text())
    counts = manifest["counts"]
    assert (counts["groups"], counts["constant_groups"]) == (4, 1)  # not per process
    assert counts["used"] == 4 and counts["uneven_remainder"] == 1  # 5 trainable rollouts, 2 per process
    assert manifest["final_metrics"]["step"] == 2 and (out / "model.safetensors").is_file()


def test_two_grpo_rounds_raise_the_reward_and_a_flipped_reward_lowers_it(tmp_path) -> None:
    """tests/test_learning.py's controlled task with process GRPO: one warm start, two rounds of rollout ->
    checker scores -> grpo, with the checker's reward and with its sign flipped (same rollout seeds).
    Measured with these settings (mean sentence score, warm -> round 2): seed 0 0.289 -> 0.344 / 0.205,
    seed 1 0.294 -> 0.402 / 0.212, seed 2 0.306 -> 0.474 / 0.208 (reward / flipped)."""
    import torch

    from ares_train.tasks.learning import VARIANTS, prepare, quick_settings, run_rounds

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    try:
        prep = prepare(tmp_path, quick_settings(), seed=0)
        runs = {sign: [r.mean_score for r in run_rounds(prep, quick_settings(sign), VARIANTS["grpo-process"],
                                                         tmp_path / f"run{sign:g}", seed=0)]
                for sign in (1.0, -1.0)}
    finally:
        torch.set_num_threads(threads)
    warm, up, down = runs[1.0][0], runs[1.0][-1], runs[-1.0][-1]
    assert runs[-1.0][0] == warm
    assert up - warm >= 0.03, runs  # the reward rises
    assert down <= warm - 0.05, runs  # the flipped reward lowers it
    assert up - down >= 0.1, runs
